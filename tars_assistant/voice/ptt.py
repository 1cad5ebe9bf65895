"""Push-to-talk, independent of any UI.

    ptt = PushToTalk(config.voice, on_event)   # on_event(VoiceEvent), called from threads
    ptt.preload()     # optional: load Whisper in the background now
    ptt.start()       # key pressed: listen (microphone, VAD, Whisper in worker threads)
    ptt.stop()        # key pressed again / released: finish what was heard
    ptt.cancel()      # Esc: discard

Every session ends with ``StateEvent(IDLE)``. Once the microphone is open:
``StateEvent(LISTENING)``, ``LevelEvent`` for the meter, ``StateEvent(HEARING)``
when speech starts, ``PartialEvent`` while it goes on, ``StateEvent(TRANSCRIBING)``
when it ends, then exactly one ``FinalEvent`` (empty text when nothing was
heard). When the microphone or the model is not usable: one ``ErrorEvent``
(``unavailable=True``, a message saying what to install or configure) instead of
the final. After ``cancel()``: nothing but the ``IDLE`` it sends at once.
A session ends by itself after one utterance (end of speech), so a press, speech,
and silence is all a user needs; ``no_speech_timeout_s`` ends a silent session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tars_assistant.voice.capture import FrameSource, VoiceError, VoiceUnavailable, open_source
from tars_assistant.voice.events import (
    ErrorEvent,
    EventCallback,
    FinalEvent,
    StateEvent,
    VoiceEvent,
    VoiceState,
)
from tars_assistant.voice.pipeline import Control, Pipeline
from tars_assistant.voice.stt import WhisperEngine
from tars_core.settings.voice import VoiceConfig

SourceFactory = Callable[[], FrameSource]
RELEASE_WAIT_S = 2.0  # a new session waits this long for the last one to free the device


class _Session:
    def __init__(self, on_event: EventCallback, previous: _Session | None):
        self.control = Control()
        self.previous = previous
        self.cancelled = False
        self.final_sent = False
        self._on_event = on_event
        self._lock = threading.RLock()
        self.thread: threading.Thread | None = None

    def emit(self, event: VoiceEvent) -> None:
        with self._lock:
            if self.cancelled:
                return
            if isinstance(event, FinalEvent):
                self.final_sent = True
            self._on_event(event)

    def cancel(self) -> bool:
        """Silence this session and report IDLE once; False if it was already cancelled."""
        with self._lock:
            if self.cancelled:
                return False
            self.control.cancel.set()
            self._on_event(StateEvent(VoiceState.IDLE))
            self.cancelled = True
            return True

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class PushToTalk:
    """Listen on demand; see the module docstring for the events.

    ``source_factory`` makes the audio source for each session (default:
    ``open_source(config.input_device)``, the microphone, or a file played in real
    time for ``file:PATH``); tests may pass any ``FrameSource``. ``engine`` lets
    several controllers share one loaded model. All methods return at once and are
    safe to call from the UI thread.
    """

    def __init__(
        self,
        config: VoiceConfig,
        on_event: EventCallback,
        *,
        source_factory: SourceFactory | None = None,
        engine: WhisperEngine | None = None,
    ):
        self.config = config
        self.on_event = on_event
        self.source_factory = source_factory or (lambda: open_source(config.input_device))
        self.engine = engine or WhisperEngine(config)
        self._session: _Session | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """A session is listening or transcribing (and was not cancelled)."""
        session = self._session
        return session is not None and session.running and not session.cancelled

    def preload(self) -> threading.Thread:
        """Load Whisper in a background thread now; a failure is reported as an
        ``ErrorEvent`` (unavailable) through the callback."""

        def load() -> None:
            try:
                self.engine.load()
            except VoiceError as exc:
                self.on_event(ErrorEvent(str(exc), unavailable=True))
            except Exception as exc:
                self.on_event(ErrorEvent(f"cannot load Whisper: {exc}", unavailable=True))

        thread = threading.Thread(target=load, name="tars-voice-load", daemon=True)
        thread.start()
        return thread

    def start(self) -> bool:
        """Start listening; False (and nothing happens) if a session is active."""
        with self._lock:
            if self.active:
                return False
            session = _Session(self.on_event, self._session)
            session.thread = threading.Thread(
                target=self._run, args=(session,), name="tars-voice", daemon=True
            )
            self._session = session
            session.thread.start()
            return True

    def toggle(self) -> None:
        """What the push-to-talk key does in toggle mode."""
        if self.active:
            self.stop()
        else:
            self.start()

    def stop(self) -> None:
        """Stop listening and finish: the final text of what was heard follows."""
        session = self._session
        if session is not None:
            session.control.stop.set()

    def cancel(self) -> None:
        """Discard the utterance; ``StateEvent(IDLE)`` is sent from this thread at once."""
        session = self._session
        if session is not None and session.running:
            session.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current session has finished (tests, shutdown)."""
        session = self._session
        if session is None or session.thread is None:
            return True
        session.thread.join(timeout)
        return not session.thread.is_alive()

    def close(self, timeout: float = 2.0) -> None:
        """Cancel and wait a little: call on app exit."""
        self.cancel()
        self.wait(timeout)

    def _run(self, session: _Session) -> None:
        previous = session.previous
        session.previous = None
        if previous is not None:  # a cancelled session may still hold the device
            previous.control.released.wait(RELEASE_WAIT_S)
        try:
            pipeline = Pipeline(
                self.config,
                self.engine,
                session.emit,
                single_utterance=True,
                no_speech_timeout_s=self.config.no_speech_timeout_s,
            )
            pipeline.run(self.source_factory(), session.control)
            if not session.final_sent:
                session.emit(FinalEvent("", None))
        except VoiceError as exc:
            unavailable = isinstance(exc, VoiceUnavailable)
            session.emit(ErrorEvent(str(exc), unavailable=unavailable))
        except Exception as exc:
            session.emit(ErrorEvent(f"voice input failed: {exc}", unavailable=False))
        finally:
            session.emit(StateEvent(VoiceState.IDLE))

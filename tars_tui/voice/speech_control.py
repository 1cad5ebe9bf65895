"""Spoken replies in the chat screen: the speaker, ``/speak``, Esc and barge-in.

The speaker (:mod:`tars_assistant.speech.speaker`) is opened in a thread the first
time speech is wanted (``[tts] enabled``, ``/speak on``, F4 or ``/talk``): opening
the speakers can be slow, and with no output device speech turns itself off with
a message saying how to fix it, while everything else goes on.

A reply's text reaches the speaker from the generating thread itself, piece by
piece (:meth:`SpeechControl.tee`), not through the screen's batched repaints, so
the first sentence is synthesised as soon as it is complete. A new prompt, Esc and
push-to-talk stop the speech at once (:meth:`SpeechControl.stop`); whatever the
model still generates for that reply is then not spoken.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from tars_assistant.speech.events import (
    SpeechError,
    SpeechEvent,
    SpeechFailed,
    SpeechFinished,
    SpeechStarted,
)
from tars_assistant.speech.sinks import FILE_PREFIX, AudioSink, WavFileSink, open_sink
from tars_assistant.speech.speaker import BLOCK_S, LEVEL_EVERY_BLOCKS, Speaker
from tars_assistant.voice.echo import PlaybackLevels
from tars_tui.host import ChatView
from tars_tui.messages import SpeakerOpened, SpeechEventPosted, SpeechLevelPosted
from tars_tui.voice.widgets import SpeechBar

LEVEL_PERIOD_S = BLOCK_S * LEVEL_EVERY_BLOCKS
SinkFactory = Callable[[], AudioSink]


def default_sink(output_device: str) -> AudioSink:
    """``[tts] output_device`` as a sink; a file is written at the pace of speech, as
    speakers would play it, so the speaking indicator and barge-in behave alike."""
    if output_device.startswith(FILE_PREFIX):
        return WavFileSink(output_device[len(FILE_PREFIX) :], paced=True)
    return open_sink(output_device)


class SpeechListener(Protocol):
    """Who wants to know when TARS starts and stops being heard (hands-free)."""

    def speech_started(self) -> None: ...
    def speech_finished(self) -> None: ...


class _ReplySpeech:
    """One reply's way into the speaker; muted for good once the speech is stopped."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker
        self.muted = threading.Event()
        self.fed = False

    def feed(self, piece: str) -> None:  # the generating thread
        if not self.muted.is_set():
            self.fed = self.fed or bool(piece.strip())
            self.speaker.feed(piece)


class SpeechControl:
    """Owned by the chat screen; runs on the UI thread, except :meth:`stop` (any
    thread) and the function :meth:`tee` returns (the generating thread)."""

    def __init__(self, screen: ChatView) -> None:
        self.screen = screen
        self.listener: SpeechListener | None = None
        self.config = screen.session.config.tts
        self.enabled = self.config.enabled  # /speak, for this session
        self.hands_free = False  # /talk speaks even with /speak off
        self.speaker: Speaker | None = None
        self.error: str | None = None  # why speech cannot work here
        self.levels = PlaybackLevels()  # what played when: the echo guard's reference
        self.sink_factory: SinkFactory = lambda: default_sink(self.config.output_device)
        self._opening = False
        self._reply: _ReplySpeech | None = None

    @property
    def wanted(self) -> bool:
        return self.enabled or self.hands_free

    @property
    def busy(self) -> bool:
        """Something of a reply is still to be heard."""
        return self.speaker is not None and self.speaker.busy

    # -- opening -------------------------------------------------------------------

    def prepare(self) -> None:
        """Open the speaker in a thread if speech is wanted and it is not open yet."""
        if not self.wanted or self.speaker is not None or self._opening or self.error:
            return
        self._opening = True
        threading.Thread(target=self._open, name="tars-tts-open", daemon=True).start()

    def _open(self) -> None:
        screen = self.screen
        try:
            sink = self.sink_factory()
        except SpeechError as exc:
            screen.post_message(SpeakerOpened(None, str(exc)))
            return
        except Exception as exc:  # a device layer that fails oddly must not go unseen
            screen.post_message(SpeakerOpened(None, f"cannot open the speakers: {exc!r}"))
            return

        def post(event: SpeechEvent) -> None:  # the speaker's threads
            screen.post_message(SpeechEventPosted(event))

        speaker = Speaker(self.config, sink, on_event=post, on_level=self._level)
        speaker.preload()  # the voice loads in its own thread; a failure is an event
        screen.post_message(SpeakerOpened(speaker, None))

    def opened(self, message: SpeakerOpened) -> None:
        self._opening = False
        if message.speaker is None:
            self._unavailable(message.error or "no speaker")
            return
        self.speaker = message.speaker
        if self.wanted and not self.screen.generating:
            self.screen.say(f"Speaking replies through {message.speaker.sink.name}.")

    def _unavailable(self, why: str) -> None:
        self.error = why
        self.screen.say(f"Speech is off: {why}. Everything else works.", "error")
        if self.listener is not None:
            self.listener.speech_finished()

    def _level(self, dbfs: float) -> None:  # the speaker's playback thread
        self.levels.played(dbfs, LEVEL_PERIOD_S)
        self.screen.post_message(SpeechLevelPosted(dbfs))

    # -- the session's switch ---------------------------------------------------------

    def set_enabled(self, on: bool | None) -> None:
        self.enabled = (not self.enabled) if on is None else on
        if not self.enabled:
            self.stop()
            self.screen.say("Spoken replies off.")
            return
        if self.error is not None:
            self.screen.say(f"Speech is unavailable: {self.error}.", "error")
            return
        self.screen.say("Spoken replies on." if self.speaker else "Spoken replies on (starting…).")
        self.prepare()

    # -- a reply --------------------------------------------------------------------

    def begin_reply(self) -> None:
        """A prompt was sent: stop what is still being said, speak the new reply."""
        self.stop()
        speaker = self.speaker
        self._reply = _ReplySpeech(speaker) if self.wanted and speaker is not None else None

    def tee(self, show: Callable[[str], None]) -> Callable[[str], None]:
        """The generating thread's piece callback: shown, and spoken if wanted."""
        reply = self._reply
        if reply is None:
            return show

        def both(piece: str) -> None:
            show(piece)
            reply.feed(piece)

        return both

    def end_reply(self) -> bool:
        """The reply is complete (or failed); True when speech of it is still to come."""
        reply, self._reply = self._reply, None
        if reply is None or reply.muted.is_set() or not reply.fed:
            return False
        reply.speaker.end()
        return reply.speaker.busy

    def stop(self) -> bool:
        """Silence now (Esc, a new prompt, push-to-talk); True if something was playing.

        Safe from any thread: the driver calls it from its input thread."""
        reply = self._reply
        if reply is not None:
            reply.muted.set()
        speaker = self.speaker
        if speaker is None or not speaker.busy:
            return False
        speaker.stop()
        return True

    # -- what the speaker reported ------------------------------------------------------

    def on_event(self, event: SpeechEvent) -> None:
        bar = self.screen.query_one(SpeechBar)
        listener = self.listener
        if isinstance(event, SpeechStarted):
            bar.show_speaking(True)
            if listener is not None:
                listener.speech_started()
        elif isinstance(event, SpeechFinished):
            self._record(event)
            if self.speaker is not None and not self.speaker.busy:
                bar.show_speaking(False)
                if listener is not None:
                    listener.speech_finished()
        elif isinstance(event, SpeechFailed):
            bar.show_speaking(False)
            if event.unavailable:
                self._close_speaker()
                self._unavailable(event.message)
            else:
                self.screen.say(f"⚠ Speech: {event.message}", "error")
                if listener is not None:
                    listener.speech_finished()

    def on_level(self, dbfs: float) -> None:
        self.screen.query_one(SpeechBar).show_level(dbfs)

    def _record(self, event: SpeechFinished) -> None:
        m = event.metrics
        latency = self.screen.session.latency
        if m.first_token_to_sentence_s is not None:
            latency.record("tts_sentence_ms", m.first_token_to_sentence_s * 1000)
        if m.sentence_to_audio_s is not None:
            latency.record("tts_audio_ms", m.sentence_to_audio_s * 1000)
        if m.rtf is not None:
            latency.record("tts_rtf", m.rtf)
        self.screen.refresh_figures()

    def _close_speaker(self) -> None:
        speaker, self.speaker = self.speaker, None
        if speaker is not None:
            threading.Thread(target=speaker.close, name="tars-tts-close", daemon=True).start()

    def close(self) -> None:
        speaker, self.speaker = self.speaker, None
        if speaker is not None:
            speaker.close()

"""The streaming speaker: speaks a reply while it is still being generated.

    speaker = open_speaker(config.tts, on_event=post, on_level=meter)
    # (SpeechUnavailable here: no output device; the message says how to fix it.)
    # Callbacks come from the speaker's threads.
    speaker.preload()                 # optional: load the voice in the background now
    for piece in llm_stream:          # any thread; returns at once
        speaker.feed(piece)
    speaker.end()                     # the reply is complete: speak the rest
    speaker.stop()                    # barge-in / Esc / new prompt: silent within 100 ms
    speaker.wait(timeout)             # until everything fed has been heard (tests, `tars say`)
    speaker.close()                   # on exit

``feed`` cuts the text into sentences as it arrives (:mod:`.sentences`); each
completed sentence goes to the synthesis thread (Piper), whose audio goes to the
playback thread (the sink) chunk by chunk as it is decoded, so sentence *n+1* is
synthesised while *n* plays and the first audio is ready a few tens of
milliseconds after the first sentence is complete, not when the reply ends.
Text fed after ``end()`` (or after ``stop()``) starts a new reply, which is
spoken after the current one; a new prompt should call ``stop()`` first.

``stop()`` returns once the sink is silent: it drops every queued sentence and
audio block, ends a synthesis in progress, and stops the sink (a device stream is
aborted, dropping what the device buffers). ``busy`` is true from the first
``feed`` of a reply until its ``SpeechFinished``; ``speaking`` from its first
audio until then. Events and per-reply :class:`~.events.SpeechMetrics` are described in
:mod:`.events`; ``on_level`` gets the dBFS of the audio playing, about 16 times a
second, and -100 when a reply ends; ``on_audio`` every block as it is played
(int16, and its rate): the echo reference for a microphone left open while TARS
speaks (``[tts] barge_in = "voice"``).

One :class:`PiperEngine` may serve several speakers (``engine=``): the voice is
loaded once. Speakers are cheap; sinks hold the device.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from tars_assistant.speech.events import (
    LevelCallback,
    SpeechCallback,
    SpeechError,
    SpeechEvent,
    SpeechFailed,
    SpeechFinished,
    SpeechMetrics,
    SpeechStarted,
    SpeechUnavailable,
)
from tars_assistant.speech.piper import PiperEngine, SynthesisCancelled
from tars_assistant.speech.sentences import Sentence, SentenceSplitter
from tars_assistant.speech.sinks import AudioSink, Block, open_sink
from tars_assistant.voice.capture import frame_dbfs
from tars_core.settings.tts import TTSConfig

AudioCallback = Callable[[Block, int], None]  # each block as it is played, and its rate
BLOCK_S = 0.03  # playback granularity: how late a stop can be noticed, at most
LEVEL_EVERY_BLOCKS = 2  # a level every 60 ms
SENTENCE_PAUSE_S = 0.12  # after a full sentence (not after a clause cut)
SILENT_DBFS = -100.0


@dataclass(eq=False)
class _Reply:
    id: int
    first_text_at: float
    first_unit_at: float | None = None
    first_audio_at: float | None = None
    first_unit_audio_s: float | None = None
    synthesis_s: float = 0.0
    audio_s: float = 0.0
    units: int = 0
    sink_started: bool = False
    started_sent: bool = False
    finished: bool = False

    def metrics(self, stopped: bool) -> SpeechMetrics:
        unit, audio = self.first_unit_at, self.first_audio_at
        return SpeechMetrics(
            first_token_to_sentence_s=None if unit is None else unit - self.first_text_at,
            sentence_to_audio_s=None if unit is None or audio is None else audio - unit,
            first_token_to_audio_s=None if audio is None else audio - self.first_text_at,
            first_sentence_audio_s=self.first_unit_audio_s,
            synthesis_s=self.synthesis_s,
            audio_s=self.audio_s,
            sentences=self.units,
            stopped=stopped,
        )


@dataclass(frozen=True)
class _Item:
    reply: _Reply
    sentence: Sentence | None = None  # None: the end of the reply
    ready_at: float = 0.0
    audio: Block | None = field(default=None, compare=False)


class Speaker:
    """See the module docstring. All methods are thread-safe and return at once,
    except ``wait``, ``stop`` (a few milliseconds) and ``close``."""

    def __init__(
        self,
        config: TTSConfig,
        sink: AudioSink,
        *,
        engine: PiperEngine | None = None,
        on_event: SpeechCallback | None = None,
        on_level: LevelCallback | None = None,
        on_audio: AudioCallback | None = None,
        first_fragment: bool = True,
    ):
        self.config = config
        self.sink = sink
        self.engine = engine or PiperEngine(config)
        self.on_event = on_event
        self.on_level = on_level
        self.on_audio = on_audio
        self._splitter = SentenceSplitter(read_code=config.read_code, first_fragment=first_fragment)
        self._lock = threading.Condition(threading.RLock())
        self._feeding: _Reply | None = None
        self._active: dict[int, _Reply] = {}
        self._next_id = 1
        self._floor = 0  # replies with an id up to this one were stopped
        self._playing = False
        self._synth_q: queue.Queue[_Item | None] = queue.Queue()
        self._play_q: queue.Queue[_Item | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._synth_loop, name="tars-tts-synth", daemon=True),
            threading.Thread(target=self._play_loop, name="tars-tts-play", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the API ---------------------------------------------------------------

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._active)

    @property
    def speaking(self) -> bool:
        return self._playing

    def preload(self) -> threading.Thread:
        """Load the voice in a background thread; a failure becomes a ``SpeechFailed``."""

        def load() -> None:
            try:
                self.engine.load()
            except SpeechError as exc:
                self._emit(SpeechFailed(str(exc), isinstance(exc, SpeechUnavailable)))

        thread = threading.Thread(target=load, name="tars-tts-load", daemon=True)
        thread.start()
        return thread

    def feed(self, text: str) -> int:
        """More of the reply being generated; completed sentences start synthesising.
        Returns the reply's id (as in its events); 0 for empty text before a reply."""
        now = time.monotonic()
        with self._lock:
            reply = self._feeding
            if not text:
                return reply.id if reply is not None else 0
            if reply is None:
                reply = self._feeding = _Reply(self._next_id, now)
                self._next_id += 1
                self._active[reply.id] = reply
            for sentence in self._splitter.feed(text):
                self._queue_unit(reply, sentence, now)
            return reply.id

    def end(self) -> None:
        """The reply is complete: speak what is left, then report ``SpeechFinished``."""
        now = time.monotonic()
        with self._lock:
            reply, self._feeding = self._feeding, None
            if reply is None:
                return
            for sentence in self._splitter.flush():
                self._queue_unit(reply, sentence, now)
            self._synth_q.put(_Item(reply))

    def say(self, text: str) -> None:
        """A whole text at once (``feed`` + ``end``)."""
        self.feed(text)
        self.end()

    def stop(self) -> float:
        """Silence now and drop everything fed so far; returns the seconds it took."""
        started = time.monotonic()
        with self._lock:
            self._floor = self._next_id - 1
            self._feeding = None
            self._splitter.reset()
            stopped = [r for r in self._active.values() if not r.finished]
        self.engine.cancel(owner=self)
        self.sink.stop()
        for reply in stopped:
            self._finish(reply, stopped=True)
        return time.monotonic() - started

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every reply fed so far has finished (``end()`` it first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 2.0) -> None:
        self.stop()
        self._synth_q.put(None)
        self._play_q.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self.sink.close()

    # -- internals ---------------------------------------------------------------

    def _queue_unit(self, reply: _Reply, sentence: Sentence, now: float) -> None:
        if reply.first_unit_at is None:
            reply.first_unit_at = now
        self._synth_q.put(_Item(reply, sentence, now))

    def _dropped(self, reply: _Reply) -> bool:
        return reply.id <= self._floor or reply.finished

    def _emit(self, event: SpeechEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _level(self, dbfs: float) -> None:
        if self.on_level is not None:
            self.on_level(dbfs)

    def _finish(self, reply: _Reply, *, stopped: bool) -> None:
        with self._lock:
            if reply.finished:
                return
            reply.finished = True
            self._active.pop(reply.id, None)
            self._playing = False
            self._lock.notify_all()
        self._level(SILENT_DBFS)
        self._emit(SpeechFinished(reply.id, reply.metrics(stopped), stopped))

    def _fail(self, reply: _Reply, exc: Exception) -> None:
        with self._lock:
            if reply.finished:
                return
            reply.finished = True
            self._active.pop(reply.id, None)
            self._playing = False
            self._lock.notify_all()
        unavailable = isinstance(exc, SpeechUnavailable)
        message = str(exc) if isinstance(exc, SpeechError) else f"speech failed: {exc}"
        self._level(SILENT_DBFS)
        self._emit(SpeechFailed(message, unavailable))

    def _synth_loop(self) -> None:
        while (item := self._synth_q.get()) is not None:
            reply = item.reply
            if self._dropped(reply):
                continue
            if item.sentence is None:
                self._play_q.put(item)
                continue
            try:
                self._speak_unit(item.sentence, reply, item.ready_at)
            except SynthesisCancelled:
                continue
            except Exception as exc:  # a voice that fails must not kill the thread
                self._fail(reply, exc)

    def _speak_unit(self, sentence: Sentence, reply: _Reply, ready_at: float) -> None:
        """Synthesise one unit, handing each decoded chunk to playback as it comes."""
        stopped = partial(self._dropped, reply)
        with closing(self.engine.stream(sentence.text, stopped, owner=self)) as chunks:
            rate = 0
            for chunk in chunks:
                done = time.monotonic()
                with self._lock:
                    if self._dropped(reply):
                        return
                    reply.synthesis_s += chunk.compute_s
                    reply.audio_s += chunk.audio_s
                    if reply.first_audio_at is None:
                        reply.first_audio_at = done
                    if reply.units == 0:  # still the first unit
                        reply.first_unit_audio_s = (reply.first_unit_audio_s or 0) + chunk.audio_s
                rate = chunk.sample_rate
                self._play_q.put(_Item(reply, sentence, ready_at, chunk.int16()))
        with self._lock:
            reply.units += 1
        if sentence.final and rate:
            pause = np.zeros(round(SENTENCE_PAUSE_S * rate), dtype=np.int16)
            self._play_q.put(_Item(reply, sentence, ready_at, pause))

    def _play_loop(self) -> None:
        while (item := self._play_q.get()) is not None:
            reply = item.reply
            try:
                if item.audio is not None:
                    self._play(reply, item.audio)
                elif not self._dropped(reply):
                    if reply.sink_started:
                        self.sink.drain()
                    if not self._dropped(reply):
                        self._finish(reply, stopped=False)
            except Exception as exc:  # a device that fails must not kill the thread
                self._fail(reply, exc)

    def _play(self, reply: _Reply, audio: Block) -> None:
        with self._lock:
            if self._dropped(reply):
                return
            if not reply.sink_started:
                self.sink.start(self.engine.sample_rate)
                reply.sink_started = True
            self._playing = True
        if not reply.started_sent:
            reply.started_sent = True
            self._emit(SpeechStarted(reply.id))
        step = max(1, round(BLOCK_S * self.sink.sample_rate))
        levels = self.on_level is not None and self.sink.paced
        for n, start in enumerate(range(0, len(audio), step)):
            if self._dropped(reply):
                return
            block = audio[start : start + step]
            if levels and n % LEVEL_EVERY_BLOCKS == 0:
                self._level(frame_dbfs(block))
            if self.on_audio is not None:
                self.on_audio(block, self.sink.sample_rate)
            self.sink.write(block)


def open_speaker(
    config: TTSConfig,
    *,
    engine: PiperEngine | None = None,
    on_event: SpeechCallback | None = None,
    on_level: LevelCallback | None = None,
    on_audio: AudioCallback | None = None,
) -> Speaker:
    """A speaker on ``[tts] output_device``. Raises :class:`SpeechUnavailable` (the
    message says how to fix it) when there is no output device or no PortAudio;
    nothing is loaded yet (``preload()`` loads the voice)."""
    sink = open_sink(config.output_device)
    return Speaker(
        config, sink, engine=engine, on_event=on_event, on_level=on_level, on_audio=on_audio
    )


__all__ = ["AudioCallback", "Speaker", "open_speaker"]

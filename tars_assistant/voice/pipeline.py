"""Source -> VAD gate -> streaming Whisper, for push-to-talk, `tars transcribe` and the bench.

:meth:`Pipeline.run` reads frames on the calling thread (a worker, never the UI).
With a real-time source (a microphone) decoding runs on a second thread so the
gate keeps up with the audio: partial hypotheses every ``partial_interval_s`` of
new speech, and - with ``speculative_final`` - the final decode starts once the
speech has been quiet for the gate's tail, so it is usually done when the
hangover ends. A source that is not real time (a file read as fast as possible)
is decoded inline: partials at the same audio positions, deterministically.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from tars_assistant.voice.agreement import LocalAgreement
from tars_assistant.voice.capture import FRAME_S, FRAME_SAMPLES, Frame, FrameSource
from tars_assistant.voice.events import (
    EventCallback,
    FinalEvent,
    LevelEvent,
    PartialEvent,
    StateEvent,
    Timings,
    VoiceEvent,
    VoiceState,
)
from tars_assistant.voice.stt import Decoded, WhisperEngine
from tars_assistant.voice.vad import GateStep, VadGate
from tars_core.settings.voice import VoiceConfig

LEVEL_EVERY_FRAMES = 2  # a level event every 60 ms
# No partial once the speech has paused this long: nothing new to hear, and the
# decode thread should be free when the (speculative) final is due.
QUIET_FRAMES = 2


@dataclass
class Control:
    """Flags the caller sets from any thread."""

    stop: threading.Event = field(default_factory=threading.Event)  # finish what was heard
    cancel: threading.Event = field(default_factory=threading.Event)  # discard everything
    released: threading.Event = field(default_factory=threading.Event)  # set: source closed


@dataclass
class _Utterance:
    """One utterance's audio and decode state, shared by the two threads."""

    audio: Frame
    started_at: float
    frames: int = 0
    decodable: int = 0  # frames worth decoding (to the last voiced frame + tail)
    voiced_end: int = 0  # frames up to and including the last voiced one
    silence: int = 0  # non-speech frames at its end so far
    speculate: int | None = None  # decodable length a speculative final should read
    ended: tuple[str, float] | None = None  # (reason, monotonic time the end was seen)
    spec: tuple[int, Decoded] | None = None
    partial_frames: int = 0  # utterance length at the last partial
    partial_decodable: int = 0
    partial_times: list[float] = field(default_factory=list)
    partials: int = 0
    compute_s: float = 0.0
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    shown: tuple[str, str] = ("", "")

    def add(self, frames: tuple[Frame, ...], decodable: int) -> None:
        for frame in frames:
            if self.frames * FRAME_SAMPLES >= len(self.audio):
                self.audio = np.concatenate((self.audio, np.zeros_like(self.audio)))
            start = self.frames * FRAME_SAMPLES
            self.audio[start : start + FRAME_SAMPLES] = frame
            self.frames += 1
        self.decodable = decodable

    def samples(self, frames: int) -> Frame:
        return self.audio[: frames * FRAME_SAMPLES].copy()


class _Decoder:
    """Runs the decodes of the utterances in order, inline or on its own thread."""

    def __init__(
        self,
        engine: WhisperEngine,
        config: VoiceConfig,
        emit: EventCallback,
        *,
        threaded: bool,
    ):
        self.engine = engine
        self.config = config
        self.emit = emit
        self.threaded = threaded
        self.interval_frames = max(1, round(config.partial_interval_s / FRAME_S))
        self.finals: list[str] = []
        self.error: BaseException | None = None
        self._queue: deque[_Utterance] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._cancelled = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="tars-voice-stt", daemon=True)
            self._thread.start()

    # -- called by the capture thread ------------------------------------------

    def begin(self, step: GateStep, now: float) -> _Utterance:
        size = max(len(step.audio), round(2.0 / FRAME_S)) * FRAME_SAMPLES
        utt = _Utterance(audio=np.zeros(size, dtype=np.int16), started_at=now)
        with self._cond:
            utt.add(step.audio, step.speech_frames)
            utt.voiced_end = utt.frames
            self._queue.append(utt)
            self._cond.notify_all()
        return utt

    def feed(self, utt: _Utterance, step: GateStep, tail_frames: int) -> None:
        with self._cond:
            utt.add(step.audio, step.speech_frames)
            utt.silence = step.silence_frames
            utt.voiced_end = utt.frames - step.silence_frames
            if step.voiced:
                utt.speculate = None
            elif (
                self.threaded
                and self.config.speculative_final
                and step.silence_frames >= tail_frames
            ):
                utt.speculate = step.speech_frames
            self._cond.notify_all()

    def end(self, utt: _Utterance, step: GateStep, now: float) -> None:
        with self._cond:
            utt.decodable = step.speech_frames
            utt.voiced_end = utt.frames - step.silence_frames
            utt.ended = (step.reason, now)
            self._cond.notify_all()

    def work_inline(self) -> None:
        """Do whatever is due now (sources that are not real time)."""
        while (job := self._next_job()) is not None:
            self._run(*job)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def close(self, *, cancel: bool) -> None:
        """Finish the queued utterances (or drop them) and stop the thread."""
        with self._cond:
            self._closing = True
            self._cancelled = self._cancelled or cancel
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        elif not cancel and self.error is None:
            self.work_inline()

    # -- the decode side ---------------------------------------------------------

    def _loop(self) -> None:
        try:
            self.engine.load()  # here, not on the caller's thread; once per engine
        except BaseException as exc:  # reported by Pipeline.run
            with self._cond:
                self.error = exc
            return
        while True:
            with self._cond:
                while (job := self._next_job()) is None:
                    if self._cancelled or self._closing or self.error is not None:
                        return
                    self._cond.wait()
            self._run(*job)

    def _next_job(self) -> tuple[str, _Utterance, int] | None:
        """The most urgent decode: a final, then a speculative final, then a partial."""
        with self._cond:
            if self._cancelled or self.error is not None or not self._queue:
                return None
            utt = self._queue[0]
            if utt.ended is not None:
                return ("final", utt, utt.decodable)
            spec = utt.speculate
            if spec is not None and not self._spec_covers(utt):
                return ("speculate", utt, spec)
            due = utt.frames - utt.partial_frames >= self.interval_frames
            new_speech = utt.decodable != utt.partial_decodable and utt.silence < QUIET_FRAMES
            if due and new_speech and spec is None:
                utt.partial_frames, utt.partial_decodable = utt.frames, utt.decodable
                return ("partial", utt, utt.decodable)
            return None

    @staticmethod
    def _spec_covers(utt: _Utterance) -> bool:
        """A speculative final holds every voiced frame: only silence came after it
        (frames that looked voiced for a moment and were then found to be steady
        noise do not count)."""
        return utt.spec is not None and utt.spec[0] >= utt.voiced_end

    def _run(self, kind: str, utt: _Utterance, frames: int) -> None:
        try:
            if kind == "partial":
                self._partial(utt, frames)
            elif kind == "speculate":
                decoded = self.engine.decode(utt.samples(frames), final=True)
                utt.compute_s += decoded.compute_s
                utt.spec = (frames, decoded)
            else:
                self._final(utt, frames)
        except BaseException as exc:  # reported by Pipeline.run
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def _partial(self, utt: _Utterance, frames: int) -> None:
        prefix = utt.agreement.committed_text
        decoded = self.engine.decode(utt.samples(frames), final=False, prefix=prefix)
        utt.compute_s += decoded.compute_s
        utt.partials += 1
        shown = utt.agreement.update(decoded.text)
        if shown != utt.shown and not self._cancelled:
            utt.shown = shown
            utt.partial_times.append(time.monotonic())
            self.emit(PartialEvent(shown[0], shown[1], frames * FRAME_S))

    def _final(self, utt: _Utterance, frames: int) -> None:
        assert utt.ended is not None
        reason, ended_at = utt.ended
        if utt.spec is not None and self._spec_covers(utt):
            decoded, speculative = utt.spec[1], True
        else:
            decoded, speculative = self.engine.decode(utt.samples(frames), final=True), False
            utt.compute_s += decoded.compute_s
        done = time.monotonic()
        with self._cond:
            self._queue.popleft()
        if self._cancelled:
            return
        gaps = np.diff(utt.partial_times) if len(utt.partial_times) > 1 else None
        timings = Timings(
            audio_s=frames * FRAME_S,
            end_to_final_s=done - ended_at,
            final_compute_s=decoded.compute_s,
            speculative=speculative,
            partials=utt.partials,
            partial_interval_s=float(np.mean(gaps)) if gaps is not None else None,
            first_partial_s=utt.partial_times[0] - utt.started_at if utt.partial_times else None,
            compute_s=utt.compute_s,
            reason=reason,
        )
        self.finals.append(decoded.text)
        self.emit(FinalEvent(decoded.text, timings))


class Pipeline:
    """Runs one source through the gate and Whisper; see the module docstring."""

    def __init__(
        self,
        config: VoiceConfig,
        engine: WhisperEngine,
        emit: EventCallback,
        *,
        single_utterance: bool = False,
        no_speech_timeout_s: float = 0.0,
    ):
        self.config = config
        self.engine = engine
        self.single_utterance = single_utterance
        self.no_speech_timeout_s = no_speech_timeout_s
        self._emit_lock = threading.Lock()
        self._emit_to = emit
        self.utterances = 0

    def emit(self, event: VoiceEvent) -> None:
        with self._emit_lock:
            self._emit_to(event)

    def run(self, source: FrameSource, control: Control | None = None) -> list[str]:
        """Process the source to its end (or until stopped); the final texts in order.

        Raises :class:`~tars_assistant.voice.capture.VoiceError` (no device, no model,
        unreadable file) and whatever else broke a decode.
        """
        control = control or Control()
        try:
            if not source.realtime:
                self.engine.load()
            decoder = _Decoder(self.engine, self.config, self.emit, threaded=source.realtime)
            try:
                self._capture(source, decoder, control)
            except BaseException:
                decoder.close(cancel=True)
                raise
        finally:
            control.released.set()
        decoder.close(cancel=control.cancel.is_set())
        if decoder.error is not None:
            raise decoder.error
        return decoder.finals

    def _capture(self, source: FrameSource, decoder: _Decoder, control: Control) -> None:
        gate = VadGate(self.config)
        utt: _Utterance | None = None
        timeout_frames = round(self.no_speech_timeout_s / FRAME_S)
        loudest, voiced_seen, count = -100.0, False, 0
        reason = "stopped"
        with source:
            self.emit(StateEvent(VoiceState.LISTENING))
            for frame in source.frames():
                if control.cancel.is_set() or control.stop.is_set() or decoder.failed:
                    break
                count += 1
                step = gate.push(frame)
                now = time.monotonic()
                loudest, voiced_seen = max(loudest, step.dbfs), voiced_seen or step.voiced
                if count % LEVEL_EVERY_FRAMES == 0:
                    self.emit(LevelEvent(loudest, voiced_seen))
                    loudest, voiced_seen = -100.0, False
                if step.started:
                    utt = decoder.begin(step, now)
                    self.utterances += 1
                    self.emit(StateEvent(VoiceState.HEARING))
                elif utt is not None and step.audio:
                    decoder.feed(utt, step, gate.tail_frames)
                if step.ended and utt is not None:
                    decoder.end(utt, step, now)
                    utt = None
                    self.emit(StateEvent(VoiceState.TRANSCRIBING))
                    if self.single_utterance:
                        break
                    self.emit(StateEvent(VoiceState.LISTENING))
                if not decoder.threaded:
                    decoder.work_inline()
                if timeout_frames and not self.utterances and count >= timeout_frames:
                    break
            else:
                reason = "end_of_audio"
        if utt is not None and not control.cancel.is_set():
            last = gate.finish(reason)
            if last is not None:
                decoder.end(utt, last, time.monotonic())
                self.emit(StateEvent(VoiceState.TRANSCRIBING))

"""A microphone and speakers for the spoken-conversation tests, both real time.

:class:`ScriptedMicrophone` is what a person at the keyboard would be: each time
TARS opens the microphone (one voice session), it hears a little room noise, then
the next scripted utterance (espeak-ng), then the room again until the session
closes. :class:`LoopbackSink` plays like speakers (paced) and keeps what it played
on a timeline, which the microphone mixes back in, delayed and quieter, as the
echo a room would return.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from tars_assistant.speech.sinks import AudioSink, Block
from tars_assistant.voice import synth
from tars_assistant.voice.capture import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE, Frame, FrameSource

ROOM_DBFS = -62.0


class LoopbackSink(AudioSink):
    """Paced like a device with no buffer; what it plays is kept at 16 kHz on a
    timeline indexed by ``time.monotonic()``."""

    name = "loopback speakers"

    def __init__(self) -> None:
        super().__init__()
        self.origin = time.monotonic()
        self._timeline = np.zeros(SAMPLE_RATE * 600, dtype=np.int16)  # ten minutes
        self._lock = threading.Lock()
        self._due = 0.0
        self.stops: list[float] = []  # stopped_at of every stop()
        self.playing_until = 0.0  # monotonic time the audio written so far ends
        self.plays: list[list[float]] = []  # [start, end] of each reply's audio

    def _start(self) -> None:
        self._due = time.monotonic()
        self.plays.append([self._due, self._due])

    def _write(self, block: Block) -> None:
        now = time.monotonic()
        start = max(self._due, now)
        seconds = len(block) / self.sample_rate
        resampled = np.interp(
            np.arange(round(seconds * SAMPLE_RATE)) * self.sample_rate / SAMPLE_RATE,
            np.arange(len(block)),
            block.astype(np.float64),
        ).astype(np.int16)
        at = round((start - self.origin) * SAMPLE_RATE)
        with self._lock:
            end = min(len(self._timeline), at + len(resampled))
            self._timeline[at:end] = resampled[: end - at]
        self._due = self.playing_until = start + seconds
        self.plays[-1][1] = self._due
        self._halt.wait(self._due - now)

    def drain(self) -> None:
        self._halt.wait(max(0.0, self._due - time.monotonic()))

    def _stop(self) -> None:
        # Nothing more plays from now: blank what was placed ahead of the clock.
        now = round((time.monotonic() - self.origin) * SAMPLE_RATE)
        with self._lock:
            self._timeline[now:] = 0
        self.playing_until = time.monotonic()
        if self.plays:
            self.plays[-1][1] = min(self.plays[-1][1], self.playing_until)
        self.stops.append(self.playing_until)

    def played(self, start: float, samples: int) -> Frame:
        """What played from ``start`` (monotonic) on, ``samples`` long, at 16 kHz."""
        at = round((start - self.origin) * SAMPLE_RATE)
        if at < 0:
            return np.zeros(samples, dtype=np.int16)
        with self._lock:
            out = self._timeline[at : at + samples].copy()
        return np.pad(out, (0, samples - len(out)))


class ScriptedMicrophone:
    """Call it for each voice session's source (``PushToTalk.source_factory``).

    Like a polite person, it says its next line only once the session has been open
    ``lead_s`` and the speakers have been quiet that long; a session that closes
    first leaves the line for the next one.
    """

    def __init__(
        self,
        utterances: list[Frame],
        *,
        lead_s: float = 0.6,
        echo: LoopbackSink | None = None,
        echo_gain_db: float = -6.0,
        echo_delay_s: float = 0.06,
    ) -> None:
        self.utterances = list(utterances)
        self.lead_s = lead_s
        self.echo = echo
        self.echo_gain = 10 ** (echo_gain_db / 20)
        self.echo_delay_s = echo_delay_s
        self.sessions: list[list[float]] = []  # [opened_at, closed_at] of each session
        self.spoken = 0  # lines said so far
        self._lock = threading.Lock()

    def __call__(self) -> FrameSource:
        return _Session(self)

    def next_line(self) -> Frame | None:
        with self._lock:
            if not self.utterances:
                return None
            self.spoken += 1
            return self.utterances.pop(0)


class _Session(FrameSource):
    realtime = True

    def __init__(self, mic: ScriptedMicrophone) -> None:
        self.mic = mic
        self.name = f"scripted microphone, session {len(mic.sessions) + 1}"
        self.room = synth.noise(10.0, ROOM_DBFS, "pink", seed=len(mic.sessions))
        self._closed = threading.Event()
        self._times: list[float] = []

    def close(self) -> None:
        if not self._closed.is_set() and self._times:
            self._times.append(time.monotonic())
        self._closed.set()

    def frames(self) -> Iterator[Frame]:
        started = time.monotonic()
        self._times = [started]
        self.mic.sessions.append(self._times)
        line: Frame | None = None
        said = 0  # samples of the line said so far
        index = 0
        while True:
            if self._closed.wait(max(0.0, started + (index + 1) * FRAME_S - time.monotonic())):
                return
            at = index * FRAME_SAMPLES
            frame = np.zeros(FRAME_SAMPLES, dtype=np.int32)
            room = self.room[at % len(self.room) :][:FRAME_SAMPLES]
            frame[: len(room)] += room
            now = time.monotonic()
            echo = self.mic.echo
            quiet_since = max(started, echo.playing_until if echo is not None else 0.0)
            if line is None and said == 0 and now - quiet_since >= self.mic.lead_s:
                line = self.mic.next_line()
            if line is not None and said < len(line):
                part = line[said : said + FRAME_SAMPLES]
                frame[: len(part)] += part
                said += len(part)
            if echo is not None:
                heard = echo.played(
                    started + index * FRAME_S - self.mic.echo_delay_s, FRAME_SAMPLES
                )
                frame += np.round(heard * self.mic.echo_gain).astype(np.int32)
            yield np.clip(frame, -32768, 32767).astype(np.int16)
            index += 1

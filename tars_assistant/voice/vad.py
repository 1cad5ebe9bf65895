"""The VAD gate: decides which 30 ms frames form an utterance; only those reach Whisper.

A frame is *voiced* when webrtcvad calls it speech **and** it stands
``noise_margin_db`` above an adaptive noise floor. webrtcvad alone calls steady
noise speech once it has heard a voice (white noise, even at -60 dBFS), so the
floor tracks the background: it drops at once to any quieter frame, rises slowly
otherwise, and jumps to the level of any half second that is *stationary*. That
is judged on the speech-band level (after a pre-emphasis filter, so rumble and
hum do not make the level wander): steady noise stays within a few dB there,
speech never does. A stationary stretch inside an utterance counts as silence
from its first frame, so speech followed by steady noise ends one hangover after
the speech (half a second after it with a shorter hangover).

An utterance starts after ``start_frames`` voiced frames in a row (not counting
the first, which may straddle an onset) whose speech-band level moves - a flat
run is noise switching on, not a voice - and carries ``preroll_ms`` of the audio
before them. It ends after ``hangover_ms`` without voiced frames, at
``max_utterance_s``, or when the caller finishes it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from tars_assistant.voice.capture import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Frame, frame_dbfs
from tars_core.settings.voice import VoiceConfig

# A stretch this long whose frame levels (all but the highest and lowest) stay within
# STATIONARY_SPREAD_DB is noise. Speech moves by 10 dB and more within it.
STATIONARY_FRAMES = 16
STATIONARY_SPREAD_DB = 4.0
# The speech-band level: y[n] = x[n] - PRE_EMPHASIS * x[n-1] (+6 dB/octave).
PRE_EMPHASIS = 0.95
# The frames that start an utterance must span at least this much level.
START_RANGE_DB = 2.0
# The floor rises towards louder frames with this time constant.
FLOOR_RISE_S = 2.0
# Audio kept after the last voiced frame when an utterance is decoded.
TAIL_MS = 150


@dataclass(frozen=True)
class GateStep:
    """What one frame did to the gate."""

    dbfs: float  # the frame's level, for a meter
    voiced: bool
    band_dbfs: float  # its speech-band level (the stationarity and start checks use it)
    floor_dbfs: float  # the adaptive noise floor, in the same scale as dbfs
    started: bool = False
    ended: bool = False
    reason: str = ""  # why it ended: "hangover", "max_length", or the finish() reason
    audio: tuple[Frame, ...] = ()  # frames that join the utterance with this step
    speech_frames: int = 0  # utterance frames worth decoding: to the last voiced one + tail
    silence_frames: int = 0  # non-speech frames at the end of the utterance so far


@dataclass(frozen=True)
class _Levels:
    dbfs: float
    band: float
    floor: float


class NoiseFloor:
    """An adaptive estimate of the background level, in dBFS."""

    def __init__(self) -> None:
        self.level: float | None = None
        self._recent: deque[float] = deque(maxlen=STATIONARY_FRAMES)
        self._band: deque[float] = deque(maxlen=STATIONARY_FRAMES)
        self._rise = 1.0 - math.exp(-FRAME_MS / 1000 / FLOOR_RISE_S)

    def update(self, dbfs: float, band_dbfs: float) -> bool:
        """Take one frame's level and speech-band level; True when the recent stretch
        is stationary noise (judged on the speech band, where rumble and hum do not
        make the level wander)."""
        self._recent.append(dbfs)
        self._band.append(band_dbfs)
        if self.level is None or dbfs < self.level:
            self.level = dbfs
        else:
            self.level += (dbfs - self.level) * self._rise
        if len(self._band) < STATIONARY_FRAMES:
            return False
        band = sorted(self._band)
        if band[-2] - band[1] >= STATIONARY_SPREAD_DB:
            return False
        self.level = max(self.level, sorted(self._recent)[1])
        return True


class VadGate:
    """Feed frames with :meth:`push`; each returns a :class:`GateStep`."""

    def __init__(self, config: VoiceConfig):
        self.config = config
        self._vad = webrtcvad.Vad(config.vad_aggressiveness)
        self.floor = NoiseFloor()
        self.hangover_frames = max(1, -(-config.hangover_ms // FRAME_MS))
        self.preroll_frames = config.preroll_ms // FRAME_MS
        self.max_frames = max(1, round(config.max_utterance_s * 1000 / FRAME_MS))
        self.tail_frames = min(self.hangover_frames, TAIL_MS // FRAME_MS)
        # Idle: recent frames (pre-roll + the current voiced run) and the run's levels.
        self._recent: deque[Frame] = deque(maxlen=self.preroll_frames + 64)
        self._run: list[float] = []
        # In an utterance: its length, and its voiced flags (for re-classification).
        self.in_speech = False
        self._last_sample = 0.0
        self._flags: list[bool] = []
        self._last_voiced = -1

    def is_speech(self, frame: Frame) -> bool:
        """webrtcvad's opinion of one frame."""
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))

    def push(self, frame: Frame) -> GateStep:
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"frames must have {FRAME_SAMPLES} samples, not {len(frame)}")
        dbfs = frame_dbfs(frame)
        band = self._band_dbfs(frame)
        floor = self.floor.level
        speech = self.is_speech(frame)  # every frame: webrtcvad adapts to what it hears
        voiced = speech and floor is not None and dbfs > floor + self.config.noise_margin_db
        stationary = self.floor.update(dbfs, band)
        levels = _Levels(dbfs, band, self.floor.level if self.floor.level is not None else dbfs)
        if self.in_speech:
            return self._continue(frame, levels, voiced, stationary)
        return self._idle(frame, levels, voiced)

    def finish(self, reason: str = "stopped") -> GateStep | None:
        """End the utterance in progress (push-to-talk released, end of the file)."""
        if not self.in_speech:
            return None
        floor = self.floor.level if self.floor.level is not None else -100.0
        step = GateStep(
            dbfs=-100.0,
            voiced=False,
            band_dbfs=-100.0,
            floor_dbfs=floor,
            ended=True,
            reason=reason,
            speech_frames=self._speech_frames(),
            silence_frames=len(self._flags) - 1 - self._last_voiced,
        )
        self._reset()
        return step

    # -- internals -----------------------------------------------------------

    def _band_dbfs(self, frame: Frame) -> float:
        x = frame.astype(np.float64)
        y = x.copy()
        y[0] -= PRE_EMPHASIS * self._last_sample
        y[1:] -= PRE_EMPHASIS * x[:-1]
        self._last_sample = float(x[-1])
        power = float(np.mean(y * y)) / (32768.0 * 32768.0)
        return max(-100.0, 10.0 * math.log10(power + 1e-12))

    def _idle(self, frame: Frame, lv: _Levels, voiced: bool) -> GateStep:
        self._recent.append(frame)
        if voiced:
            self._run.append(lv.band)
        else:
            self._run.clear()
        # The run's first frame may straddle a noise onset, so it does not count.
        tail = self._run[1:][-self.config.start_frames :]
        if len(tail) < self.config.start_frames or max(tail) - min(tail) < START_RANGE_DB:
            return GateStep(lv.dbfs, voiced, lv.band, lv.floor)
        keep = min(len(self._recent), len(self._run) + self.preroll_frames)
        audio = tuple(list(self._recent)[-keep:])
        self.in_speech = True
        self._flags = [False] * (keep - len(self._run)) + [True] * len(self._run)
        self._last_voiced = keep - 1
        self._run.clear()
        self._recent.clear()
        return GateStep(
            lv.dbfs,
            voiced,
            lv.band,
            lv.floor,
            started=True,
            audio=audio,
            speech_frames=self._speech_frames(),
        )

    def _continue(self, frame: Frame, lv: _Levels, voiced: bool, stationary: bool) -> GateStep:
        self._flags.append(voiced)
        n = len(self._flags)
        if voiced:
            self._last_voiced = n - 1
        if stationary:  # the last frames were steady noise, whatever webrtcvad said
            first = max(0, n - STATIONARY_FRAMES)
            self._flags[first:] = [False] * (n - first)
            if self._last_voiced >= first:
                earlier = (i for i in range(first - 1, -1, -1) if self._flags[i])
                self._last_voiced = next(earlier, -1)
        silence = n - 1 - self._last_voiced
        speech_frames = self._speech_frames()
        reason = ""
        if silence >= self.hangover_frames:
            reason = "hangover"
        elif n >= self.max_frames:
            reason = "max_length"
        if reason:
            self._reset()
        return GateStep(
            lv.dbfs,
            voiced,
            lv.band,
            lv.floor,
            ended=bool(reason),
            reason=reason,
            audio=(frame,),
            speech_frames=speech_frames,
            silence_frames=silence,
        )

    def _speech_frames(self) -> int:
        return min(len(self._flags), self._last_voiced + 1 + self.tail_frames)

    def _reset(self) -> None:
        self.in_speech = False
        self._flags = []
        self._last_voiced = -1
        self._run.clear()
        self._recent.clear()

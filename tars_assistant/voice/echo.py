"""The echo guard: a microphone that stays open while TARS speaks, without hearing TARS.

With ``[tts] barge_in = "voice"`` the user may talk over a reply. The speakers'
sound reaches the microphone too, so while something plays, the VAD threshold is
raised to what that playback can produce at the microphone: a frame passes only
when it is ``MARGIN_DB`` louder than the loudest recent playback level plus the
echo coupling (how much quieter the echo arrives than the played signal). Frames
below it are turned down to the background level, so the gate sees silence, not
a voice. Speech louder than the echo (someone talking over TARS) passes.

The coupling is learned: it starts at 0 dB (an echo as loud as the playback:
safe, but you must speak up) and, once ``LEARN_FRAMES`` rejected frames have been
seen, is the 95th percentile of how much quieter than the playback they were over
the last ``LEARN_WINDOW`` frames (about three seconds). After a second or two of
TARS speaking it sits at the room's real echo level, so talking over TARS needs
a voice only a little louder at the microphone than TARS's own echo.
Playback levels come from the speaker's level callback (any thread).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from tars_assistant.voice.capture import FRAME_S, Frame, FrameSource, frame_dbfs

MARGIN_DB = 6.0
COUPLING_START_DB = 0.0
COUPLING_MIN_DB = -40.0
LEARN_FRAMES = 20  # rejected frames before the learned coupling replaces the start
LEARN_WINDOW = 100  # the rejected frames it is learned from (~3 s)
# Output buffers and the room delay the echo: a played block is looked for in
# the microphone up to this long after it was handed to the device.
ECHO_WINDOW_S = 0.35
LEAD_S = 0.05  # ... and a little before (blocks are timed when queued, not heard)
BACKGROUND_DBFS = -90.0  # what rejected frames become when no background was measured
HISTORY_S = 5.0


class PlaybackLevels:
    """Recent playback levels with their times; written by the speaker's thread."""

    def __init__(self) -> None:
        self._blocks: deque[tuple[float, float, float]] = deque()  # (start, end, dbfs)
        self._lock = threading.Lock()
        self.coupling_db = COUPLING_START_DB
        self._seen: deque[float] = deque(maxlen=LEARN_WINDOW)

    def played(self, dbfs: float, duration_s: float, at: float | None = None) -> None:
        """A block of ``duration_s`` seconds at ``dbfs`` started playing at ``at``."""
        start = time.monotonic() if at is None else at
        with self._lock:
            self._blocks.append((start, start + duration_s, dbfs))
            while self._blocks and self._blocks[0][1] < start - HISTORY_S:
                self._blocks.popleft()

    def clear(self) -> None:
        """Playback stopped: nothing more of it can reach the microphone soon."""
        with self._lock:
            self._blocks.clear()

    def level_near(self, when: float) -> float | None:
        """The loudest playback that can be echoing at ``when``; None if none."""
        lo, hi = when - ECHO_WINDOW_S, when + LEAD_S
        with self._lock:
            levels = [db for start, end, db in self._blocks if start <= hi and end >= lo]
        return max(levels) if levels else None

    def learn(self, mic_dbfs: float, played_dbfs: float) -> None:
        """A frame judged to be echo: how much quieter than the playback it was."""
        self._seen.append(mic_dbfs - played_dbfs)
        if len(self._seen) >= LEARN_FRAMES:
            learned = float(np.percentile(self._seen, 95))
            self.coupling_db = min(COUPLING_START_DB, max(COUPLING_MIN_DB, learned))


class EchoGuard(FrameSource):
    """Wraps a source: frames that could be TARS's own playback are turned down.

    ``passed`` and ``rejected`` count frames that arrived while something played.
    """

    def __init__(
        self,
        inner: FrameSource,
        levels: PlaybackLevels,
        *,
        margin_db: float = MARGIN_DB,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.inner = inner
        self.clock = clock
        self.levels = levels
        self.margin_db = margin_db
        self.realtime = inner.realtime
        self.name = inner.name
        self.background_dbfs: float | None = None
        self.passed = 0
        self.rejected = 0

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def frames(self) -> Iterator[Frame]:
        for frame in self.inner.frames():
            # A live frame has just been recorded: it ended now, and began a frame ago.
            when = self.clock() - FRAME_S / 2
            dbfs = frame_dbfs(frame)
            played = self.levels.level_near(when)
            if played is None:
                self._track_background(dbfs)
                yield frame
                continue
            if dbfs > played + self.levels.coupling_db + self.margin_db:
                self.passed += 1
                yield frame
                continue
            self.rejected += 1
            self.levels.learn(dbfs, played)
            yield self._turn_down(frame, dbfs)

    def _track_background(self, dbfs: float) -> None:
        # The quietest recent level, rising slowly: roughly the room's noise.
        if self.background_dbfs is None or dbfs < self.background_dbfs:
            self.background_dbfs = dbfs
        else:
            self.background_dbfs += (dbfs - self.background_dbfs) * 0.01

    def _turn_down(self, frame: Frame, dbfs: float) -> Frame:
        target = self.background_dbfs if self.background_dbfs is not None else BACKGROUND_DBFS
        gain = 10 ** (min(0.0, target - dbfs) / 20)
        return np.round(frame.astype(np.float64) * gain).astype(np.int16)


class GuardedSource:
    """A source factory (``PushToTalk.source_factory``) whose sources are guarded."""

    def __init__(self, factory: Callable[[], FrameSource], levels: PlaybackLevels) -> None:
        self.factory = factory
        self.levels = levels
        self.guards: deque[EchoGuard] = deque(maxlen=16)  # the latest sessions' guards

    def __call__(self) -> FrameSource:
        guard = EchoGuard(self.factory(), self.levels)
        self.guards.append(guard)
        return guard

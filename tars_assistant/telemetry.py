"""The data behind the system and latency panels. No Textual here.

- :class:`SystemSampler` reads CPU/RAM/GPU (``node_daemon.sysinfo.snapshot``) about once
  per interval in its own daemon thread and hands each reading to a callback; the TUI
  posts a message from it (``post_message`` is thread-safe). The UI thread never waits
  on NVML or psutil.
- :class:`LatencySeries` keeps a bounded, thread-safe series per latency stage.
- :func:`format_sparkline` draws a series as ``▁▂▃▄▅▆▇█``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psutil

from node_daemon import sysinfo
from node_daemon.sysinfo import SystemReading

log = logging.getLogger(__name__)

SnapshotFn = Callable[[], SystemReading]
ReadingCallback = Callable[[SystemReading], None]


class SystemSampler:
    """Samples the machine every ``interval_s`` seconds in a daemon thread.

    ``callback`` runs in the sampler's thread. If ``snapshot`` raises (a broken NVML
    driver, say), the sampler still delivers CPU and RAM from psutil with ``gpu_error``
    saying what failed, and keeps sampling; ``on_error`` hears about the exception.
    A callback that raises is logged and does not stop the sampler.
    """

    def __init__(
        self,
        callback: ReadingCallback,
        interval_s: float = 1.0,
        *,
        snapshot: SnapshotFn | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        self.interval_s = interval_s
        self._callback = callback
        self._snapshot = sysinfo.snapshot if snapshot is None else snapshot
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.latest: SystemReading | None = None
        self.samples = 0
        self.last_error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            # A fresh event per run: a thread stuck past stop() never resumes.
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="tars-system-sampler", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop and join; True when the thread has ended (a snapshot stuck in a driver
        call can outlive ``timeout``; the thread is a daemon and never blocks exit)."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> SystemSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample_once(self) -> SystemReading:
        """Take one reading now (in the caller's thread), with the same fallback."""
        try:
            return self._snapshot()
        except Exception as exc:
            self.last_error = exc
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:
                    log.exception("system sampler: on_error failed")
            return fallback_reading(f"GPU/system reading failed ({exc})")

    def _run(self, stop: threading.Event) -> None:
        if self._snapshot is sysinfo.snapshot:
            # psutil's first CPU percentage is 0.0: prime it so the first reading is real.
            psutil.cpu_percent(interval=None)
            if stop.wait(min(0.1, self.interval_s)):
                return
        while not stop.is_set():
            started = time.monotonic()
            try:
                reading = self.sample_once()
            except Exception:  # even the fallback failed (psutil broken)
                log.exception("system sampler: no reading")
            else:
                if stop.is_set():
                    break  # stopped meanwhile: deliver nothing after stop()
                self.latest = reading
                self.samples += 1
                try:
                    self._callback(reading)
                except Exception:
                    log.exception("system sampler: callback failed")
            elapsed = time.monotonic() - started
            stop.wait(max(0.0, self.interval_s - elapsed))


def fallback_reading(gpu_error: str) -> SystemReading:
    """CPU and RAM straight from psutil, for when the full snapshot failed."""
    vm = psutil.virtual_memory()
    return SystemReading(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        ram_used_mb=(vm.total - vm.available) / 2**20,
        ram_total_mb=vm.total / 2**20,
        rss_mb=psutil.Process().memory_info().rss / 2**20,
        gpus=[],
        gpu_error=gpu_error,
    )


# -- latency ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False


# The panel shows known stages in this order; other keys are accepted and shown after.
STAGES: dict[str, Stage] = {
    s.key: s
    for s in (
        Stage("stt_ms", "speech to text", "ms"),
        Stage("retrieval_ms", "retrieval", "ms"),
        Stage("node_rtt_ms", "node round trip", "ms"),
        Stage("ttft_ms", "first token", "ms"),
        Stage("tokens_per_s", "decode", "tok/s", higher_is_better=True),
        Stage("total_ms", "reply", "ms"),
        Stage("tts_sentence_ms", "first token to first sentence", "ms"),
        Stage("tts_audio_ms", "first sentence to its audio", "ms"),
        Stage("tts_rtf", "speech synthesis real-time factor", "x"),
        Stage("talk_turn_ms", "end of your speech to the first audio of the reply", "ms"),
    )
}


@dataclass(frozen=True)
class StageSummary:
    stage: str
    count: int
    last: float
    p50: float
    p95: float
    values: tuple[float, ...]  # oldest first, for the sparkline


class LatencySeries:
    """The last ``maxlen`` values of each stage. All methods are thread-safe."""

    def __init__(self, maxlen: int = 100) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._series: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, stage: str, value: float) -> None:
        """Add one value; NaN and infinities are ignored (a reply of zero tokens)."""
        value = float(value)
        if not math.isfinite(value):
            return
        with self._lock:
            series = self._series.get(stage)
            if series is None:
                series = self._series[stage] = deque(maxlen=self.maxlen)
            series.append(value)

    def record_many(self, values: Mapping[str, float | None]) -> None:
        """Record several stages at once; ``None`` values are skipped."""
        for stage, value in values.items():
            if value is not None:
                self.record(stage, value)

    def stages(self) -> list[str]:
        """Stages with values: known ones in panel order, then the rest by name."""
        with self._lock:
            present = set(self._series)
        return [k for k in STAGES if k in present] + sorted(present - STAGES.keys())

    def values(self, stage: str) -> list[float]:
        with self._lock:
            return list(self._series.get(stage, ()))

    def last(self, stage: str) -> float | None:
        with self._lock:
            series = self._series.get(stage)
            return series[-1] if series else None

    def percentile(self, stage: str, q: float) -> float | None:
        return percentile(self.values(stage), q)

    def p50(self, stage: str) -> float | None:
        return self.percentile(stage, 50)

    def p95(self, stage: str) -> float | None:
        return self.percentile(stage, 95)

    def summary(self, stage: str) -> StageSummary | None:
        values = self.values(stage)
        if not values:
            return None
        ordered = sorted(values)
        return StageSummary(
            stage=stage,
            count=len(values),
            last=values[-1],
            p50=_sorted_percentile(ordered, 50),
            p95=_sorted_percentile(ordered, 95),
            values=tuple(values),
        )

    def clear(self, stage: str | None = None) -> None:
        with self._lock:
            if stage is None:
                self._series.clear()
            else:
                self._series.pop(stage, None)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, not {q!r}")
    ordered = sorted(values)
    return _sorted_percentile(ordered, q) if ordered else None


def _sorted_percentile(ordered: list[float], q: float) -> float:
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


BLOCKS = "▁▂▃▄▅▆▇█"


def format_sparkline(
    values: Iterable[float],
    width: int,
    *,
    low: float | None = None,
    high: float | None = None,
) -> str:
    """The last ``width`` values as block characters, one per value, oldest first.

    The scale runs from ``low`` to ``high`` (default: the shown values' min and max);
    values outside are clamped; a flat series is drawn at mid height; a value that is
    not finite is a space.
    """
    if width <= 0:
        return ""
    shown = list(values)[-width:]
    finite = [v for v in shown if math.isfinite(v)]
    if not finite:
        return " " * len(shown)
    lo = min(finite) if low is None else low
    hi = max(finite) if high is None else high
    top = len(BLOCKS) - 1
    out = []
    for v in shown:
        if not math.isfinite(v):
            out.append(" ")
        elif hi <= lo:
            out.append(BLOCKS[top // 2])
        else:
            level = round((v - lo) / (hi - lo) * top)
            out.append(BLOCKS[min(max(level, 0), top)])
    return "".join(out)


__all__ = [
    "BLOCKS",
    "STAGES",
    "LatencySeries",
    "ReadingCallback",
    "SnapshotFn",
    "Stage",
    "StageSummary",
    "SystemSampler",
    "fallback_reading",
    "format_sparkline",
    "percentile",
]

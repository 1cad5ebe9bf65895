"""System sampler (real readings, injected faults) and latency series."""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable

import pytest

from node_daemon import sysinfo
from node_daemon.sysinfo import SystemReading
from tars_assistant.telemetry import (
    BLOCKS,
    LatencySeries,
    SystemSampler,
    format_sparkline,
    percentile,
)


class Collector:
    """A sampler callback that remembers readings and the thread they came from."""

    def __init__(self, fail_first: int = 0) -> None:
        self.readings: list[SystemReading] = []
        self.threads: set[str] = set()
        self.fail_first = fail_first
        self._cond = threading.Condition()

    def __call__(self, reading: SystemReading) -> None:
        with self._cond:
            self.threads.add(threading.current_thread().name)
            self.readings.append(reading)
            self._cond.notify_all()
            if len(self.readings) <= self.fail_first:
                raise RuntimeError("the app is shutting down")

    def wait_for(self, n: int, timeout: float = 5.0) -> list[SystemReading]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.readings) >= n, timeout), (
                f"only {len(self.readings)} of {n} readings in {timeout} s"
            )
            return list(self.readings)


def fresh_nvml(monkeypatch: pytest.MonkeyPatch, pynvml: object | None) -> None:
    """Make sysinfo.snapshot() see ``pynvml`` (None: not installed) from scratch."""
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    monkeypatch.setattr(sysinfo, "_nvml", sysinfo._Nvml())


def check_cpu_ram(reading: SystemReading) -> None:
    assert 0.0 <= reading.cpu_percent <= 100.0
    assert 0 < reading.ram_used_mb < reading.ram_total_mb
    assert reading.rss_mb > 1


def test_real_sampler_delivers_off_the_calling_thread() -> None:
    got = Collector()
    with SystemSampler(got, interval_s=0.2) as sampler:
        readings = got.wait_for(2)
        assert sampler.running
    assert not sampler.running
    assert threading.current_thread().name not in got.threads
    assert got.threads == {"tars-system-sampler"}
    for r in readings:
        check_cpu_ram(r)
        if r.gpus:  # a machine with an NVIDIA GPU and driver
            assert r.gpu_error is None and r.gpus[0].mem_total_mb > 0
        else:
            assert r.gpu_error is not None and r.gpu_error.startswith("no NVIDIA GPU")
    # Nothing is delivered after stop(): the last delivery is the latest reading.
    assert sampler.latest == got.readings[-1] and sampler.samples == len(got.readings)
    assert sampler.last_error is None


@pytest.mark.gpu
def test_real_sampler_reads_the_gpu() -> None:
    reading = sysinfo.snapshot()
    if not reading.gpus:
        pytest.skip(f"needs an NVIDIA GPU: {reading.gpu_error}")
    got = Collector()
    with SystemSampler(got, interval_s=0.2):
        gpu = got.wait_for(1)[0].gpus[0]
    assert gpu.name and 0 <= gpu.util_percent <= 100
    assert 0 < gpu.mem_used_mb <= gpu.mem_total_mb


def test_nvml_not_installed_still_reports_cpu_and_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_nvml(monkeypatch, None)  # import pynvml -> ImportError
    got = Collector()
    with SystemSampler(got, interval_s=0.2, snapshot=sysinfo.snapshot):
        (reading,) = got.wait_for(1)[:1]
    check_cpu_ram(reading)
    assert reading.gpus == []
    assert reading.gpu_error == "no NVIDIA GPU (nvidia-ml-py is not installed)"


def test_nvml_init_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def nvml_init() -> None:
        raise OSError("NVML Shared Library Not Found")

    fresh_nvml(monkeypatch, types.SimpleNamespace(nvmlInit=nvml_init))
    got = Collector()
    with SystemSampler(got, interval_s=0.2):
        reading = got.wait_for(1)[0]
    check_cpu_ram(reading)
    assert reading.gpu_error == "no NVIDIA GPU (NVML Shared Library Not Found)"


def test_snapshot_that_raises_falls_back_and_recovers() -> None:
    calls = 0

    def flaky() -> SystemReading:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("nvmlDeviceGetUtilizationRates: GPU is lost")
        return sysinfo.snapshot()

    errors: list[BaseException] = []
    got = Collector()
    with SystemSampler(got, interval_s=0.05, snapshot=flaky, on_error=errors.append) as sampler:
        readings = got.wait_for(3)
    for r in readings[:2]:
        check_cpu_ram(r)
        assert r.gpus == []
        assert r.gpu_error == (
            "GPU/system reading failed (nvmlDeviceGetUtilizationRates: GPU is lost)"
        )
    assert readings[2].gpu_error is None or "failed" not in readings[2].gpu_error
    assert [str(e) for e in errors] == ["nvmlDeviceGetUtilizationRates: GPU is lost"] * 2
    assert isinstance(sampler.last_error, RuntimeError)


def test_a_failing_callback_does_not_stop_sampling() -> None:
    got = Collector(fail_first=2)
    with SystemSampler(got, interval_s=0.05, snapshot=sysinfo.snapshot) as sampler:
        got.wait_for(4)
        assert sampler.running


def test_stop_is_prompt_with_a_long_interval() -> None:
    got = Collector()
    sampler = SystemSampler(got, interval_s=30.0)
    sampler.start()
    got.wait_for(1)
    started = time.monotonic()
    assert sampler.stop() is True
    assert time.monotonic() - started < 5.0  # against a 30 s interval
    assert not sampler.running
    assert len(got.readings) == 1
    sampler.start()  # restartable
    got.wait_for(2)
    assert sampler.stop()


def test_stop_gives_up_on_a_stuck_snapshot_and_delivers_nothing_after() -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck() -> SystemReading:
        entered.set()
        release.wait(10)
        return sysinfo.snapshot()

    got = Collector()
    sampler = SystemSampler(got, interval_s=0.05, snapshot=stuck)
    sampler.start()
    assert entered.wait(5)
    (thread,) = [t for t in threading.enumerate() if t.name == "tars-system-sampler"]
    started = time.monotonic()
    assert sampler.stop(timeout=0.2) is False
    assert time.monotonic() - started < 3.0  # gives up, against a snapshot stuck for 10 s
    assert thread.daemon  # never blocks interpreter exit
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert got.readings == [] and sampler.samples == 0


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SystemSampler(lambda r: None, interval_s=0)


# -- latency series --------------------------------------------------------------


def test_series_are_bounded_per_stage() -> None:
    series = LatencySeries(maxlen=5)
    for i in range(12):
        series.record("ttft_ms", i)
    series.record("tokens_per_s", 130.0)
    assert series.values("ttft_ms") == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert series.last("ttft_ms") == 11.0
    assert series.values("tokens_per_s") == [130.0]
    assert series.values("stt_ms") == [] and series.last("stt_ms") is None
    assert series.p50("stt_ms") is None


def test_percentiles_match_statistics() -> None:
    series = LatencySeries(maxlen=1000)
    for v in range(1, 101):
        series.record("ttft_ms", v)
    assert series.p50("ttft_ms") == pytest.approx(50.5)
    assert series.p95("ttft_ms") == pytest.approx(95.05)
    rng = random.Random(7)
    data = [rng.expovariate(0.01) for _ in range(257)]
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    assert percentile(data, 50) == pytest.approx(cuts[49])
    assert percentile(data, 95) == pytest.approx(cuts[94])
    assert percentile(data, 0) == min(data) and percentile(data, 100) == max(data)
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_summary_stages_and_skipped_values() -> None:
    series = LatencySeries()
    series.record_many({"zz_custom_ms": 1.0, "tokens_per_s": 120.0, "ttft_ms": None})
    series.record("ttft_ms", float("nan"))
    series.record("retrieval_ms", 12.0)
    series.record("retrieval_ms", 8.0)
    assert series.stages() == ["retrieval_ms", "tokens_per_s", "zz_custom_ms"]
    summary = series.summary("retrieval_ms")
    assert summary is not None
    assert (summary.count, summary.last, summary.p50, summary.values) == (2, 8.0, 10.0, (12.0, 8.0))
    assert series.summary("ttft_ms") is None
    series.clear("retrieval_ms")
    assert series.stages() == ["tokens_per_s", "zz_custom_ms"]
    series.clear()
    assert series.stages() == []


def test_series_threads() -> None:
    series = LatencySeries(maxlen=10_000)
    errors: list[BaseException] = []

    def work(n: int) -> Callable[[], None]:
        def run() -> None:
            try:
                for i in range(2000):
                    series.record("node_rtt_ms", float(n * 10_000 + i))
                    series.p95("node_rtt_ms") if i % 200 == 0 else None
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=work(n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    values = series.values("node_rtt_ms")
    assert len(values) == 8000 and len(set(values)) == 8000


# -- sparkline ---------------------------------------------------------------------


def test_sparkline_shape() -> None:
    assert format_sparkline(range(8), 8) == BLOCKS == "▁▂▃▄▅▆▇█"
    assert format_sparkline([8, 0, 8], 10) == "█▁█"
    assert format_sparkline(range(100), 4) == "▁▃▆█"  # the last four, rescaled
    assert format_sparkline([5.0, 5.0, 5.0], 3) == "▄▄▄"
    assert format_sparkline([], 5) == ""
    assert format_sparkline([1, 2], 0) == ""
    assert format_sparkline([1.0, float("nan"), 3.0], 3) == "▁ █"
    assert format_sparkline([float("nan")], 3) == " "
    # A fixed scale: zero-based, clamped above.
    assert format_sparkline([0, 50, 100, 200], 4, low=0, high=100) == "▁▅██"


def test_sparkline_length_and_monotonic_levels() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0, 1000) for _ in range(50)]
    line = format_sparkline(values, 30)
    assert len(line) == 30 and set(line) <= set(BLOCKS)
    shown = values[-30:]
    levels = [BLOCKS.index(c) for c in line]
    pairs = list(zip(shown, levels, strict=True))
    assert all(la <= lb for a, la in pairs for b, lb in pairs if a < b)  # order kept
    assert line[shown.index(max(shown))] == "█" and line[shown.index(min(shown))] == "▁"

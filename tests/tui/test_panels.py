"""Latency and system panels: real sampler, with and without NVML."""

from __future__ import annotations

import pytest

from node_daemon.sysinfo import GpuReading, SystemReading, snapshot
from tars_core.config import Config
from tars_tui.app import make_app
from tars_tui.widgets.panels import LatencyPanel, SystemPanel, describe_reading

from .conftest import wait_until

SIZE = (120, 40)


def panel_text(app, selector: str) -> str:  # type: ignore[no-untyped-def]
    assert app.chat is not None
    widget = app.chat.query_one(selector)
    return (
        str(widget.render())
        if isinstance(widget, SystemPanel)
        else str(widget.query_one("#latency-rows").render())
    )


async def test_system_panel_without_nvml_still_shows_cpu_and_ram(config: Config) -> None:
    if snapshot().gpus:
        pytest.skip("this machine has an NVIDIA GPU; see the gpu-marked test")
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        panel = app.chat.query_one("#system", SystemPanel)
        await wait_until(pilot, lambda: panel.reading is not None, what="a system sample")
        text = panel_text(app, "#system")
        assert "no NVIDIA GPU" in text
        assert "CPU" in text and "RAM" in text and "RSS" in text
        assert app.sampler.running  # sampling off the UI thread


@pytest.mark.gpu
async def test_system_panel_with_nvml_shows_each_gpu(config: Config) -> None:
    reading = snapshot()
    if not reading.gpus:
        pytest.skip(f"needs an NVIDIA GPU with NVML: {reading.gpu_error}")
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        panel = app.chat.query_one("#system", SystemPanel)
        await wait_until(pilot, lambda: panel.reading is not None, what="a system sample")
        text = panel_text(app, "#system")
        for gpu in reading.gpus:
            assert f"GPU{gpu.index}" in text and "util" in text and "GiB" in text


def test_gpu_readings_render_util_memory_temperature_power() -> None:
    reading = SystemReading(
        cpu_percent=12.5,
        ram_used_mb=8192,
        ram_total_mb=16384,
        rss_mb=300,
        gpus=[
            GpuReading(0, "NVIDIA H100", 87.0, 40960, 81920, 64.0, 310.0),
            GpuReading(1, "NVIDIA L4", 5.0, 512, 24576, None, None),
        ],
    )
    text = describe_reading(reading).plain
    assert "GPU0 NVIDIA H100" in text and "util  87%" in text and "40.0/80.0 GiB" in text
    assert "64°C" in text and "310 W" in text
    assert "GPU1 NVIDIA L4" in text and "0.5/24.0 GiB" in text  # no temp/power: left out
    assert "CPU   12.5%" in text and "RAM  8.0/16.0 GiB" in text


async def test_broken_nvml_is_reported_and_sampling_goes_on(config: Config) -> None:
    calls = 0

    def broken() -> SystemReading:
        """Fault injection: an NVML driver that fails on every read."""
        nonlocal calls
        calls += 1
        raise RuntimeError("NVML driver/library version mismatch")

    app = make_app(config, snapshot=broken)
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        panel = app.chat.query_one("#system", SystemPanel)
        await wait_until(pilot, lambda: panel.reading is not None, what="a fallback sample")
        text = panel_text(app, "#system")
        assert "mismatch" in text and "CPU" in text and "RAM" in text
        assert calls >= 1


async def test_latency_panel_fills_after_a_reply_and_panels_toggle(config: Config) -> None:
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        side = app.chat.query_one("#side")
        assert "TTFT" in panel_text(app, "#latency") and "—" in panel_text(app, "#latency")
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        app.chat.send("Hi")
        await wait_until(pilot, lambda: not app.chat.generating, what="reply")  # type: ignore[union-attr]
        await pilot.pause()
        ttft = app.session.latency.last("ttft_ms")
        assert ttft is not None
        assert f"{ttft:,.0f} ms" in panel_text(app, "#latency")
        for stage in ("speech→text", "retrieval", "node RTT"):
            assert stage in panel_text(app, "#latency")
        assert app.chat.query_one(LatencyPanel).query_one("#tps-sparkline").data  # type: ignore[attr-defined]
        assert side.display
        await pilot.press("f2")
        assert not side.display
        await pilot.press("f2")
        assert side.display

"""The `[ui]` config section: the terminal app. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting


@dataclass(frozen=True)
class UIConfig:
    show_panels: bool = setting(True, "Show the latency and system panels at start (F2 toggles).")
    repaint_hz: float = setting(
        10.0,
        "Most transcript repaints per second while a reply streams (each costs the "
        "generating thread some time on small machines).",
        min=1.0,
        max=120.0,
    )
    telemetry_interval_s: float = setting(
        1.0, "How often the system panel samples GPU/CPU/RAM.", min=0.2, max=60.0
    )
    sparkline_points: int = setting(30, "Replies shown in the latency sparkline.", min=5, max=500)

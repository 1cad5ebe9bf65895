"""The chat screen's panels: a side column when the terminal is wide enough, else a
one-line summary with the panels as an F2 overlay. Keeps the latest readings so the
overlay opens filled."""

from __future__ import annotations

import contextlib

from textual.css.query import NoMatches
from textual.screen import Screen

from node_daemon.sysinfo import SystemReading
from tars_assistant.node_link import NodeStatus
from tars_assistant.telemetry import LatencySeries
from tars_tui.screens.panels import PanelsOverlay
from tars_tui.widgets.panels import NodeView, PanelSummary, SidePanels

# Below this width the side column would squeeze the transcript.
NARROW_COLUMNS = 100


class PanelsControl:
    def __init__(self, screen: Screen[None], series: LatencySeries, *, node_enabled: bool) -> None:
        self.screen = screen
        self.series = series
        self.node_enabled = node_enabled
        self.system: SystemReading | None = None
        self.node: NodeView = ("", None, "waiting for the node…", None)
        self._overlay: PanelsOverlay | None = None

    @property
    def narrow(self) -> bool:
        return self.screen.has_class("-narrow")

    def fit_width(self, width: int) -> None:
        self.screen.set_class(width < NARROW_COLUMNS, "-narrow")

    def _open_overlay(self) -> PanelsOverlay | None:
        overlay = self._overlay
        return overlay if overlay is not None and overlay.is_attached else None

    def show_system(self, reading: SystemReading) -> None:
        self.system = reading
        # At exit the children can go before the screen's unmount: nothing to show.
        with contextlib.suppress(NoMatches):
            self.screen.query_one(SidePanels).show_system(reading)
            summary = self.screen.query_one(PanelSummary)
            summary.system = reading
            summary.refresh_figures()
        if overlay := self._open_overlay():
            overlay.panels.show_system(reading)

    def show_node(self, status: NodeStatus | None) -> None:
        live = (
            status is not None and status.system is not None and status.state in ("local", "remote")
        )
        if status is not None:
            self.node = (
                status.state,
                status.system if live else None,
                status.error or status.label,
                status.storage_error if live else None,
            )
        with contextlib.suppress(NoMatches):
            self.screen.query_one(SidePanels).show_node(self.node)
            summary = self.screen.query_one(PanelSummary)
            summary.node_rtt_ms = status.rtt_ms if live and status is not None else None
            summary.refresh_figures()
        if overlay := self._open_overlay():
            overlay.panels.show_node(self.node)

    def refresh(self) -> None:
        with contextlib.suppress(NoMatches):
            self.screen.query_one(SidePanels).refresh_figures()
            self.screen.query_one(PanelSummary).refresh_figures()
        if overlay := self._open_overlay():
            overlay.panels.refresh_figures()

    def toggle(self) -> None:
        """F2: hide or show the column; on a narrow terminal, open the overlay."""
        if not self.narrow:
            self.screen.toggle_class("-panels-hidden")
            return
        self._overlay = PanelsOverlay(
            self.series, node_enabled=self.node_enabled, system=self.system, node=self.node
        )
        self.screen.app.push_screen(self._overlay)

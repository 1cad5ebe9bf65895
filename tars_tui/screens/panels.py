"""The side panels as an overlay (F2 on a terminal too narrow for the side column)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen

from node_daemon.sysinfo import SystemReading
from tars_assistant.telemetry import LatencySeries
from tars_tui.widgets.panels import NodeView, SidePanels


class PanelsOverlay(ModalScreen[None]):
    DEFAULT_CSS = """
    PanelsOverlay { align: right top; background: $background 40%; }
    PanelsOverlay SidePanels { background: $surface; border-left: vkey $accent; }
    """
    BINDINGS = [
        Binding("f2", "dismiss", "Close panels"),
        Binding("escape", "dismiss", "Close panels"),
    ]

    def __init__(
        self,
        series: LatencySeries,
        *,
        node_enabled: bool,
        system: SystemReading | None,
        node: NodeView | None,
    ) -> None:
        super().__init__()
        self.panels = SidePanels(series, node_enabled=node_enabled, id="overlay-panels")
        self._system = system
        self._node = node

    def compose(self) -> ComposeResult:
        yield self.panels

    def on_mount(self) -> None:
        if self._system is not None:
            self.panels.show_system(self._system)
        if self._node is not None:
            self.panels.show_node(self._node)
        self.panels.refresh_figures()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)

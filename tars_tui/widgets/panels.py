"""The side panels: latency of each stage, and the machines' GPU/CPU/RAM."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from node_daemon.sysinfo import SystemReading
from tars_assistant.telemetry import LatencySeries

# Stages later issues fill in (speech-to-text, retrieval, node round trip) show
# as "—" until they report.
STAGE_LABELS = {
    "ttft_ms": ("TTFT", "ms"),
    "tokens_per_s": ("decode", "tok/s"),
    "stt_ms": ("speech→text", "ms"),
    "stt_partial_ms": ("stt partials", "ms"),
    # Spoken replies: first token -> first sentence complete -> its first audio.
    "tts_sentence_ms": ("tok→sentence", "ms"),
    "tts_audio_ms": ("sent.→audio", "ms"),
    "tts_rtf": ("speech RTF", "×"),
    "talk_turn_ms": ("you→TARS", "ms"),  # hands-free: end of your speech -> first audio
    "retrieval_ms": ("retrieval", "ms"),
    "node_rtt_ms": ("node RTT", "ms"),
    # A model server that reports its prompt time: the rest of the TTFT is the network
    # and its queue (http_engine.py). Shown only once a reply has it.
    "network_ms": ("network", "ms"),
}
ONLY_WHEN_REPORTED = ("network_ms",)


class LatencyPanel(Vertical):
    DEFAULT_CSS = """
    LatencyPanel { height: auto; border: round $primary 60%; border-title-color: $text; }
    LatencyPanel Sparkline { height: 2; margin: 0 1; }
    LatencyPanel #latency-rows { padding: 0 1; }
    """

    def __init__(self, series: LatencySeries, id: str | None = None) -> None:
        super().__init__(id=id)
        self.series = series
        self.border_title = "Latency"

    def compose(self) -> ComposeResult:
        yield Static(self._rows(), id="latency-rows")
        yield Sparkline([], id="tps-sparkline")

    def refresh_figures(self) -> None:
        self.query_one("#latency-rows", Static).update(self._rows())
        self.query_one("#tps-sparkline", Sparkline).data = list(self.series.values("tokens_per_s"))

    def _rows(self) -> str:
        lines = []
        for stage, (label, unit) in STAGE_LABELS.items():
            last = self.series.last(stage)
            if last is None and stage in ONLY_WHEN_REPORTED:
                continue
            spec = ".2f" if stage == "tts_rtf" else ",.0f"  # a real-time factor is ~0.1
            value = f"{last:{spec}} {unit}" if last is not None else "—"
            p50 = self.series.percentile(stage, 50)
            extra = (
                f" [dim]p50 {p50:{spec}}[/]" if p50 is not None and stage != "tokens_per_s" else ""
            )
            lines.append(f"{label:<12} [b]{value}[/]{extra}")
        lines.append("[dim]tok/s, recent replies:[/]")
        return "\n".join(lines)


def describe_reading(reading: SystemReading) -> Text:
    lines = []
    if reading.gpus:
        for g in reading.gpus:
            temp = f" {g.temperature_c:.0f}°C" if g.temperature_c is not None else ""
            power = f" {g.power_w:.0f} W" if g.power_w is not None else ""
            lines.append(f"[b]GPU{g.index}[/] {escape(g.name)}")
            lines.append(
                f"  util {g.util_percent:3.0f}%  mem {g.mem_used_mb / 1024:.1f}/"
                f"{g.mem_total_mb / 1024:.1f} GiB{temp}{power}"
            )
    else:
        lines.append(f"[dim]{escape(reading.gpu_error or 'no NVIDIA GPU')}[/]")
    lines.append(f"CPU  {reading.cpu_percent:5.1f}%")
    lines.append(f"RAM  {reading.ram_used_mb / 1024:.1f}/{reading.ram_total_mb / 1024:.1f} GiB")
    lines.append(f"RSS  {reading.rss_mb:,.0f} MiB")
    for part, build in reading.builds.items():
        lines.append(f"[dim]{escape(part)}: {escape(build)}[/]")
    return Text.from_markup("\n".join(lines))


# The PC2 panel's input: the node's state, its machine (None: not reachable), what
# to show instead, and a storage fault it reports (None: none).
NodeView = tuple[str, SystemReading | None, str, str | None]


class SystemPanel(Static):
    DEFAULT_CSS = """
    SystemPanel { height: auto; border: round $primary 60%; padding: 0 1; }
    """

    def __init__(self, host: str, id: str | None = None) -> None:
        super().__init__("[dim]sampling…[/]", id=id)
        self.border_title = f"System · {host}"
        self.reading: SystemReading | None = None
        self.problem: str | None = None

    def show(self, reading: SystemReading, problem: str | None = None) -> None:
        """The machine's figures; ``problem`` (a storage fault) goes first, in red."""
        self.reading = reading
        self.problem = problem
        text = describe_reading(reading)
        if problem:
            text = Text.assemble(Text(f"⚠ {problem}\n", style="bold red"), text)
        self.update(text)

    def show_unavailable(self, why: str) -> None:
        self.reading = self.problem = None
        self.update(Text(why, style="dim"))


class SidePanels(Vertical):
    """Latency and both machines' panels: the side column, or the F2 overlay on a
    narrow terminal. Keeps the latest readings so a new instance starts filled."""

    DEFAULT_CSS = """
    SidePanels { width: 42; height: auto; }
    """

    def __init__(self, series: LatencySeries, *, node_enabled: bool, id: str | None = None) -> None:
        super().__init__(id=id)
        self.series = series
        self.node_enabled = node_enabled

    def compose(self) -> ComposeResult:
        yield LatencyPanel(self.series, id="latency")
        yield SystemPanel("PC1", id="system")
        node = SystemPanel("PC2 node", id="system-node")
        node.display = self.node_enabled
        yield node

    def show_system(self, reading: SystemReading) -> None:
        self.query_one("#system", SystemPanel).show(reading)

    def show_node(self, view: NodeView) -> None:
        state, system, why, problem = view
        panel = self.query_one("#system-node", SystemPanel)
        if system is not None:
            panel.border_title = f"System · PC2 node ({state})"
            panel.show(system, problem)
        else:
            panel.show_unavailable(why)
        self.refresh_figures()

    def refresh_figures(self) -> None:
        self.query_one(LatencyPanel).refresh_figures()


class PanelSummary(Static):
    """The panels in one line, for terminals too narrow for the side column."""

    DEFAULT_CSS = """
    PanelSummary { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, series: LatencySeries, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.series = series
        self.system: SystemReading | None = None
        self.node_rtt_ms: float | None = None

    def refresh_figures(self) -> None:
        self.update(summary_line(self.series, self.system, self.node_rtt_ms))


def summary_line(
    series: LatencySeries, system: SystemReading | None, node_rtt_ms: float | None
) -> Text:
    def figure(value: float | None, unit: str, digits: int = 0) -> str:
        return f"{value:,.{digits}f} {unit}" if value is not None else "—"

    gpu = "—"
    if system is not None and system.gpus:
        gpu = " ".join(f"{g.util_percent:.0f}%" for g in system.gpus)
    elif system is not None:
        gpu = "none"
    parts = [
        f"TTFT {figure(series.last('ttft_ms'), 'ms')}",
        f"{figure(series.last('tokens_per_s'), 'tok/s')}",
        f"node {figure(node_rtt_ms, 'ms', 1)}",
        f"GPU {gpu}",
        "F2 panels",
    ]
    return Text("  ·  ".join(parts))

"""/ingest with a progress bar: counts as files go, unreadable ones listed with the
reason. Esc stops after the current file (what was sent stays); the screen closes
with the report."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Log, ProgressBar

from memory.documents import IngestReport, Progress
from memory.service import Memory
from tars_tui.memory_views import scope_name


class IngestScreen(ModalScreen[IngestReport | None]):
    DEFAULT_CSS = """
    IngestScreen { align: center middle; }
    IngestScreen > Vertical { width: 80%; max-width: 110; height: 70%;
                              border: thick $accent; background: $surface; padding: 0 1; }
    IngestScreen ProgressBar { margin: 1 0; }
    IngestScreen Log { height: 1fr; }
    IngestScreen #counts { height: 1; }
    """
    BINDINGS = [Binding("escape", "close", "Close / stop")]

    def __init__(self, memory: Memory, path: Path, project_id: int | None) -> None:
        super().__init__()
        self.memory = memory
        self.path = path
        self.project_id = project_id
        self.report: IngestReport | None = None
        self.counts = {"added": 0, "updated": 0, "unchanged": 0, "failed": 0}

    def compose(self) -> ComposeResult:
        with Vertical():
            where = scope_name(self.memory, self.project_id)
            yield Label(f"[b]Ingesting[/] {self.path} into {where}")
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Label("reading…", id="counts")
            yield Log(id="log")

    def on_mount(self) -> None:
        self.run_ingest()

    def progressed(self, p: Progress) -> None:
        self.counts[p.outcome] = self.counts.get(p.outcome, 0) + 1
        self.query_one(ProgressBar).update(total=p.total, progress=p.done)
        c = self.counts
        self.query_one("#counts", Label).update(
            f"{p.done}/{p.total} · {c['added']} added · {c['updated']} updated · "
            f"{c['unchanged']} unchanged · {c['failed']} unreadable"
        )
        if p.outcome != "unchanged":
            self.query_one(Log).write_line(f"{p.outcome:<9} {p.path}")

    @work(exclusive=True, group="ingest", exit_on_error=False)
    async def run_ingest(self) -> None:
        report = await self.memory.documents.ingest(
            self.path, project_id=self.project_id, on_progress=self.progressed
        )
        self.report = report
        log = self.query_one(Log)
        for problem in report.failed:
            log.write_line(f"✗ {problem.path}: {problem.reason}")
        log.write_line(f"done: {report.summary()} · Esc closes")
        bar = self.query_one(ProgressBar)
        if bar.total is None:
            bar.update(total=max(report.total, 1), progress=max(report.total, 1))

    def action_close(self) -> None:
        self.workers.cancel_group(self, "ingest")
        self.dismiss(self.report)


__all__ = ["IngestScreen"]

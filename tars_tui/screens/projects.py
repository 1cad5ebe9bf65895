"""The /projects screen: the list with counts and last activity, and the highlighted
project's detail (description, dated summary, conversations, documents).

Enter switches to the highlighted project (the screen closes with its id);
``n`` creates, ``r`` renames, ``a`` archives or unarchives, ``s`` has the local
model write the summary, ``h`` shows archived projects too.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Markdown

from memory.project_store import ProjectError, ProjectInfo, Summarizer
from memory.service import Memory
from tars_assistant.model_gate import GateClosed
from tars_tui.memory_views import project_details, when

Editing = Literal["new", "rename"]


class ProjectsScreen(ModalScreen[int | None]):
    DEFAULT_CSS = """
    ProjectsScreen { align: center middle; }
    ProjectsScreen > Vertical { width: 95%; height: 90%; border: thick $accent;
                                background: $surface; padding: 0 1; }
    ProjectsScreen #panes { height: 1fr; }
    ProjectsScreen DataTable { width: 3fr; }
    ProjectsScreen #detail { width: 2fr; border-left: solid $primary 50%; padding: 0 1; }
    ProjectsScreen #name { display: none; }
    ProjectsScreen #name.-editing { display: block; }
    ProjectsScreen #hint { color: $text-muted; height: 1; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("n", "new", "New"),
        Binding("r", "rename", "Rename"),
        Binding("a", "archive", "Archive/unarchive"),
        Binding("s", "summarize", "Summarise"),
        Binding("h", "toggle_archived", "Archived"),
    ]

    def __init__(self, memory: Memory, active: int, summarizer: Summarizer | None = None) -> None:
        super().__init__()
        self.memory = memory
        self.active = active
        self.summarizer = summarizer
        self.show_archived = False
        self.infos: list[ProjectInfo] = []
        self.editing: Editing | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Projects[/] — Enter switches", id="title")
            with Horizontal(id="panes"):
                table: DataTable[str] = DataTable(id="table", cursor_type="row")
                yield table
                with VerticalScroll(id="detail"):
                    yield Markdown("", id="detail-text")
            yield Input(id="name")
            yield Label("", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "project", "conversations", "memories", "documents", "last activity")
        self.reload(select=self.active)
        table.focus()

    # -- content ------------------------------------------------------------------

    def reload(self, select: int | None = None) -> None:
        current = self.current()
        keep = select if select is not None else (current.id if current else None)
        self.infos = self.memory.projects.overview(include_archived=self.show_archived)
        table = self.query_one(DataTable)
        table.clear()
        for info in self.infos:
            mark = "▶" if info.id == self.active else ""
            if info.project.archived:
                mark += " archived"
            table.add_row(
                mark,
                info.name,
                str(info.conversations),
                str(info.memories),
                str(info.documents),
                when(info.last_activity),
                key=str(info.id),
            )
        ids = [i.id for i in self.infos]
        if keep in ids:
            table.move_cursor(row=ids.index(keep))
        self.show_detail()

    def current(self) -> ProjectInfo | None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        return self.infos[row] if self.infos and 0 <= row < len(self.infos) else None

    def show_detail(self) -> None:
        info = self.current()
        text = project_details(self.memory, info.id) if info else "*No project.*"
        self.query_one("#detail-text", Markdown).update(text)

    def hint(self, text: str) -> None:
        self.query_one("#hint", Label).update(text)

    @on(DataTable.RowHighlighted)
    def highlighted(self, _: DataTable.RowHighlighted) -> None:
        self.show_detail()

    @on(DataTable.RowSelected)
    def selected(self, _: DataTable.RowSelected) -> None:
        info = self.current()
        if info is None:
            return
        if info.project.archived:
            self.hint("archived: press a to unarchive it first")
            return
        self.dismiss(info.id)

    # -- editing names ---------------------------------------------------------------

    def _edit(self, mode: Editing, value: str, placeholder: str) -> None:
        self.editing = mode
        name = self.query_one("#name", Input)
        name.value, name.placeholder = value, placeholder
        name.add_class("-editing")
        name.focus()

    def _stop_editing(self) -> None:
        self.editing = None
        name = self.query_one("#name", Input)
        name.remove_class("-editing")
        self.query_one(DataTable).focus()

    def action_new(self) -> None:
        self._edit("new", "", "name of the new project, Enter creates, Esc cancels")

    def action_rename(self) -> None:
        info = self.current()
        if info is not None:
            self._edit("rename", info.name, "new name, Enter renames, Esc cancels")

    @on(Input.Submitted, "#name")
    def name_submitted(self, event: Input.Submitted) -> None:
        mode, info = self.editing, self.current()
        try:
            if mode == "new":
                project = self.memory.projects.create(event.value)
                self.hint(f"created “{project.name}” · Enter switches to it")
                self._stop_editing()
                self.reload(select=project.id)
            elif mode == "rename" and info is not None:
                project = self.memory.projects.rename(info.id, event.value)
                self.hint(f"renamed “{info.name}” to “{project.name}”")
                self._stop_editing()
                self.reload(select=project.id)
        except ProjectError as exc:
            self.hint(f"⚠ {exc}")

    # -- other actions ----------------------------------------------------------------

    def action_close(self) -> None:
        if self.editing is not None:
            self._stop_editing()
            self.hint("")
            return
        self.dismiss(None)

    def action_archive(self) -> None:
        info = self.current()
        if info is None:
            return
        archive = not info.project.archived
        if archive and info.id == self.active:
            self.hint("switch to another project before archiving this one")
            return
        try:
            self.memory.projects.archive(info.id, archive)
        except ProjectError as exc:
            self.hint(f"⚠ {exc}")
            return
        self.hint(f"“{info.name}” {'archived' if archive else 'unarchived'}")
        self.reload()

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        self.reload()

    def action_summarize(self) -> None:
        info = self.current()
        if info is None:
            return
        if self.summarizer is None:
            self.hint("no model to write summaries with")
            return
        self.hint(f"summarising “{info.name}” with the local model…")
        self.summarize(info.id)

    @work(exclusive=True, group="summary", exit_on_error=False)
    async def summarize(self, project_id: int) -> None:
        assert self.summarizer is not None
        try:
            await asyncio.to_thread(self.memory.projects.summarize, project_id, self.summarizer)
        except GateClosed:
            return  # the app is exiting
        except ProjectError as exc:
            self.hint(f"⚠ {exc}")
            return
        self.hint("summary written")
        self.reload(select=project_id)


__all__ = ["ProjectsScreen"]

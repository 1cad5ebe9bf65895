"""The /memory browser: list, search, open, forget (with undo), pin.

Memories of the active project and the global scope, or of every project
(``a``), newest first. Typing in the search box and Enter searches by meaning,
words or both (the mode selector); Esc in the box goes back to the list. Space
marks rows; ``f`` forgets the marked ones (or the highlighted one), ``u``
restores the last forgotten batch until the screen closes, ``p`` pins or unpins.

:func:`push_memory_view` is how the chat screen shows the memory commands' views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Markdown, Select

from memory.memory_store import MemoryRecord
from memory.retrieval import SEARCH_MODES, SearchMode
from memory.semantic import MEMORY_KINDS
from memory.service import Memory
from tars_assistant.model_gate import yielding_summarizer
from tars_tui.commands.memory import open_at_message, switch_project
from tars_tui.memory_views import (
    IngestView,
    MemoryHost,
    MemoryView,
    MessageHit,
    MessageHitsView,
    ProjectsView,
    View,
    memory_details,
    scope_name,
    shorten,
    when,
)

if TYPE_CHECKING:
    from memory.documents import IngestReport

LIST_LIMIT = 500
SEARCH_K = 30


class MemoryScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    MemoryScreen { align: center middle; }
    MemoryScreen > Vertical { width: 95%; height: 90%; border: thick $accent;
                              background: $surface; padding: 0 1; }
    MemoryScreen #bar { height: auto; }
    MemoryScreen #query { width: 1fr; }
    MemoryScreen #mode { width: 18; }
    MemoryScreen DataTable { height: 1fr; }
    MemoryScreen #detail { height: 12; border-top: solid $primary 50%; }
    MemoryScreen #hint { color: $text-muted; height: 1; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("space", "mark", "Mark", show=True),
        Binding("f", "forget", "Forget"),
        Binding("u", "undo", "Undo forget"),
        Binding("p", "pin", "Pin/unpin"),
        Binding("a", "toggle_scope", "All projects"),
        Binding("slash", "focus_search", "Search"),
    ]

    def __init__(
        self, memory: Memory, project_id: int, *, all_projects: bool = False, query: str = ""
    ) -> None:
        super().__init__()
        self.memory = memory
        self.project_id = project_id
        self.all_projects = all_projects
        self.initial_query = query
        self.marked: set[str] = set()
        self.undo_stack: list[list[str]] = []
        self.shown: list[str] = []  # ids in table order
        self.searching: str = ""  # the query whose results are shown; "" = the list

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("", id="title")
            with Horizontal(id="bar"):
                yield Input(placeholder="search memories, Enter", id="query")
                yield Select(
                    [(m, m) for m in SEARCH_MODES],
                    value=self.memory.config.recall_mode,
                    allow_blank=False,
                    id="mode",
                )
            table: DataTable[str] = DataTable(id="table", cursor_type="row", zebra_stripes=True)
            yield table
            with VerticalScroll(id="detail"):
                yield Markdown("", id="detail-text")
            yield Label("", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "id", "date", "project", "kind", "text")
        if self.initial_query:
            self.query_one("#query", Input).value = self.initial_query
            self.run_search(self.initial_query)
        else:
            self.show_list()
        table.focus()

    # -- filling the table -----------------------------------------------------

    def _title(self) -> str:
        scope = (
            "all projects"
            if self.all_projects
            else f"{scope_name(self.memory, self.project_id)} + global"
        )
        what = f"search “{self.searching}”" if self.searching else "newest first"
        return f"[b]Memories[/] — {scope} — {what}"

    def show_list(self) -> None:
        self.searching = ""
        records = self.memory.store.list_memories(
            self.project_id, all_projects=self.all_projects, limit=LIST_LIMIT
        )
        self._fill([(r, None) for r in records])
        self.hint(f"{len(records)} memories · {self.memory.store.pending_count()} waiting")

    def _fill(self, rows: list[tuple[MemoryRecord, float | None]]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.shown = []
        for record, similarity in rows:
            self.shown.append(record.id)
            table.add_row(*self._cells(record, similarity), key=record.id)
        self.query_one("#title", Label).update(self._title())
        self.show_detail()

    def _cells(self, record: MemoryRecord, similarity: float | None) -> tuple[str, ...]:
        mark = "✓" if record.id in self.marked else ""
        if record.pinned:
            mark += "📌"
        if not record.active:
            mark += "✗"
        date = when(record.created_at)
        if similarity is not None:
            date = f"{date} · {similarity:.2f}"
        return (
            mark,
            self.memory.store.short_id(record.id),
            date,
            scope_name(self.memory, record.project_id),
            record.kind,
            shorten(record.text, 80),
        )

    def _refresh_row(self, memory_id: str) -> None:
        record = self.memory.store.get_memory(memory_id)
        if record is None or memory_id not in self.shown:
            return
        table = self.query_one(DataTable)
        for column, value in zip(table.columns, self._cells(record, None)[:2], strict=False):
            table.update_cell(memory_id, column, value)

    def current(self) -> MemoryRecord | None:
        table = self.query_one(DataTable)
        if not self.shown or table.cursor_row < 0 or table.cursor_row >= len(self.shown):
            return None
        return self.memory.store.get_memory(self.shown[table.cursor_row])

    def show_detail(self) -> None:
        record = self.current()
        text = memory_details(self.memory, record) if record else "*Nothing selected.*"
        self.query_one("#detail-text", Markdown).update(text)

    def hint(self, text: str) -> None:
        self.query_one("#hint", Label).update(text)

    # -- search ------------------------------------------------------------------

    @on(Input.Submitted, "#query")
    def submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        if query:
            self.run_search(query)
        else:
            self.show_list()
        self.query_one(DataTable).focus()

    @work(exclusive=True, group="memory-search", exit_on_error=False)
    async def run_search(self, query: str) -> None:
        mode: SearchMode = self.query_one("#mode", Select).value  # type: ignore[assignment]
        self.hint(f"searching ({mode})…")
        outcome = await self.memory.semantic.search(
            query,
            project_id=self.project_id,
            scope="all" if self.all_projects else "project",
            mode=mode,
            k=SEARCH_K,
            kinds=MEMORY_KINDS,
        )
        if outcome.error:
            self.hint(f"⚠ search failed: {outcome.error}")
            return
        records = self.memory.store.get_memories([h.id for h in outcome.hits])
        rows = [(records[h.id], h.similarity) for h in outcome.hits if h.id in records]
        self.searching = query
        self._fill(rows)
        self.hint(f"{len(rows)} found by {mode} in {outcome.latency_ms:.0f} ms")

    # -- actions --------------------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def highlighted(self, _: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def action_close(self) -> None:
        query = self.query_one("#query", Input)
        if query.has_focus and (query.value or self.searching):
            query.value = ""
            self.show_list()
            self.query_one(DataTable).focus()
            return
        self.dismiss(None)

    def action_focus_search(self) -> None:
        self.query_one("#query", Input).focus()

    def action_mark(self) -> None:
        record = self.current()
        if record is None:
            return
        self.marked ^= {record.id}
        self._refresh_row(record.id)
        self.hint(f"{len(self.marked)} marked · f forgets them")

    def action_forget(self) -> None:
        ids = [i for i in self.shown if i in self.marked]
        if not ids:
            record = self.current()
            ids = [record.id] if record else []
        done = self.memory.semantic.forget(ids)
        if not done:
            self.hint("nothing to forget")
            return
        self.undo_stack.append(done)
        self.marked -= set(done)
        for memory_id in done:
            self._refresh_row(memory_id)
        self.show_detail()
        self.hint(f"forgot {len(done)} · u undoes until this screen closes")

    def action_undo(self) -> None:
        if not self.undo_stack:
            self.hint("nothing to undo")
            return
        done = self.memory.semantic.restore(self.undo_stack.pop())
        for memory_id in done:
            self._refresh_row(memory_id)
        self.show_detail()
        self.hint(f"restored {len(done)}")

    def action_pin(self) -> None:
        record = self.current()
        if record is None or not record.active:
            return
        self.memory.semantic.pin(record.id, not record.pinned)
        self._refresh_row(record.id)
        self.show_detail()
        self.hint("pinned: always in context" if not record.pinned else "unpinned")

    def action_toggle_scope(self) -> None:
        self.all_projects = not self.all_projects
        if self.searching:
            self.run_search(self.searching)
        else:
            self.show_list()


class ScreenHost(MemoryHost, Protocol):
    """The chat screen, as the memory views need it."""

    @property
    def app(self) -> App[Any]: ...


def push_memory_view(host: ScreenHost, view: View) -> bool:
    """Show a memory command's view as a screen on ``host``'s app (the chat screen's
    ``show_view``). False when memory is off."""
    from tars_tui.screens.history_search import HistorySearchScreen
    from tars_tui.screens.ingest import IngestScreen
    from tars_tui.screens.projects import ProjectsScreen

    memory = host.memory
    if memory is None:
        return False
    app = host.app
    if isinstance(view, MemoryView):
        app.push_screen(
            MemoryScreen(memory, view.project_id, all_projects=view.all_projects, query=view.query)
        )
    elif isinstance(view, ProjectsView):
        session = host.session

        def switched(project_id: int | None) -> None:
            if project_id is not None and memory is not None:
                switch_project(host, memory, project_id)
            else:
                host.reload_view()  # a rename shows in the header

        tokens = memory.config.summary_tokens
        summarizer = yielding_summarizer(session.engine, session.model_gate, tokens)
        app.push_screen(ProjectsScreen(memory, session.project_id, summarizer), switched)
    elif isinstance(view, IngestView):

        def ingested(report: IngestReport | None) -> None:
            if report is not None:
                host.say(f"Ingested {view.path}: {report.summary()}")

        app.push_screen(IngestScreen(memory, view.path, view.project_id), ingested)
    elif isinstance(view, MessageHitsView):

        def picked(hit: MessageHit | None) -> None:
            if hit is not None and memory is not None:
                open_at_message(host, memory, hit.message_id)

        app.push_screen(HistorySearchScreen(view.query, list(view.hits)), picked)
    else:
        return False
    return True


__all__ = ["MemoryScreen", "ScreenHost", "push_memory_view"]

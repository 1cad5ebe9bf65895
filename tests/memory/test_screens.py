"""The memory screens, in a tiny host app that loads the real stylesheet (real node,
real model, real SQLite)."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Label, Markdown, OptionList, ProgressBar, Static

from memory.conversation_store import Conversation
from memory.service import Memory
from tars_assistant.session import ChatSession
from tars_tui.commands import Style
from tars_tui.commands.memory import (
    IngestView,
    MessageHit,
    MessageHitsView,
    ProjectsView,
    View,
)
from tars_tui.screens.history_search import HistorySearchScreen
from tars_tui.screens.ingest import IngestScreen
from tars_tui.screens.memory import MemoryScreen, push_memory_view
from tars_tui.screens.projects import ProjectsScreen

from .pdf import make_pdf

pytestmark = pytest.mark.slow
SIZE = (120, 40)
STYLESHEET = Path(__file__).resolve().parents[2] / "tars_tui" / "app.tcss"


class HostScreen(Screen[None]):
    """Stands in for the chat screen: a MemoryHost whose views are the real screens."""

    def __init__(self, session: ChatSession, memory: Memory) -> None:
        super().__init__()
        self.session = session
        self.memory: Memory | None = memory
        self.said: list[str] = []
        self.reloads = 0

    def compose(self) -> ComposeResult:
        yield Static("host")

    def say(self, text: str, style: Style = "info") -> None:
        self.said.append(text)

    def clear_view(self) -> None:
        pass

    def reload_view(self) -> None:
        self.reloads += 1

    def focus_message(self, message_id: int) -> None:
        self.focused = message_id

    def choose_conversation(self, conversations: list[Conversation]) -> None:
        pass

    def switch_model(self, target: Path | str) -> None:
        pass

    def in_background(self, job: Callable[[], str]) -> None:
        self.say(job(), "markdown")

    def quit(self) -> None:
        self.app.exit()

    def run_async(self, job: Coroutine[Any, Any, None], name: str) -> None:
        self.run_worker(job, name=name, exit_on_error=False)

    def show_view(self, view: View) -> bool:
        return push_memory_view(self, view)


class HostApp(App[None]):
    CSS_PATH = STYLESHEET

    def __init__(self, session: ChatSession, memory: Memory) -> None:
        super().__init__()
        self.host = HostScreen(session, memory)
        self.results: list[object] = []

    def on_mount(self) -> None:
        self.push_screen(self.host)

    def open(self, screen: Screen[Any]) -> None:
        self.push_screen(screen, self.results.append)


async def wait_until(pilot: Pilot[None], predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def rows(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_memory_screen_browses_searches_forgets_with_undo_and_pins(
    memory: Memory, session: ChatSession
) -> None:
    rent = memory.semantic.remember("Our landlord collects the rent on the 3rd.", project_id=1)
    memory.semantic.remember("The dentist is on Thursday.", project_id=1)
    memory.semantic.remember("I like my coffee black.", project_id=None)
    other = memory.projects.create("other")
    memory.semantic.remember("The cabin key is in the drawer.", project_id=other.id)
    assert (await memory.semantic.flush()).pending == 0

    app = HostApp(session, memory)
    async with app.run_test(size=SIZE) as pilot:
        app.open(MemoryScreen(memory, 1))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MemoryScreen)
        table = screen.query_one(DataTable)
        assert len(rows(table)) == 3  # this project's and the global ones
        await pilot.press("a")
        assert len(rows(table)) == 4 and "all projects" in str(
            screen.query_one("#title", Label).render()
        )
        await pilot.press("a")

        await pilot.press("slash")
        screen.query_one("#query", Input).value = "when is the monthly housing payment due"
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(screen.searching), "search results")
        assert rows(table)[0][1] == memory.store.short_id(rent.id)
        detail = screen.query_one("#detail-text", Markdown)
        assert "landlord" in detail.source

        await pilot.press("space", "f")
        assert memory.store.get_memory(rent.id).forgotten_at is not None  # type: ignore[union-attr]
        assert "✗" in rows(table)[0][0]
        await pilot.press("u")
        assert memory.store.get_memory(rent.id).active  # type: ignore[union-attr]
        await pilot.press("p")
        assert memory.store.get_memory(rent.id).pinned  # type: ignore[union-attr]
        assert "📌" in rows(table)[0][0]
        await pilot.press("escape")
        assert app.screen is app.host


async def test_projects_screen_creates_renames_archives_summarises_and_switches(
    memory: Memory, session: ChatSession
) -> None:
    app = HostApp(session, memory)
    async with app.run_test(size=SIZE) as pilot:
        app.host.show_view(ProjectsView())
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ProjectsScreen)
        table = screen.query_one(DataTable)
        assert [r[1] for r in rows(table)] == ["default"]

        await pilot.press("n")
        screen.query_one("#name", Input).value = "boat"
        await pilot.press("enter")
        assert [r[1] for r in rows(table)] == ["boat", "default"]
        await pilot.press("r")
        screen.query_one("#name", Input).value = "ship"
        await pilot.press("enter")
        ship = memory.projects.find("ship")

        # A conversation, then a summary by the model, shown in the detail pane.
        conv = memory.conversations.create_conversation(ship.id)
        memory.conversations.add_message(conv, "user", "We are restoring a 1960s wooden sloop.")
        memory.conversations.add_message(conv, "assistant", "Start with the hull planks.")
        screen.reload(select=ship.id)
        await pilot.press("s")
        await wait_until(pilot, lambda: bool(memory.projects.get(ship.id).summary), "summary")
        await pilot.pause()
        summary = memory.projects.get(ship.id).summary
        assert summary in screen.query_one("#detail-text", Markdown).source

        await pilot.press("a")
        assert memory.projects.get(ship.id).archived
        assert [r[1] for r in rows(table)] == ["default"]
        await pilot.press("h")
        assert "archived" in rows(table)[0][0] and rows(table)[0][1] == "ship"
        table.move_cursor(row=0)
        await pilot.press("a")
        assert not memory.projects.get(ship.id).archived
        table.move_cursor(row=[r[1] for r in rows(table)].index("ship"))
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is app.host
        assert session.project_id == ship.id and app.host.reloads >= 1
        assert app.host.said[-1].startswith("Project “ship”: 1 conversations")


async def test_ingest_screen_shows_progress_and_problems(
    memory: Memory, session: ChatSession, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Bees\n\nBees dance to point at flowers.\n", encoding="utf-8")
    (docs / "b.pdf").write_bytes(make_pdf(["Honey is stored in wax cells."]))
    (docs / "c.bin").write_bytes(b"\x00\x00binary")
    app = HostApp(session, memory)
    async with app.run_test(size=SIZE) as pilot:
        app.host.show_view(IngestView(docs, 1))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, IngestScreen)
        await wait_until(pilot, lambda: screen.report is not None, "the ingest to finish")
        bar = screen.query_one(ProgressBar)
        assert (bar.total, bar.progress) == (3, 3)
        counts = str(screen.query_one("#counts", Label).render())
        assert "3/3 · 2 added" in counts and "1 unreadable" in counts
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.host
        assert "2 added, 0 updated, 0 unchanged, 1 unreadable" in app.host.said[-1]


async def test_history_search_screen_opens_the_conversation_at_the_message(
    memory: Memory, session: ChatSession
) -> None:
    conv = memory.conversations.create_conversation(title="bees")
    asked = memory.conversations.add_message(conv, "user", "Why do bees dance?")
    hit = MessageHit(asked, conv, "bees", "Why do bees dance?", time.time(), "keyword")
    app = HostApp(session, memory)
    async with app.run_test(size=SIZE) as pilot:
        app.host.show_view(MessageHitsView("bees", (hit,)))
        await pilot.pause()
        assert isinstance(app.screen, HistorySearchScreen)
        assert app.screen.query_one(OptionList).option_count == 1
        await pilot.press("enter")
        await pilot.pause()
        assert session.conversation is not None and session.conversation.id == conv
        assert f"at @{asked}" in app.host.said[-1]

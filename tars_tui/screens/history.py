"""A modal list of past conversations; picking one reopens it."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from memory.conversation_store import Conversation
from tars_tui.formatting import describe_conversation


class HistoryScreen(ModalScreen[int | None]):
    DEFAULT_CSS = """
    HistoryScreen { align: center middle; }
    HistoryScreen > Vertical { width: 80%; max-width: 100; height: 70%;
                               border: thick $accent; background: $surface; padding: 0 1; }
    HistoryScreen OptionList { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, conversations: list[Conversation]) -> None:
        super().__init__()
        self.conversations = conversations

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Past conversations[/] — Enter reopens, Esc closes")
            yield OptionList(
                *(Option(describe_conversation(c), id=str(c.id)) for c in self.conversations),
                id="conversations",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        assert event.option.id is not None
        self.dismiss(int(event.option.id))

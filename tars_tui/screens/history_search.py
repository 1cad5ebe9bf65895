"""Messages found by /history QUERY; picking one opens its conversation at it."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from tars_tui.memory_views import MessageHit, shorten, when


class HistorySearchScreen(ModalScreen[MessageHit | None]):
    DEFAULT_CSS = """
    HistorySearchScreen { align: center middle; }
    HistorySearchScreen > Vertical { width: 85%; max-width: 120; height: 70%;
                                     border: thick $accent; background: $surface; padding: 0 1; }
    HistorySearchScreen OptionList { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, query: str, hits: list[MessageHit]) -> None:
        super().__init__()
        self.search_query = query
        self.hits = hits

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                f"[b]Messages for[/] “{self.search_query}” — Enter opens, Esc closes",
                markup=True,
            )
            yield OptionList(
                *(
                    Option(
                        f"{when(h.created_at)} · {h.title or 'untitled'} · {h.found_by}\n"
                        f"  {shorten(h.snippet, 110)}",
                        id=str(i),
                    )
                    for i, h in enumerate(self.hits)
                ),
                id="hits",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        assert event.option.id is not None
        self.dismiss(self.hits[int(event.option.id)])


__all__ = ["HistorySearchScreen"]

"""The prompt: multi-line input, Enter sends, history on up/down, slash completion."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList, TextArea
from textual.widgets.option_list import Option

from tars_tui import commands


class PromptInput(TextArea):
    """Enter sends; ctrl+j or alt+enter inserts a newline (pasted newlines are kept)."""

    DEFAULT_CSS = """
    PromptInput { height: auto; min-height: 3; max-height: 12; border: tall $accent 40%; }
    PromptInput:focus { border: tall $accent; }
    PromptInput.-tentative .text-area--cursor-line { color: $text-muted; }
    """

    # Enter and newline are handled in _on_key, in order with the characters typed
    # before them: a priority binding would run ahead of keys still queued for the
    # TextArea and send a half-typed prompt. These entries label the footer.
    BINDINGS = [
        Binding("enter", "submit", "Send"),
        Binding("ctrl+j,alt+enter", "newline", "Newline", show=False),
    ]

    @dataclass
    class Submitted(Message):
        prompt: PromptInput
        text: str

    @dataclass
    class CompletionKey(Message):
        """Tab, up or down while the completion list is open; the screen moves it."""

        key: str

    def __init__(self, *, history: list[str] | None = None, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        # Not `history`: TextArea keeps its undo stack under that name.
        self.sent: list[str] = list(history or [])
        self._hist_pos: int | None = None
        self._draft = ""
        self.completion_open = False

    def action_submit(self) -> None:
        typed = self.text.strip()
        # Enter on a partly typed command takes the highlighted completion; on a
        # command typed in full it runs it.
        if self.completion_open and typed.lstrip("/").lower() not in commands.REGISTRY:
            self.post_message(self.CompletionKey("enter"))
            return
        text = self.text.strip()
        if not text:
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._hist_pos = None
        self.clear()
        self.post_message(self.Submitted(self, text))

    @property
    def browsing_history(self) -> bool:
        return self._hist_pos is not None

    def action_newline(self) -> None:
        self.insert("\n")

    async def _on_key(self, event: events.Key) -> None:
        if event.key in ("enter", "ctrl+j", "alt+enter"):
            event.stop()
            event.prevent_default()
            if event.key == "enter":
                self.action_submit()
            else:
                self.action_newline()
            return
        if self.completion_open and event.key in ("tab", "up", "down", "escape"):
            event.stop()
            event.prevent_default()
            self.post_message(self.CompletionKey(event.key))
            return
        if event.key == "up" and self.cursor_location[0] == 0 and self.sent:
            event.stop()
            event.prevent_default()
            self._recall(-1)
            return
        if (
            event.key == "down"
            and self._hist_pos is not None
            and (self.cursor_location[0] == self.document.line_count - 1)
        ):
            event.stop()
            event.prevent_default()
            self._recall(+1)
            return
        await super()._on_key(event)

    def _recall(self, step: int) -> None:
        if self._hist_pos is None:
            if step > 0:
                return
            self._draft = self.text
            pos = len(self.sent) - 1
        else:
            pos = self._hist_pos + step
        if pos < 0:
            return
        if pos >= len(self.sent):
            self._hist_pos = None
            self.load_text(self._draft)
        else:
            self._hist_pos = pos
            self.load_text(self.sent[pos])
        self.move_cursor(self.document.end)


class CompletionList(OptionList):
    """Slash commands matching what is typed; shown above the prompt."""

    DEFAULT_CSS = """
    CompletionList { height: auto; max-height: 10; display: none; border: round $accent; }
    CompletionList.-open { display: block; }
    """

    def show_for(self, text: str) -> bool:
        """Fill for ``text``; True if anything matches (the list is then open)."""
        matches = commands.completions(text) if self._is_command_prefix(text) else []
        self.clear_options()
        if matches:
            self.add_options([Option(self._label(c), id=c.name) for c in matches])
            self.highlighted = 0
        self.set_class(bool(matches), "-open")
        return bool(matches)

    @staticmethod
    def _label(cmd: commands.Command) -> Text:
        label = Text(cmd.usage, style="bold", no_wrap=True, overflow="ellipsis")
        label.append(f"  {cmd.summary}", style="dim")
        return label

    @staticmethod
    def _is_command_prefix(text: str) -> bool:
        return text.startswith("/") and " " not in text and "\n" not in text

    def close(self) -> None:
        self.set_class(False, "-open")

    def chosen(self) -> str | None:
        if self.highlighted is None:
            return None
        option = self.get_option_at_index(self.highlighted)
        return option.id

"""The conversation as it scrolls by: user turns, streamed Markdown replies, notes."""

from __future__ import annotations

from typing import Literal

from textual import events
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets._markdown import MarkdownFence, MarkdownStream

from memory.conversation_store import ReplyMetrics
from tars_tui.formatting import metrics_line

NoteStyle = Literal["info", "error", "markdown"]


class CopyableFence(MarkdownFence):
    """A highlighted code block; a click copies its code to the clipboard."""

    def on_click(self, event: events.Click) -> None:
        self.app.copy_to_clipboard(self.code)
        self.app.notify("Code copied to the clipboard.", timeout=2)


class ReplyMarkdown(Markdown):
    BLOCKS = {**Markdown.BLOCKS, "fence": CopyableFence, "code_block": CopyableFence}


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage { margin: 1 0 0 0; padding: 0 1; border-left: thick $accent; }
    UserMessage.-found { background: $accent 20%; }
    """


class AssistantMessage(Vertical):
    DEFAULT_CSS = """
    AssistantMessage { height: auto; margin: 1 0 0 0; padding: 0 1; border-left: thick $success; }
    AssistantMessage ReplyMarkdown { margin: 0; padding: 0; }
    AssistantMessage .meta { color: $text-muted; height: auto; }
    AssistantMessage.-cancelled { border-left: thick $warning; }
    AssistantMessage.-error { border-left: thick $error; }
    AssistantMessage.-found { background: $accent 20%; }
    """

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.text = text
        self.body = ReplyMarkdown(text)
        self.meta = Static("", classes="meta")
        self._stream: MarkdownStream | None = None

    def compose(self):  # type: ignore[no-untyped-def]
        yield self.body
        yield self.meta

    async def append(self, fragment: str) -> None:
        """Add streamed text; the Markdown stream coalesces what arrives while it renders."""
        if not fragment:
            return
        self.text += fragment
        if self._stream is None:
            self._stream = Markdown.get_stream(self.body)
        await self._stream.write(fragment)

    async def finish(
        self,
        metrics: ReplyMetrics | None,
        *,
        cancelled: bool,
        error: str | None = None,
        interrupted: str | None = None,
    ) -> None:
        """``interrupted``: what cut the reply off (not the user); its text is kept."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if not self.text.strip() and not error:
            await self.body.update("*(no text)*")
        self.set_class(cancelled or interrupted is not None, "-cancelled")
        if error:
            self.add_class("-error")
            self.meta.update(f"⚠ {error}")
        elif interrupted is not None:
            self.meta.update(f"⏹ interrupted: {interrupted}")
        else:
            self.meta.update(metrics_line(metrics, cancelled=cancelled))

    @property
    def last_code(self) -> str | None:
        fences = list(self.body.query(CopyableFence))
        return fences[-1].code if fences else None


class Note(Static):
    DEFAULT_CSS = """
    Note { margin: 1 0 0 0; padding: 0 1; color: $text-muted; }
    Note.-error { color: $error; }
    """


class MarkdownNote(Markdown):
    DEFAULT_CSS = """
    MarkdownNote { margin: 1 0 0 0; padding: 0 1; }
    """


class Remembered(Collapsible):
    DEFAULT_CSS = """
    Remembered { margin: 1 0 0 0; padding: 0; border: none; background: transparent;
                 color: $text-muted; }
    Remembered CollapsibleTitle { color: $text-muted; }
    """


class Transcript(VerticalScroll):
    DEFAULT_CSS = """
    Transcript { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    """

    # Follow the end (a reply growing as it streams, its footer when it ends) until the
    # user scrolls up; scrolling back to the end follows again. Not Textual's anchor():
    # with less content than the view it scrolls to a negative offset (8.x).
    _following = True

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Only a scroll moves scroll_y (content growing leaves it), so this is the user
        # (or a scroll_end): follow again once at the end.
        self._following = new_value >= self.max_scroll_y - 1

    def watch_virtual_size(self) -> None:
        if self._following and self.max_scroll_y > self.scroll_y:
            self.scroll_end(animate=False, immediate=True)

    def add_user(self, text: str) -> UserMessage:
        widget = UserMessage(text, markup=False)
        self._add(widget)
        return widget

    def add_assistant(self, text: str = "") -> AssistantMessage:
        widget = AssistantMessage(text)
        self._add(widget)
        return widget

    def add_remembered(
        self, title: str, details: str, *, before: Widget | None = None
    ) -> Collapsible:
        """The memories a reply was given, collapsed to one line until opened."""
        widget = Remembered(MarkdownNote(details), title=title, collapsed=True)
        if before is not None and before.parent is self:
            self.mount(widget, before=before)
        else:
            self._add(widget)
        return widget

    def add_note(self, text: str, style: NoteStyle = "info") -> None:
        if style == "markdown":
            self._add(MarkdownNote(text))
        else:
            self._add(Note(text, markup=False, classes=f"-{style}"))

    def _add(self, widget: Widget) -> None:
        at_end = self.is_vertical_scroll_end or self.max_scroll_y == 0
        self.mount(widget)
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False)

    async def clear(self) -> None:
        await self.remove_children()

    @property
    def last_reply(self) -> AssistantMessage | None:
        replies = list(self.query(AssistantMessage))
        return replies[-1] if replies else None

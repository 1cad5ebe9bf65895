"""What the parts of the TUI need from each other, as protocols: screens and commands
depend on these, not on ``TarsApp`` or the chat screen, so nothing imports in a circle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol, TypeVar, runtime_checkable

from textual.message import Message
from textual.widget import Widget

from memory.conversation_store import Conversation
from memory.service import Memory
from tars_assistant.node_link import NodeLink
from tars_assistant.session import ChatSession
from tars_assistant.voice.events import FinalEvent
from tars_assistant.voice.ptt import PushToTalk

W = TypeVar("W", bound=Widget)


class ChatHost(Protocol):
    """The app as the chat screen sees it."""

    node: NodeLink
    memory: Memory | None
    voice: PushToTalk | None
    voice_error: str | None
    hold_to_talk: bool  # the terminal reports key releases: push-to-talk can be held

    def load_model(self, target: Path | str | None = None) -> None: ...


@runtime_checkable
class CommandRunner(Protocol):
    """A screen that runs slash commands (the command palette sends them here)."""

    def run_command(self, line: str) -> None: ...


Style = Literal["info", "error", "markdown"]


@runtime_checkable
class SpeechHost(Protocol):
    """A front end that can speak replies and hold a spoken conversation (the TUI)."""

    def set_speaking(self, on: bool | None) -> None:
        """Speak replies (True), stop (False) or switch (None), for this session."""
        ...

    def toggle_hands_free(self) -> None: ...


class CommandHost(Protocol):
    """What a front end offers the commands."""

    session: ChatSession

    def say(self, text: str, style: Style = "info") -> None: ...
    def clear_view(self) -> None: ...
    def reload_view(self) -> None: ...
    def focus_message(self, message_id: int) -> None:
        """Bring this message into view once the conversation is shown."""
        ...

    def choose_conversation(self, conversations: list[Conversation]) -> None: ...
    def switch_model(self, target: Path | str) -> None:
        """Load a GGUF file (a Path) or switch to a model profile (a name)."""
        ...

    def in_background(self, job: Callable[[], str]) -> None:
        """Run ``job`` off the UI (it may wait on the network); say its Markdown result."""
        ...

    def quit(self) -> None: ...


class ChatView(Protocol):
    """The chat screen as its helpers see it (tars_tui/voice/speech_control.py, talk.py)."""

    session: ChatSession
    generating: bool

    @property
    def tars(self) -> ChatHost: ...

    def query_one(self, selector: type[W]) -> W: ...
    def post_message(self, message: Message) -> bool: ...
    def say(self, text: str, style: Style = "info") -> None: ...
    def refresh_figures(self) -> None: ...
    def send(self, text: str) -> None: ...
    def stop_reply(self) -> None: ...
    def close_voice(self) -> None: ...
    def record_stt(self, event: FinalEvent) -> None: ...

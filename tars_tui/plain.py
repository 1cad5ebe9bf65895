"""`tars --plain`: a line mode for SSH sessions and screen readers.

Same engine, same session, same slash commands as the TUI; output is plain
streamed text (rich for notes and Markdown), input has persistent history and
slash completion.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from rich.console import Console
from rich.markdown import Markdown

from memory.conversation_store import Conversation, ConversationStore
from tars_tui import commands
from tars_tui.commands import Style
from tars_tui.config import Config
from tars_tui.formatting import describe_conversation, metrics_line
from tars_tui.llm import LLMEngine, ModelError
from tars_tui.session import ChatSession


class SlashCompleter(Completer):
    def get_completions(self, document: Document, complete_event: CompleteEvent):  # type: ignore[no-untyped-def]
        text = document.text_before_cursor
        if not text.startswith("/") or " " in text:
            return
        for cmd in commands.completions(text):
            yield Completion(cmd.slash, start_position=-len(text), display_meta=cmd.summary)


class PlainHost:
    """The CommandHost of plain mode."""

    def __init__(self, session: ChatSession, console: Console) -> None:
        self.session = session
        self.console = console
        self.running = True

    def say(self, text: str, style: Style = "info") -> None:
        if style == "markdown":
            self.console.print(Markdown(text))
        else:
            self.console.print(
                text, style="red" if style == "error" else "dim", markup=False, highlight=False
            )

    def clear_view(self) -> None:
        self.console.clear()

    def reload_view(self) -> None:
        for m in self.session.messages()[-10:]:
            who = "you" if m.role == "user" else "tars"
            self.console.print(f"[b]{who}:[/] ", end="")
            self.console.print(m.text, markup=False, highlight=False)

    def choose_conversation(self, conversations: list[Conversation]) -> None:
        for i, conv in enumerate(conversations, 1):
            self.console.print(f"{i:3}. {describe_conversation(conv)}")
        self.say("Reopen one with /history N.")

    def switch_model(self, path: Path) -> None:
        try:
            with self.console.status(f"loading {path}…"):
                self.session.engine.load(path)
        except ModelError as exc:
            self.say(f"{exc}. The previous model is still in use.", "error")
            return
        self.say(f"Model {path.name} loaded.")

    def quit(self) -> None:
        self.running = False


def run_plain(
    config: Config,
    *,
    console: Console | None = None,
    prompt_input: Input | None = None,
    prompt_output: Output | None = None,
) -> int:
    """The line-mode loop. The console and prompt I/O can be replaced (tests, pipes)."""
    console = console or Console(highlight=False)
    engine = LLMEngine(config.llm)
    store = ConversationStore(config.data_dir / "tars.db")
    session = ChatSession(config, engine, store)
    host = PlainHost(session, console)
    try:
        with console.status(f"loading {engine.model_name}…"):
            engine.load()
    except ModelError as exc:
        console.print(f"tars: {exc}", style="red", markup=False)
        store.close()
        return 1
    if session.reopen_last():
        host.say("Reopened your last conversation (/new starts another, /help lists commands).")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(config.data_dir / "plain_history")),
        completer=SlashCompleter(),
        complete_while_typing=True,
        input=prompt_input,
        output=prompt_output,
    )
    try:
        while host.running:
            try:
                line = prompt.prompt("you> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not line.strip() or commands.dispatch(host, line):
                continue
            _turn(host, line.strip())
    finally:
        store.close()
        engine.close()
    return 0


def _turn(host: PlainHost, text: str) -> None:
    console = host.console
    console.print("[b]tars:[/] ", end="")
    # ctrl+c while streaming stops the reply within one token; what was generated
    # is kept and stored as cancelled, as Esc does in the TUI.
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = host.session.run_turn(
            text,
            on_piece=lambda p: console.print(p, end="", markup=False, highlight=False),
            should_stop=stop.is_set,
        )
    except ModelError as exc:
        console.print(f"\n{exc}", style="red", markup=False)
        return
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print()
    console.print(metrics_line(result.metrics, cancelled=result.cancelled), style="dim")

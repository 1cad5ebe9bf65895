"""`tars --plain`: a line mode for SSH sessions and screen readers.

Same engine, same session, same slash commands as the TUI; output is plain
streamed text (rich for notes and Markdown), input has persistent history and
slash completion.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from rich.console import Console
from rich.markdown import Markdown

from memory.conversation_store import Conversation, ConversationStore
from memory.loop import LoopThread
from memory.service import Memory
from node_daemon.local import NodeStartError
from tars_assistant.backend_errors import BackendError
from tars_assistant.llm import ModelError
from tars_assistant.memory_link import open_memory
from tars_assistant.model_router import ModelRouter
from tars_assistant.node_link import NodeLink
from tars_assistant.session import ChatSession
from tars_core.config import Config
from tars_tui import commands
from tars_tui.commands import Style
from tars_tui.formatting import describe_conversation, metrics_line
from tars_tui.memory_views import View


class SlashCompleter(Completer):
    def get_completions(self, document: Document, complete_event: CompleteEvent):  # type: ignore[no-untyped-def]
        text = document.text_before_cursor
        if not text.startswith("/") or " " in text:
            return
        for cmd in commands.completions(text):
            yield Completion(cmd.slash, start_position=-len(text), display_meta=cmd.summary)


class PlainHost:
    """The CommandHost (and MemoryHost) of plain mode.

    There is no event loop here, so the node client and memory run in a
    LoopThread; the turn itself runs in the main thread.
    """

    def __init__(
        self,
        session: ChatSession,
        console: Console,
        *,
        memory: Memory | None = None,
        loop: LoopThread | None = None,
    ) -> None:
        self.session = session
        self.console = console
        self.running = True
        self.memory = memory
        self.loop = loop

    def run_async(self, job: Coroutine[Any, Any, None], name: str) -> None:
        if self.loop is None:
            job.close()
            self.say(f"{name}: long-term memory is off", "error")
            return
        try:
            self.loop.run(job)
        except Exception as exc:
            self.say(f"{name} failed: {exc}", "error")

    def show_view(self, view: View) -> bool:
        return False  # the commands print their views as text here

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

    def focus_message(self, message_id: int) -> None:
        message = self.session.store.get_message(message_id)
        if message is not None:
            self.console.print(f"[b]@{message_id} {message.role}:[/] ", end="")
            self.console.print(message.text, markup=False, highlight=False)

    def choose_conversation(self, conversations: list[Conversation]) -> None:
        for i, conv in enumerate(conversations, 1):
            self.console.print(f"{i:3}. {describe_conversation(conv)}")
        self.say("Reopen one with /history N.")

    def switch_model(self, target: Path | str) -> None:
        router = self.session.engine
        assert isinstance(router, ModelRouter)
        try:
            with self.console.status(f"loading {target}…"):
                loaded = router.select(target) if isinstance(target, str) else router.load(target)
        except ModelError as exc:
            self.say(f"{exc}. The previous model is still in use.", "error")
            return
        here = f" on {loaded.where.label}" if loaded.where.remote else ""
        self.say(f"Model {loaded.name}{here} loaded.")
        notice = router.privacy_notice()
        if notice is not None:
            self.say(notice, "error")

    def in_background(self, job: Callable[[], str]) -> None:
        with self.console.status("asking the model servers…"):
            text = job()
        self.say(text, "markdown")

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
    # In this process: no UI to share a GIL with (or a model server: [llm] model).
    engine = ModelRouter(config, process=False)
    store = ConversationStore(config.data_dir / "tars.db")
    session = ChatSession(config, engine, store)
    try:
        with console.status(f"loading {engine.model_name}…"):
            session.reopen_last()
            wanted = session.wanted_model()  # the reopened project's own model
            if wanted is not None:
                engine.select(wanted)
            else:
                engine.load()
    except BackendError as exc:
        # A model server that is down now may be up for the first turn (or the fallback
        # answers it): say so and go on.
        console.print(f"tars: {exc}", style="red", markup=False)
    except ModelError as exc:
        console.print(f"tars: {exc}", style="red", markup=False)
        engine.close()
        store.close()
        return 1
    link = NodeLink(config)
    loop: LoopThread | None = None
    memory = open_memory(config, store, link, count_tokens=engine.count_tokens)
    if memory is not None:
        loop = LoopThread()
        loop.submit(memory.semantic.run_delivery())
        # The node starts while the user types; recall says so if it is not up yet.
        threading.Thread(
            target=_start_node, args=(link, memory, console), daemon=True, name="tars-node-start"
        ).start()
    host = PlainHost(session, console, memory=memory, loop=loop)
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
        if loop is not None:
            loop.close()
        link.stop()
        if memory is not None:
            memory.close()
        store.close()
        engine.close()
    return 0


def _start_node(link: NodeLink, memory: Memory, console: Console) -> None:
    try:
        link.start()
    except (NodeStartError, OSError, ValueError) as exc:
        console.print(f"{exc}. Going on without long-term memory.", style="red", markup=False)
        return
    memory.semantic.kick(force=True)


def _turn(host: PlainHost, text: str) -> None:
    console = host.console
    console.print("[b]tars:[/] ", end="")
    # ctrl+c while streaming stops the reply within one token; what was generated
    # is kept and stored as cancelled, as Esc does in the TUI.
    notice = host.session.engine.privacy_notice()
    if notice is not None:
        host.say(notice, "error")
    context, stages = _recall(host, text) if host.session.engine.sends_memory else ("", {})
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = host.session.run_turn(
            text,
            on_piece=lambda p: console.print(p, end="", markup=False, highlight=False),
            should_stop=stop.is_set,
            on_notice=lambda note: console.print(f"\n[{note}]\n", style="red", markup=False),
            context=context,
            stages=stages,
        )
    except ModelError as exc:
        console.print(f"\n{exc}", style="red", markup=False)
        return
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print()
    console.print(metrics_line(result.metrics, cancelled=result.cancelled), style="dim")
    conv = host.session.conversation
    if host.memory is not None and conv is not None and not result.cancelled and result.text:
        host.memory.semantic.remember_exchange(
            text,
            result.text,
            project_id=host.session.project_id,
            conversation_id=conv.id,
            message_id=result.message_id,
        )


def _recall(host: PlainHost, text: str) -> tuple[str, dict[str, float]]:
    """Memories for this turn (text for the model, and the retrieval time)."""
    if host.memory is None or host.loop is None:
        return "", {}
    conv = host.session.conversation
    recall = host.loop.run(
        host.memory.semantic.recall(
            text, host.session.project_id, conversation_id=conv.id if conv else None
        ),
        timeout=host.memory.config.recall_timeout_s + 5,
    )
    if recall.error:
        host.say(f"(long-term memory unavailable: {recall.error})")
    elif recall.used_ids or recall.summary_used:
        host.say(f"({recall.summary_line()})")
    return recall.context_text, recall.stages

"""A chat session: the active conversation, its persistence and one turn end to end.

UI-agnostic and blocking: the TUI runs ``run_turn`` in a thread worker, plain
mode and ``tars ask`` call it directly. Every message is committed the moment it
is complete; a reply in progress is checkpointed so a crash keeps its text.
A reply cut off by the death of the model's process is kept as ``cancelled``
with a note of what interrupted it (``Message.interrupted``), as a crash of
TARS itself leaves it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from memory.conversation_store import (
    Conversation,
    ConversationStore,
    Message,
    ReplyMetrics,
    Status,
)
from tars_assistant.llm import ChatMessage, ModelError, Reply, Sampling
from tars_assistant.llm_process import Engine, ModelProcessDied
from tars_assistant.model_gate import ModelGate
from tars_assistant.telemetry import LatencySeries
from tars_core.config import Config

CHECKPOINT_INTERVAL_S = 1.0
T = TypeVar("T")
STAGES = ("ttft_ms", "tokens_per_s", "total_ms")


@dataclass(frozen=True)
class TurnResult:
    text: str
    cancelled: bool
    metrics: ReplyMetrics | None
    message_id: int
    finish_reason: str | None = None  # llama.cpp's: "stop" or "length"


class ChatSession:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        store: ConversationStore,
        *,
        latency: LatencySeries | None = None,
        model_gate: ModelGate | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self.system_prompt = config.llm.system_prompt
        self.conversation: Conversation | None = None
        # The active project: new conversations belong to it, memory is scoped by it.
        self.project_id: int = store.default_project().id
        # Shared by the sessions of one front-end (the API runs one per request).
        self.latency = latency or LatencySeries(maxlen=config.ui.sparkline_points)
        # Replies before background model work (project summaries): model_gate.py.
        self.model_gate = model_gate or ModelGate()

    # -- conversations -----------------------------------------------------

    def reopen_last(self) -> Conversation | None:
        self.conversation = self.store.latest_conversation()
        if self.conversation is not None:
            self.project_id = self.conversation.project_id
        return self.conversation

    def switch_project(self, project_id: int) -> None:
        """Make ``project_id`` active and reopen its latest conversation (or start one)."""
        self.project_id = project_id
        self.conversation = self.store.latest_conversation(project_id=project_id)

    def new_conversation(self) -> None:
        """Start afresh; the conversation row is created with its first message."""
        self.conversation = None

    def open(self, conversation_id: int) -> Conversation:
        conv = self.store.get_conversation(conversation_id)
        if conv is None:
            raise KeyError(conversation_id)
        self.conversation = conv
        self.project_id = conv.project_id
        return conv

    @property
    def project_name(self) -> str:
        project = self.store.get_project(self.project_id)
        return project.name if project is not None else self.store.default_project().name

    def messages(self) -> list[Message]:
        if self.conversation is None:
            return []
        return self.store.messages(self.conversation.id)

    def history(self) -> list[ChatMessage]:
        """What the model is shown of this conversation (errors left out)."""
        out: list[ChatMessage] = []
        for m in self.messages():
            if m.role in ("user", "assistant") and m.status != "error" and m.text:
                out.append({"role": m.role, "content": m.text})
        return out

    # -- one turn ------------------------------------------------------------

    def run_turn(
        self,
        text: str,
        *,
        on_piece: Callable[[str], None] = lambda _: None,
        should_stop: Callable[[], bool] = lambda: False,
        context: str = "",
        stages: dict[str, float] | None = None,
        history: Sequence[ChatMessage] | None = None,
        system_prompt: str | None = None,
        sampling: Sampling | None = None,
        logit_bias: dict[int, float] | None = None,
    ) -> TurnResult:
        """Store the user's message, stream and store the reply. Blocks.

        ``context`` (recalled memories, the project's summary) is given to the model
        after the system prompt; it counts against the window like everything else.
        ``stages`` (e.g. ``{"retrieval_ms": 12.0}``) are stored with the reply's
        metrics and recorded in the latency series.
        ``history`` replaces the stored conversation as what the model is shown
        before ``text`` (an OpenAI client sends its own), ``system_prompt`` the
        configured one; ``sampling`` and ``logit_bias`` go to the engine.
        """
        shown = self.history() if history is None else list(history)
        history = [*shown, ChatMessage(role="user", content=text)]
        # The user's message is committed while the model reads the prompt (the fsync
        # and the prompt evaluation overlap); the reply waits for it before its first
        # checkpoint, and the turn does not return before it is durable.
        turn = _in_thread(
            self.store.begin_turn,
            self.conversation.id if self.conversation is not None else None,
            text,
            self.engine.model_name,
            project_id=self.project_id,
        )
        reply = Reply()
        last_checkpoint = time.monotonic()
        try:
            base = self.system_prompt if system_prompt is None else system_prompt
            system = f"{base}\n\n{context}" if context and base else (context or base)
            with self.model_gate.foreground():
                for piece in self.engine.stream(
                    system,
                    history,
                    should_stop=should_stop,
                    reply=reply,
                    logit_bias=logit_bias,
                    sampling=sampling,
                ):
                    on_piece(piece)
                    now = time.monotonic()
                    if now - last_checkpoint >= CHECKPOINT_INTERVAL_S:
                        self.store.checkpoint_reply(turn.result()[2], reply.text)
                        last_checkpoint = now
        except ModelProcessDied as exc:
            # Not the reply's fault: keep what it said, as a cancel would, with a note.
            conv_id, _, reply_id = turn.result()
            self.store.finish_reply(reply_id, reply.text, status="cancelled", error=str(exc))
            self.conversation = self.store.get_conversation(conv_id)
            raise
        except ModelError as exc:
            conv_id, _, reply_id = turn.result()
            self.store.finish_reply(reply_id, reply.text, status="error", error=str(exc))
            self.conversation = self.store.get_conversation(conv_id)
            raise
        conv_id, _, reply_id = turn.result()
        if reply.metrics is not None and stages:
            merged = {**reply.metrics.stages, **stages}
            reply.metrics = dataclasses.replace(reply.metrics, stages=merged)
        status: Status = "cancelled" if reply.cancelled else "complete"
        self.store.finish_reply(reply_id, reply.text, status=status, metrics=reply.metrics)
        if reply.metrics and not reply.cancelled:
            for stage in STAGES:
                value = getattr(reply.metrics, stage)
                if value is not None:
                    self.latency.record(stage, value)
            for stage, value in reply.metrics.stages.items():
                self.latency.record(stage, value)
        self.conversation = self.store.get_conversation(conv_id)
        return TurnResult(reply.text, reply.cancelled, reply.metrics, reply_id, reply.finish_reason)

    def export_markdown(self, path: Path) -> Path:
        if self.conversation is None:
            raise LookupError("nothing to export yet: this conversation has no messages")
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.store.export_markdown(self.conversation.id), encoding="utf-8")
        return path


def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Run ``fn`` in a short-lived thread; its result (or exception) in the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="tars-begin-turn", daemon=True).start()
    return future

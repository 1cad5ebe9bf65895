"""A chat session: the active conversation, its persistence and one turn end to end.

UI-agnostic and blocking: the TUI runs ``run_turn`` in a thread worker, plain
mode and ``tars ask`` call it directly. Every message is committed the moment it
is complete; a reply in progress is checkpointed so a crash keeps its text.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memory.conversation_store import (
    Conversation,
    ConversationStore,
    Message,
    ReplyMetrics,
    Status,
)
from tars_tui.config import Config
from tars_tui.llm import ChatMessage, ModelError, Reply
from tars_tui.llm_process import Engine
from tars_tui.telemetry import LatencySeries

CHECKPOINT_INTERVAL_S = 1.0
STAGES = ("ttft_ms", "tokens_per_s", "total_ms")


@dataclass(frozen=True)
class TurnResult:
    text: str
    cancelled: bool
    metrics: ReplyMetrics | None
    message_id: int


class ChatSession:
    def __init__(self, config: Config, engine: Engine, store: ConversationStore) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self.system_prompt = config.llm.system_prompt
        self.conversation: Conversation | None = None
        # The active project: new conversations belong to it, memory is scoped by it.
        self.project_id: int = store.default_project().id
        self.latency = LatencySeries(maxlen=config.ui.sparkline_points)

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

    def _ensure_conversation(self) -> Conversation:
        if self.conversation is None:
            conv_id = self.store.create_conversation(
                project_id=self.project_id, model=self.engine.model_name
            )
            self.conversation = self.store.get_conversation(conv_id)
            assert self.conversation is not None
        return self.conversation

    # -- one turn ------------------------------------------------------------

    def run_turn(
        self,
        text: str,
        *,
        on_piece: Callable[[str], None] = lambda _: None,
        should_stop: Callable[[], bool] = lambda: False,
        context: str = "",
        stages: dict[str, float] | None = None,
    ) -> TurnResult:
        """Store the user's message, stream and store the reply. Blocks.

        ``context`` (recalled memories, the project's summary) is given to the model
        after the system prompt; it counts against the window like everything else.
        ``stages`` (e.g. ``{"retrieval_ms": 12.0}``) are stored with the reply's
        metrics and recorded in the latency series.
        """
        conv = self._ensure_conversation()
        history = [*self.history(), ChatMessage(role="user", content=text)]
        self.store.add_message(conv.id, "user", text, model=self.engine.model_name)
        reply_id = self.store.begin_reply(conv.id, model=self.engine.model_name)
        reply = Reply()
        last_checkpoint = time.monotonic()
        try:
            system = f"{self.system_prompt}\n\n{context}" if context else self.system_prompt
            for piece in self.engine.stream(system, history, should_stop=should_stop, reply=reply):
                on_piece(piece)
                now = time.monotonic()
                if now - last_checkpoint >= CHECKPOINT_INTERVAL_S:
                    self.store.checkpoint_reply(reply_id, reply.text)
                    last_checkpoint = now
        except ModelError as exc:
            self.store.finish_reply(reply_id, reply.text, status="error", error=str(exc))
            raise
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
        self.conversation = self.store.get_conversation(conv.id)
        return TurnResult(reply.text, reply.cancelled, reply.metrics, reply_id)

    def export_markdown(self, path: Path) -> Path:
        if self.conversation is None:
            raise LookupError("nothing to export yet: this conversation has no messages")
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.store.export_markdown(self.conversation.id), encoding="utf-8")
        return path

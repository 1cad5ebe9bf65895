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
from tars_assistant.backend_errors import BackendError
from tars_assistant.llm import ChatMessage, EngineBase, ModelError, Reply, Sampling
from tars_assistant.llm_process import ModelProcessDied
from tars_assistant.model_gate import ModelGate
from tars_assistant.telemetry import LatencySeries
from tars_core.config import Config

CHECKPOINT_INTERVAL_S = 1.0
RETRY_DELAY_S = 0.1  # before the one retry of a transient failure (a restarting server)
T = TypeVar("T")
STAGES = ("ttft_ms", "tokens_per_s", "total_ms")


@dataclass(frozen=True)
class TurnResult:
    text: str
    cancelled: bool
    metrics: ReplyMetrics | None
    message_id: int
    finish_reason: str | None = None  # "stop" or "length" (or "tool_calls")
    model: str = ""  # the model that wrote the reply (the fallback's, when it answered)
    notes: tuple[str, ...] = ()  # what happened on the way (a failed server, the fallback)


class ChatSession:
    def __init__(
        self,
        config: Config,
        engine: EngineBase,
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

    def wanted_model(self) -> str | None:
        """The profile the active project asks for (its own, else ``[llm] model``), when
        the engine runs another one; None when it already runs it (or cannot switch)."""
        active = getattr(self.engine, "profile", None)
        if active is None:
            return None
        project = self.store.get_project(self.project_id)
        wanted = (project.model if project is not None else None) or self.config.llm.model
        wanted = wanted or "local"
        return None if wanted == active.name else wanted

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
        on_notice: Callable[[str], None] = lambda _: None,
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

        A model server that fails transiently is retried once (before its first
        piece); then ``[llm] fallback`` answers the same turn as a reply of its own,
        ``on_notice`` is told why, and the failed reply keeps what it said.
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
        base = self.system_prompt if system_prompt is None else system_prompt
        if context and not self.engine.sends_memory:
            context = ""  # this profile's model is not sent memories (send_memory = false)
        system = f"{base}\n\n{context}" if context and base else (context or base)
        ask = _Ask(system, history, on_piece, should_stop, sampling, logit_bias)
        notes: list[str] = []
        reply = Reply()
        reply_id_of: Callable[[], int] = lambda: turn.result()[2]  # noqa: E731
        engine = self.engine
        try:
            with self.model_gate.foreground():
                try:
                    self._stream(engine, ask, reply, reply_id_of, retry=True)
                except BackendError as exc:
                    if not exc.transient:
                        raise
                    fallback = self._fallback_for(exc, notes)
                    conv_id, _, reply_id = turn.result()
                    # What the failed model said stays, marked, as a crash would leave it.
                    status = _kept_status(exc, reply)
                    self.store.finish_reply(reply_id, reply.text, status=status, error=str(exc))
                    on_notice(notes[-1])
                    engine = fallback
                    new_id = self.store.begin_reply(conv_id, engine.model_name)
                    reply = Reply()
                    reply_id_of = lambda: new_id  # noqa: E731
                    self._stream(engine, ask, reply, reply_id_of, retry=False)
        except ModelError as exc:
            conv_id = turn.result()[0]
            status = _kept_status(exc, reply)
            self.store.finish_reply(reply_id_of(), reply.text, status=status, error=str(exc))
            self.conversation = self.store.get_conversation(conv_id)
            raise
        conv_id, _, _ = turn.result()
        reply_id = reply_id_of()
        if reply.metrics is not None and stages:
            merged = {**reply.metrics.stages, **stages}
            reply.metrics = dataclasses.replace(reply.metrics, stages=merged)
        status = "cancelled" if reply.cancelled else "complete"
        self.store.finish_reply(
            reply_id, reply.text, status=status, metrics=reply.metrics, model=engine.model_name
        )
        if reply.metrics and not reply.cancelled:
            for stage in STAGES:
                value = getattr(reply.metrics, stage)
                if value is not None:
                    self.latency.record(stage, value)
            for stage, value in reply.metrics.stages.items():
                self.latency.record(stage, value)
        self.conversation = self.store.get_conversation(conv_id)
        return TurnResult(
            reply.text,
            reply.cancelled,
            reply.metrics,
            reply_id,
            reply.finish_reason,
            model=engine.model_name,
            notes=tuple(notes),
        )

    def _stream(
        self,
        engine: EngineBase,
        ask: _Ask,
        reply: Reply,
        reply_id: Callable[[], int],
        *,
        retry: bool,
    ) -> None:
        """Stream one reply into ``reply``, checkpointing it; a transient failure before
        the first piece is retried once (``retry``)."""
        last_checkpoint = time.monotonic()
        while True:
            try:
                for piece in engine.stream(
                    ask.system,
                    ask.history,
                    should_stop=ask.should_stop,
                    reply=reply,
                    logit_bias=ask.logit_bias,
                    sampling=ask.sampling,
                ):
                    ask.on_piece(piece)
                    now = time.monotonic()
                    if now - last_checkpoint >= CHECKPOINT_INTERVAL_S:
                        self.store.checkpoint_reply(reply_id(), reply.text)
                        last_checkpoint = now
                return
            except BackendError as exc:
                if not (retry and exc.transient and not reply.text) or ask.should_stop():
                    raise
                retry = False
                time.sleep(RETRY_DELAY_S)

    def _fallback_for(self, exc: BackendError, notes: list[str]) -> EngineBase:
        """The fallback engine for a failure (its note appended), or ``exc`` again."""
        try:
            fallback = self.engine.fallback_engine()
        except ModelError as second:
            raise BackendError(f"{exc}; the fallback failed too: {second}", kind=exc.kind) from None
        if fallback is None:
            raise exc
        notes.append(f"{exc}; {fallback.model_name} (the fallback) answers")
        return fallback

    def export_markdown(self, path: Path) -> Path:
        if self.conversation is None:
            raise LookupError("nothing to export yet: this conversation has no messages")
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.store.export_markdown(self.conversation.id), encoding="utf-8")
        return path


@dataclass(frozen=True)
class _Ask:
    """What one turn asks of whichever engine answers it (the model, or the fallback)."""

    system: str
    history: Sequence[ChatMessage]
    on_piece: Callable[[str], None]
    should_stop: Callable[[], bool]
    sampling: Sampling | None
    logit_bias: dict[int, float] | None


def _kept_status(exc: ModelError, reply: Reply) -> Status:
    """How a reply the model could not finish is stored: as cut off (its text kept, like
    a cancel) when it was not the reply's fault — the model's process died, or a server
    failed after it began — else as an error."""
    if isinstance(exc, ModelProcessDied):
        return "cancelled"
    if isinstance(exc, BackendError) and exc.transient and reply.text:
        return "cancelled"
    return "error"


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

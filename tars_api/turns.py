"""One chat turn for any client: recall -> wait for the model -> generate -> store ->
remember, as the TUI's chat screen does it (tars_tui/screens/chat.py).

Recall runs in the event loop (the node client is zmq.asyncio), generation in a
worker thread through a per-request :class:`ChatSession`, so many conversations
share the one engine and store. Pieces reach the caller in the loop, in order.

Stateless OpenAI clients send the whole conversation every time. To keep one
conversation per chat in the store (and in the TUI's /history), a request whose
earlier messages are exactly a stored conversation of the project continues it;
otherwise its earlier messages start a new stored conversation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memory.conversation_store import ConversationStore, ReplyMetrics
from memory.semantic import Recall
from tars_api.limits import Ticket
from tars_api.runtime import Runtime
from tars_assistant.llm import ChatMessage, Reply, Sampling
from tars_assistant.session import ChatSession

# How many of the project's latest conversations a stateless request is matched against.
MATCH_SCAN = 20

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TurnRequest:
    text: str
    project_id: int
    conversation_id: int | None = None  # continue this stored conversation
    # What the model sees before ``text`` (an OpenAI client's messages); None: the
    # stored conversation, as in the TUI.
    history: tuple[ChatMessage, ...] | None = None
    system_prompt: str | None = None
    memory: bool = True  # recall before, remember after
    store: bool = True  # keep the exchange in the conversation store
    sampling: Sampling = field(default_factory=Sampling)
    logit_bias: dict[int, float] | None = None


@dataclass
class TurnOutcome:
    text: str
    cancelled: bool
    finish_reason: str
    metrics: ReplyMetrics | None
    conversation_id: int | None
    message_id: int | None
    project: str
    queue_position: int
    memory_ids: tuple[str, ...] = ()
    memory_error: str | None = None
    stages: dict[str, float] = field(default_factory=dict)
    # Tokens of the text that reached the client after its cancel reached the server
    # (set by TurnStream): at most one generated after it (the engine checks before
    # every token), plus what was already made and on its way.
    tokens_after_cancel: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return (self.metrics.prompt_tokens or 0) if self.metrics else 0

    @property
    def completion_tokens(self) -> int:
        return (self.metrics.completion_tokens or 0) if self.metrics else 0

    def tars_field(self) -> dict[str, Any]:
        """What the reply's ``tars`` field says: memory used, where it was stored, timings."""
        return {
            "project": self.project,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "memory_ids": list(self.memory_ids),
            "memory_error": self.memory_error,
            "queue_position": self.queue_position,
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
        }


def find_conversation(
    store: ConversationStore, project_id: int, prior: Sequence[ChatMessage]
) -> int | None:
    """The stored conversation of ``project_id`` whose messages are exactly ``prior``."""
    want = [(m["role"], m["content"].strip()) for m in prior if m["role"] != "system"]
    if not want:
        return None
    for conv in store.list_conversations(limit=MATCH_SCAN, project_id=project_id):
        if conv.message_count < len(want):
            continue
        have = [
            (m.role, m.text.strip())
            for m in store.messages(conv.id)
            if m.role in ("user", "assistant") and m.status != "error" and m.text
        ]
        if have == want:
            return conv.id
    return None


class TurnRunner:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def run(
        self,
        req: TurnRequest,
        ticket: Ticket,
        *,
        on_piece: Callable[[str], None],
        stop: threading.Event,
        emit: Emit | None = None,
    ) -> TurnOutcome:
        """Run the turn; ``on_piece`` and ``emit`` (stage events) are called in the loop.

        Cancelling the caller's task stops the reply within one token; the model is
        handed to the next in line only once the engine has really stopped.
        """
        rt = self.runtime
        tell = emit or (lambda _: None)
        stages: dict[str, float] = {}
        recall: Recall | None = None
        try:
            # A profile with send_memory = false is sent no memories (the session drops
            # them too); the exchange is still remembered here.
            if req.memory and rt.memory is not None and rt.engine.sends_memory:
                recall = await rt.memory.semantic.recall(
                    req.text, req.project_id, conversation_id=req.conversation_id
                )
                stages.update(recall.stages)
                tell({"type": "stage", "name": "retrieval_ms", "value": recall.latency_ms})
                tell(
                    {
                        "type": "memory",
                        "ids": list(recall.shown_ids),
                        "summary_used": recall.summary_used,
                        "error": recall.error,
                    }
                )
            if not ticket.granted:
                tell({"type": "queued", "position": ticket.position})
            await ticket.wait()
        except BaseException:
            ticket.release()
            raise
        stages["queue_ms"] = ticket.wait_ms
        tell({"type": "stage", "name": "queue_ms", "value": round(ticket.wait_ms, 3)})
        loop = asyncio.get_running_loop()
        context = recall.context_text if recall is not None else ""
        t_start = time.perf_counter()
        first: list[float] = []

        def piece(text: str) -> None:  # in the loop
            if not first:
                first.append((time.perf_counter() - t_start) * 1000)
                tell({"type": "stage", "name": "first_token_ms", "value": round(first[0], 3)})
            on_piece(text)

        def from_thread(text: str) -> None:
            loop.call_soon_threadsafe(piece, text)

        work = _Work(rt, req, context, dict(stages), from_thread, stop)
        future = loop.run_in_executor(None, work.run)
        # The model is free for the next in line only when the engine has stopped.
        future.add_done_callback(lambda _: ticket.release())
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            raise
        text, cancelled, finish, metrics, conv_id, message_id = result
        project = rt.store.get_project(req.project_id)
        final_stages = dict(metrics.stages) if metrics is not None else dict(stages)
        if metrics is not None:
            for name in ("ttft_ms", "tokens_per_s", "total_ms"):
                value = getattr(metrics, name)
                if value is not None:
                    final_stages[name] = value
        return TurnOutcome(
            text=text,
            cancelled=cancelled,
            finish_reason="cancelled" if cancelled else (finish or "stop"),
            metrics=metrics,
            conversation_id=conv_id,
            message_id=message_id,
            project=project.name if project is not None else "",
            queue_position=ticket.position,
            memory_ids=recall.shown_ids if recall is not None else (),
            memory_error=recall.error if recall is not None else None,
            stages=final_stages,
        )


_Result = tuple[str, bool, str | None, ReplyMetrics | None, int | None, int | None]


@dataclass
class _Work:
    """The blocking part of a turn, for a worker thread."""

    rt: Runtime
    req: TurnRequest
    context: str
    stages: dict[str, float]
    emit: Callable[[str], None]
    stop: threading.Event

    def run(self) -> _Result:
        if not self.req.store:
            return self._unstored()
        rt, req = self.rt, self.req
        session = ChatSession(
            rt.config, rt.engine, rt.store, latency=rt.latency, model_gate=rt.gate
        )
        session.project_id = req.project_id
        if req.conversation_id is not None:
            session.open(req.conversation_id)
        elif req.history:
            session.conversation = None
            new_id = rt.store.create_conversation(req.project_id, model=rt.engine.model_name)
            for m in req.history:
                if m["role"] in ("user", "assistant") and m["content"].strip():
                    rt.store.add_message(new_id, m["role"], m["content"])
            session.open(new_id)
        result = session.run_turn(
            req.text,
            on_piece=self.emit,
            should_stop=self.stop.is_set,
            context=self.context,
            stages=self.stages,
            history=req.history,
            system_prompt=req.system_prompt,
            sampling=req.sampling,
            logit_bias=req.logit_bias,
        )
        conv = session.conversation
        if (
            req.memory
            and rt.memory is not None
            and conv is not None
            and not result.cancelled
            and result.text.strip()
        ):
            rt.memory.semantic.remember_exchange(
                req.text,
                result.text,
                project_id=req.project_id,
                conversation_id=conv.id,
                message_id=result.message_id,
            )
        conv_id = conv.id if conv is not None else None
        return (
            result.text,
            result.cancelled,
            result.finish_reason,
            result.metrics,
            conv_id,
            result.message_id,
        )

    def _unstored(self) -> _Result:
        rt, req = self.rt, self.req
        base = rt.config.llm.system_prompt if req.system_prompt is None else req.system_prompt
        system = f"{base}\n\n{self.context}" if self.context and base else (self.context or base)
        shown = list(req.history or ())
        history = [*shown, ChatMessage(role="user", content=req.text)]
        reply = Reply()
        with rt.gate.foreground():
            for piece in rt.engine.stream(
                system,
                history,
                should_stop=self.stop.is_set,
                reply=reply,
                logit_bias=req.logit_bias,
                sampling=req.sampling,
            ):
                self.emit(piece)
        metrics = reply.metrics
        if metrics is not None:
            metrics = dataclasses.replace(metrics, stages={**metrics.stages, **self.stages})
            if not reply.cancelled:
                rt.latency.record_many(
                    {"ttft_ms": metrics.ttft_ms, "tokens_per_s": metrics.tokens_per_s}
                )
        return reply.text, reply.cancelled, reply.finish_reason, metrics, None, None


__all__ = ["TurnOutcome", "TurnRequest", "TurnRunner", "find_conversation"]

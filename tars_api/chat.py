"""What the three chat surfaces share (OpenAI, /chat/query, the WebSocket): admission
to the queue, input limits, and a turn as a stream of pieces then its outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tars_api.errors import ApiError
from tars_api.limits import QueueFull, Ticket
from tars_api.runtime import Runtime
from tars_api.turns import Emit, TurnOutcome, TurnRequest, TurnRunner
from tars_assistant.llm import ModelError, Sampling

KEEPALIVE = object()  # yielded by stream_turn while a reply waits for the model
KEEPALIVE_S = 10.0


def admit(runtime: Runtime) -> Ticket:
    """A place in the generation queue, or 503 with Retry-After at once."""
    try:
        return runtime.queue.admit()
    except QueueFull as exc:
        raise queue_full(exc) from None


def queue_full(exc: QueueFull) -> ApiError:
    return ApiError(
        503,
        f"the model is busy: {exc.waiting} replies are waiting ([api] queue_length); "
        f"retry in {exc.retry_after_s} s",
        type_="server_error",
        code="queue_full",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def model_unavailable(exc: ModelError) -> ApiError:
    return ApiError(503, f"the model is unavailable: {exc}", type_="server_error", code="model")


def check_text(text: str, limit: int, param: str = "messages") -> None:
    if len(text) > limit:
        raise ApiError(
            400,
            f"the message is {len(text)} characters long; this server takes at most {limit} "
            "([api] max_message_chars)",
            param=param,
            code="message_too_long",
        )


def sampling(
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    stop: str | Sequence[str] | None,
) -> Sampling:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, "stop: at most 4 sequences", param="stop", code="invalid_value")
    if any(not s for s in stops):
        raise ApiError(400, "stop: sequences must not be empty", param="stop", code="invalid_value")
    return Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stops))


class TurnStream:
    """A turn started at once (it owns its queue ticket from here on), read as events:
    the reply's pieces (str), KEEPALIVE while it waits, then its TurnOutcome.

    ``stop`` ends the reply within one token and still yields the outcome (cancelled);
    ``close`` abandons it (a client that went away). A model failure raises ApiError.
    """

    def __init__(
        self, runtime: Runtime, req: TurnRequest, ticket: Ticket, *, emit: Emit | None = None
    ) -> None:
        self.runtime = runtime
        self.stop = threading.Event()
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self._received = 0  # characters the reader has been handed
        self._cancelled_at: int | None = None
        self.task = asyncio.get_running_loop().create_task(
            TurnRunner(runtime).run(
                req, ticket, on_piece=self._pieces.put_nowait, stop=self.stop, emit=emit
            )
        )
        self.task.add_done_callback(lambda _: self._pieces.put_nowait(None))

    async def events(self, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[Any]:
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive_s):
                        item = await self._pieces.get()
                except TimeoutError:
                    yield KEEPALIVE
                    continue
                if item is None:
                    break
                self._received += len(item)
                yield item
            try:
                outcome: TurnOutcome = await self.task
            except ModelError as exc:
                raise model_unavailable(exc) from None
            if self._cancelled_at is not None:
                tail = outcome.text[self._cancelled_at :]
                outcome.tokens_after_cancel = self.runtime.count_tokens(tail) if tail else 0
            yield outcome
        finally:
            self.close()

    def cancel(self) -> None:
        """Stop the reply within one token; the outcome still comes, cancelled."""
        if self._cancelled_at is None:
            self._cancelled_at = self._received
        self.stop.set()

    def close(self) -> None:
        if not self.task.done():
            self.stop.set()
            self.task.cancel()


async def complete_turn(runtime: Runtime, req: TurnRequest, ticket: Ticket) -> TurnOutcome:
    """The whole reply at once (non-streaming requests)."""
    turn = TurnStream(runtime, req, ticket)
    outcome: TurnOutcome | None = None
    async for item in turn.events():
        if isinstance(item, TurnOutcome):
            outcome = item
    assert outcome is not None
    return outcome


__all__ = [
    "KEEPALIVE",
    "TurnStream",
    "admit",
    "check_text",
    "complete_turn",
    "model_unavailable",
    "queue_full",
    "sampling",
]

"""What keeps one model usable by many clients: body size, per-key rate, a fair queue.

- :class:`BodyLimit` (ASGI middleware) answers 413 to a body over the limit, from its
  Content-Length before reading anything, or as soon as a chunked body passes it.
- :class:`RateLimiter`: a token bucket per API key; an empty bucket is 429 with
  Retry-After (the seconds until the next request would pass).
- :class:`GenerationQueue`: replies wait for the model first come, first served. A
  full queue refuses at once (503 with Retry-After from the mean reply time), so a
  client never hangs on a server that cannot take it.

All of it runs in the server's event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tars_api.errors import ApiError, send_error

# A guess at the first reply's length, until replies have been timed.
INITIAL_REPLY_S = 2.0
RETRY_AFTER_MAX_S = 600


class _TooLarge(Exception):
    pass


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than {limit} bytes ([api] max_body_bytes)",
        code="request_too_large",
    )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await send_error(send, too_large(self.max_bytes))
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The framework turned the aborted read into its own error: say 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await send_error(send, too_large(self.max_bytes))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await send_error(send, too_large(self.max_bytes))


class RateLimiter:
    """``per_minute`` requests per key on average, ``burst`` at once; 0 turns it off."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket: None if it may go on, else the
        seconds to wait."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, waiting: int) -> None:
        super().__init__(f"{waiting} replies are waiting for the model")
        self.retry_after_s = retry_after_s
        self.waiting = waiting


class Ticket:
    """One reply's place in the queue: ``await wait()`` for the model, then
    ``release()`` (idempotent) when the reply has really ended."""

    def __init__(self, queue: GenerationQueue, position: int) -> None:
        self._queue = queue
        self.position = position  # replies that had to finish before this one
        self.admitted_at = time.perf_counter()
        self.granted_at: float | None = None
        self.released = False
        self._granted = asyncio.get_running_loop().create_future()

    @property
    def granted(self) -> bool:
        return self.granted_at is not None

    @property
    def wait_ms(self) -> float:
        end = self.granted_at if self.granted_at is not None else time.perf_counter()
        return (end - self.admitted_at) * 1000

    def _grant(self) -> None:
        self.granted_at = time.perf_counter()
        if not self._granted.done():
            self._granted.set_result(None)

    async def wait(self) -> None:
        if self.granted:
            return
        try:
            await self._granted
        except asyncio.CancelledError:
            self._queue._abandon(self)
            raise

    def release(self) -> None:
        self._queue._release(self)


class GenerationQueue:
    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        self.max_concurrent = max(1, max_concurrent)
        self.max_waiting = max_waiting
        self.active = 0
        self._waiting: deque[Ticket] = deque()
        self._mean_reply_s = INITIAL_REPLY_S
        self.served = 0
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def mean_reply_s(self) -> float:
        return self._mean_reply_s

    def retry_after_s(self) -> int:
        ahead = self.active + len(self._waiting)
        estimate = self._mean_reply_s * max(1, ahead) / self.max_concurrent
        return min(RETRY_AFTER_MAX_S, max(1, math.ceil(estimate)))

    def admit(self) -> Ticket:
        """A place in line (granted at once when the model is free); QueueFull when
        the line is full. Call it before anything slow, so a refusal is immediate."""
        ahead = max(0, self.active + len(self._waiting) - self.max_concurrent + 1)
        ticket = Ticket(self, ahead)
        if self.active < self.max_concurrent and not self._waiting:
            self.active += 1
            ticket._grant()
        elif len(self._waiting) >= self.max_waiting:
            self.refused += 1
            raise QueueFull(self.retry_after_s(), len(self._waiting))
        else:
            self._waiting.append(ticket)
        return ticket

    def _abandon(self, ticket: Ticket) -> None:
        if ticket.granted:
            self._release(ticket)
            return
        with contextlib.suppress(ValueError):
            self._waiting.remove(ticket)
        ticket.released = True

    def _release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        if not ticket.granted:
            self._abandon(ticket)
            return
        assert ticket.granted_at is not None
        took = time.perf_counter() - ticket.granted_at
        self._mean_reply_s = 0.8 * self._mean_reply_s + 0.2 * took if self.served else took
        self.served += 1
        self.active -= 1
        while self._waiting and self.active < self.max_concurrent:
            nxt = self._waiting.popleft()
            self.active += 1
            nxt._grant()

    def snapshot(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "waiting": len(self._waiting),
            "max_concurrent": self.max_concurrent,
            "queue_length": self.max_waiting,
            "served": self.served,
            "refused": self.refused,
            "mean_reply_ms": round(self._mean_reply_s * 1000, 1),
        }


__all__ = ["BodyLimit", "GenerationQueue", "QueueFull", "RateLimiter", "Ticket", "too_large"]

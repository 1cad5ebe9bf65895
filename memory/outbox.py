"""The outbox's delivery: what waits in SQLite goes to the node, in order, exactly once.

Memories are written to the outbox synchronously (:class:`~memory.memory_store.
MemoryStore`); :class:`Delivery` sends the entries oldest first, in batches of one
op with no id twice, and drops each only once the node acknowledged it. Ids are
stable, so an entry sent again (the node's "ok" was lost, TARS died before the
outbox update) is an idempotent upsert or delete. An entry the node refuses for
good is parked (``failed``) instead of blocking the queue; anything else stops
the flush and leaves the entries waiting.

:meth:`Delivery.run` is the loop task: it flushes when kicked (a new memory) or
every ``idle_s``, and backs off while the node is down unless kicked with
``force`` (the node came back).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memory.memory_store import MemoryStore, OutboxEntry
from node_daemon.client import NodeError, NodeUnavailable
from tars_core.settings.memory import MemoryConfig

if TYPE_CHECKING:
    from node_daemon.client import NodeClient

log = logging.getLogger(__name__)

NodeSource = Callable[[], "NodeClient | None"]
# Node error codes that mean "this entry will never be accepted": park it, go on.
PERMANENT_CODES = frozenset({"bad_request", "too_large", "not_found", "unknown_op"})


class NodeNotConnected(NodeUnavailable):
    """There is no node client (the node is off, or still starting)."""

    def __init__(self, op: str) -> None:
        ConnectionError.__init__(self, "the node is not connected")
        self.endpoint, self.op, self.tries, self.timeout_s = "", op, 0, 0.0


@dataclass(frozen=True)
class FlushReport:
    sent: tuple[str, ...] = ()  # item ids acknowledged by the node, in the order sent
    parked: tuple[tuple[str, str], ...] = ()  # (item id, why) the node refused for good
    pending: int = 0
    error: str | None = None  # why delivery stopped early (node down...)


class Delivery:
    def __init__(
        self,
        store: MemoryStore,
        node: NodeSource,
        config: MemoryConfig,
        on_pending: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.node = node
        self.config = config
        self.on_pending = on_pending
        self.last_flush: FlushReport | None = None
        self._flush_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._forced = False
        self._guard = threading.Lock()

    def kick(self, *, force: bool = False) -> None:
        """Wake the delivery loop (thread-safe). ``force`` also cuts a retry back-off
        short: call it when the node (re)starts."""
        with self._guard:
            self._forced = self._forced or force
            loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def flush(self, *, max_entries: int | None = None) -> FlushReport:
        """Send what waits in the outbox, oldest first, until it is empty, the node
        fails, or ``max_entries`` were sent. One flush at a time."""
        loop = asyncio.get_running_loop()
        if self._flush_lock is None or self._flush_lock[0] is not loop:
            self._flush_lock = (loop, asyncio.Lock())  # a lock belongs to one loop
        async with self._flush_lock[1]:
            report = await self._flush(max_entries)
        self.last_flush = report
        if report.sent or report.parked:
            log.info("outbox: %d delivered, %d parked", len(report.sent), len(report.parked))
            if self.on_pending is not None:
                self.on_pending(report.pending)
        return report

    async def _flush(self, max_entries: int | None) -> FlushReport:
        sent: list[str] = []
        parked: list[tuple[str, str]] = []
        error: str | None = None
        budget = max_entries if max_entries is not None else 1 << 62
        while error is None and len(sent) < budget:
            head = self.store.outbox_head(min(self.config.outbox_batch, budget - len(sent)))
            if not head:
                break
            batch = _next_batch(head)
            try:
                await self._send(batch)
            except NodeError as exc:
                if exc.code in PERMANENT_CODES and len(batch) > 1:
                    # Find the entry the node refuses: the others go on, one by one.
                    for entry in batch:
                        error = await self._deliver([entry], sent, parked)
                        if error is not None:
                            break
                    continue
                error = self._failed(batch, exc, parked)
                continue
            except NodeUnavailable as exc:
                error = self._failed(batch, exc, parked)
                continue
            self.store.delivered(batch)
            sent.extend(e.item_id for e in batch)
        return FlushReport(tuple(sent), tuple(parked), self.store.pending_count(), error)

    async def _deliver(
        self, batch: list[OutboxEntry], sent: list[str], parked: list[tuple[str, str]]
    ) -> str | None:
        """Send one batch; None when it was delivered or parked, else why not."""
        try:
            await self._send(batch)
        except (NodeError, NodeUnavailable) as exc:
            return self._failed(batch, exc, parked)
        self.store.delivered(batch)
        sent.extend(e.item_id for e in batch)
        return None

    def _failed(
        self, batch: list[OutboxEntry], exc: Exception, parked: list[tuple[str, str]]
    ) -> str | None:
        """Record a failed try. A refusal for good parks the entry (None: go on);
        anything else leaves it waiting and stops this flush (the reason)."""
        if isinstance(exc, NodeError) and exc.code in PERMANENT_CODES and len(batch) == 1:
            self.store.delivery_failed(batch, str(exc), final=True)
            parked.append((batch[0].item_id, str(exc)))
            log.warning("outbox: the node refused %s for good: %s", batch[0].item_id, exc)
            return None
        self.store.delivery_failed(batch, str(exc), final=False)
        return f"node error: {exc}" if isinstance(exc, NodeError) else str(exc)

    async def _send(self, batch: Sequence[OutboxEntry]) -> None:
        client = self.node()
        if client is None:
            raise NodeNotConnected(batch[0].op)
        # The client's own timeouts: its per-call one, longer for big batches.
        if batch[0].op == "upsert":
            items = [e.payload for e in batch if e.payload is not None]
            # "store": near-duplicates are merged by `tars jobs run`, not dropped here.
            await client.upsert(items, on_duplicate="store")  # type: ignore[arg-type]
        else:
            await client.delete([e.item_id for e in batch])

    async def run(self, *, idle_s: float = 30.0) -> None:
        """The delivery loop: run it as a task for the app's lifetime (cancel to stop).

        Flushes when woken by a new memory (or every ``idle_s``); after a failure it
        backs off (1 s doubling to ``retry_max_s``) unless kicked with ``force``.
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        with self._guard:
            self._loop, self._wake = loop, wake
        backoff = 0.0
        wake.set()  # deliver what an earlier run left behind
        try:
            while True:
                wait = backoff or idle_s
                deadline = loop.time() + wait
                while True:
                    try:
                        await asyncio.wait_for(
                            wake.wait(), timeout=max(0.0, deadline - loop.time())
                        )
                    except TimeoutError:
                        break
                    wake.clear()
                    with self._guard:
                        forced, self._forced = self._forced, False
                    if not backoff or forced:
                        break
                if self.store.pending_count() == 0:
                    backoff = 0.0
                    continue
                try:
                    report = await self.flush()
                except Exception:  # a bug must not end delivery for the session
                    log.exception("outbox delivery failed")
                    report = FlushReport(error="internal error")
                if report.error:
                    backoff = min(max(1.0, backoff * 2), self.config.retry_max_s)
                else:
                    backoff = 0.0
        finally:
            with self._guard:
                if self._wake is wake:
                    self._loop, self._wake = None, None


def _next_batch(head: Sequence[OutboxEntry]) -> list[OutboxEntry]:
    """The longest run at the head with one op and no id twice (the node rejects that)."""
    batch: list[OutboxEntry] = []
    ids: set[str] = set()
    for entry in head:
        if batch and (entry.op != batch[0].op or entry.item_id in ids):
            break
        batch.append(entry)
        ids.add(entry.item_id)
    return batch


__all__ = ["PERMANENT_CODES", "Delivery", "FlushReport", "NodeNotConnected", "NodeSource"]

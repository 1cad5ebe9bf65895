"""Semantic memory: what PC1 remembers on the node, and what it recalls before a reply.

Writes never wait for the node. :meth:`SemanticMemory.remember_exchange` and
:meth:`~SemanticMemory.remember` record the memory and queue its upsert in the
SQLite outbox in one transaction (fast, durable, synchronous); a delivery loop
(:meth:`~SemanticMemory.run_delivery`, a task in the app's event loop) sends the
queue in order, in batches, and drops each entry only once the node acknowledged
it. Ids are stable, so an entry sent again after a crash is an idempotent upsert:
every memory reaches the node exactly once, in order, however long it was down.

Reads go through the node with a deadline: :meth:`~SemanticMemory.recall`
retrieves memories and document passages of the active project and the global
scope, drops forgotten and duplicate ones, and fits them, the pinned memories and
the project's summary into a token budget. If the node is down the recall still
returns (pins and summary only) with ``error`` set, so the reply goes ahead.

The node client comes from a callable, so the app can swap it when the node
restarts. Everything async here runs in one event loop (zmq.asyncio); plain mode
uses :class:`memory.loop.LoopThread`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from memory.context import (
    Entry,
    TokenCounter,
    approx_tokens,
    date_label,
    fit_context,
    one_line,
)
from memory.memory_store import MemoryRecord, MemoryStore
from memory.outbox import Delivery, FlushReport, NodeNotConnected, NodeSource
from memory.retrieval import SearchMode, retrieve
from node_daemon.client import NodeError, NodeUnavailable
from tars_core.settings.memory import MemoryConfig

SummarySource = Callable[[int], "tuple[str, str] | None"]
Scope = Literal["project", "all"]
MEMORY_KINDS = ("exchange", "fact")
DOCUMENT_KIND = "document"


@dataclass(frozen=True)
class Hit:
    """A memory or a document passage, as retrieved or pinned."""

    id: str
    text: str
    kind: str  # exchange | fact | document
    project_id: int | None  # the PC1 project; None: global (or unknown)
    score: float  # higher is better; comparable within one result list
    similarity: float | None  # cosine with the query, when known
    created_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pinned: bool = False
    shown_id: str = ""  # the id as people see it

    @property
    def is_document(self) -> bool:
        return self.kind == DOCUMENT_KIND

    @property
    def source(self) -> str:
        """Where it came from, in a few words."""
        meta = self.metadata
        if self.is_document:
            where = str(meta.get("title") or meta.get("doc") or "document")
            section = meta.get("section")
            return f"{where} § {section}" if section else where
        conv = meta.get("conversation_id")
        if self.kind == "exchange" and conv is not None:
            return f"conversation {conv}"
        return "remembered fact" if self.kind == "fact" else self.kind

    @property
    def label(self) -> str:
        """What precedes it in the model's context."""
        if self.pinned:
            return "pinned"
        if self.is_document:
            return self.source
        return date_label(self.created_at)


@dataclass(frozen=True)
class SearchOutcome:
    hits: tuple[Hit, ...]
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class Recall:
    """What was recalled for one reply."""

    memories: tuple[Hit, ...]  # the candidates, pinned first then best first
    used_ids: tuple[str, ...]  # those that made it into ``context_text``
    context_text: str  # give it to ChatSession.run_turn(context=...)
    context_tokens: int
    latency_ms: float
    error: str | None  # the node could not be asked: the user should be told
    summary_used: bool = False
    shown_ids: tuple[str, ...] = ()  # ``used_ids`` as people see them

    @property
    def stages(self) -> dict[str, float]:
        """For ChatSession.run_turn(stages=...) and the latency panel."""
        return {"retrieval_ms": self.latency_ms}

    @property
    def used(self) -> tuple[Hit, ...]:
        ids = set(self.used_ids)
        return tuple(h for h in self.memories if h.id in ids)

    def summary_line(self) -> str:
        """One line for the transcript, e.g. ``remembered 3 · x12, f9a…, notes.md``."""
        parts = []
        if self.used_ids:
            parts.append(f"remembered {len(self.used_ids)}: " + ", ".join(self.shown_ids))
        if self.summary_used:
            parts.append("project summary")
        if self.error:
            parts.append(f"memory unavailable ({self.error})")
        return " · ".join(parts)

    def details_markdown(self) -> str:
        """The used memories, for the collapsible part of the "remembered" line."""
        lines = []
        for hit in self.used:
            sim = f" · {hit.similarity:.2f}" if hit.similarity is not None else ""
            text = one_line(hit.text)
            text = text if len(text) <= 200 else text[:199] + "…"
            lines.append(f"- `{hit.shown_id}` ({hit.label}{sim}): {text}")
        return "\n".join(lines)


class SemanticMemory:
    def __init__(
        self,
        store: MemoryStore,
        node: NodeSource,
        config: MemoryConfig,
        *,
        count_tokens: TokenCounter = approx_tokens,
        budget_tokens: int | None = None,
        summary_of: SummarySource | None = None,
        on_pending: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.node = node
        self.config = config
        self.count_tokens = count_tokens
        self.budget_tokens = config.context_tokens if budget_tokens is None else budget_tokens
        self.summary_of = summary_of
        self.on_pending = on_pending
        self.delivery = Delivery(store, lambda: self.node(), config, self._pending_changed)

    # -- writes: synchronous, into the outbox ------------------------------------

    def remember_exchange(
        self,
        user_text: str,
        reply_text: str,
        *,
        project_id: int,
        conversation_id: int,
        message_id: int,
    ) -> MemoryRecord | None:
        """Remember a completed exchange (call it only for complete, non-empty replies).
        Idempotent per ``message_id``. None when nothing was stored."""
        if not (self.config.enabled and self.config.remember_exchanges):
            return None
        if not user_text.strip() or not reply_text.strip():
            return None
        text = f"User: {user_text.strip()}\nTARS: {reply_text.strip()}"
        record = self.store.add_memory(
            self.store.exchange_id(message_id),
            "exchange",
            text,
            project_id=project_id,
            conversation_id=conversation_id,
            message_id=message_id,
        )
        if record is not None:
            self._changed()
        return record

    def remember(
        self, text: str, *, project_id: int | None, conversation_id: int | None = None
    ) -> MemoryRecord:
        """Remember an explicit fact; ``project_id=None`` is the global scope."""
        record = self.store.add_memory(
            self.store.new_fact_id(),
            "fact",
            text,
            project_id=project_id,
            conversation_id=conversation_id,
        )
        assert record is not None
        self._changed()
        return record

    def forget(self, ids: Sequence[str]) -> list[str]:
        """Forget memories: hidden at once, deleted on the node through the outbox."""
        done = self.store.forget([self.store.full_id(i) for i in ids])
        if done:
            self._changed()
        return done

    def restore(self, ids: Sequence[str]) -> list[str]:
        """Undo :meth:`forget`."""
        done = self.store.restore([self.store.full_id(i) for i in ids])
        if done:
            self._changed()
        return done

    def pin(self, memory_id: str, pinned: bool = True) -> None:
        """A pinned memory is in every reply's context of its scope (no node needed)."""
        self.store.set_pinned(self.store.full_id(memory_id), pinned)

    def pending_count(self) -> int:
        """Outbox entries waiting for the node (for the status bar)."""
        return self.store.pending_count()

    def _changed(self) -> None:
        self._pending_changed(self.store.pending_count())
        self.kick()

    def _pending_changed(self, pending: int) -> None:
        if self.on_pending is not None:
            self.on_pending(pending)

    # -- delivery (memory.outbox) ------------------------------------------------------

    @property
    def last_flush(self) -> FlushReport | None:
        return self.delivery.last_flush

    def kick(self, *, force: bool = False) -> None:
        """Wake the delivery loop (thread-safe); ``force`` also cuts a retry back-off
        short: call it when the node (re)starts."""
        self.delivery.kick(force=force)

    async def flush(self, *, max_entries: int | None = None) -> FlushReport:
        """Send what waits in the outbox now (see :meth:`memory.outbox.Delivery.flush`)."""
        return await self.delivery.flush(max_entries=max_entries)

    async def run_delivery(self, *, idle_s: float = 30.0) -> None:
        """The delivery loop: run it as a task for the app's lifetime (cancel to stop)."""
        await self.delivery.run(idle_s=idle_s)

    # -- delivery: async, in order -------------------------------------------------

    # -- reads -------------------------------------------------------------------------

    def _hit(self, raw: Mapping[str, Any], score: float) -> Hit:
        kind = str(raw.get("kind", ""))
        meta = raw.get("metadata") or {}
        project_id = self.store.project_from_label(str(raw.get("project", "")))
        shown = self.store.short_id(str(raw["id"]))
        if kind == DOCUMENT_KIND:
            shown = f"{meta.get('title') or 'doc'}#{meta.get('chunk', 0)}"
        return Hit(
            id=str(raw["id"]),
            text=str(raw.get("text", "")),
            kind=kind,
            project_id=project_id,
            score=score,
            similarity=raw.get("similarity"),
            created_at=float(raw.get("created_at") or 0.0),
            metadata=meta if isinstance(meta, dict) else {},
            shown_id=shown,
        )

    def _record_hit(self, record: MemoryRecord, *, pinned: bool = False) -> Hit:
        meta: dict[str, Any] = {"project_id": record.project_id}
        if record.conversation_id is not None:
            meta["conversation_id"] = record.conversation_id
        if record.message_id is not None:
            meta["message_id"] = record.message_id
        return Hit(
            id=record.id,
            text=record.text,
            kind=record.kind,
            project_id=record.project_id,
            score=0.0,
            similarity=None,
            created_at=record.created_at,
            metadata=meta,
            pinned=pinned or record.pinned,
            shown_id=self.store.short_id(record.id),
        )

    async def search(
        self,
        query: str,
        *,
        project_id: int | None = None,
        scope: Scope = "project",
        mode: SearchMode | None = None,
        k: int = 10,
        kinds: Sequence[str] = (*MEMORY_KINDS, DOCUMENT_KIND),
        timeout_s: float | None = None,
    ) -> SearchOutcome:
        """Ranked memories and passages for ``query``: of ``project_id`` and the global
        scope, or of every project (``scope="all"``). Forgotten ones are left out.
        Never raises for the node: a failure is ``error``."""
        t0 = time.perf_counter()
        client = self.node()
        if client is None:
            return SearchOutcome((), 0.0, "the node is not connected")
        store = self.store
        if scope == "all":
            namespaces = []
            if any(k_ in MEMORY_KINDS for k_ in kinds):
                namespaces.append(store.memory_namespace)
            if DOCUMENT_KIND in kinds:
                namespaces.append(store.docs_namespace)
            filters = [{"namespace": ns, "kind": list(kinds)} for ns in namespaces]
        else:
            labels = [store.project_label(project_id)]
            if project_id is not None:
                labels.append(store.project_label(None))
            filters = [{"project": label, "kind": list(kinds)} for label in labels]
        try:
            async with asyncio.timeout(timeout_s or self.config.recall_timeout_s * 4):
                ranked = await retrieve(
                    client,
                    query,
                    filters,
                    mode=mode or self.config.recall_mode,  # type: ignore[arg-type]
                    k=k,
                    keyword_weight=self.config.keyword_weight,
                    rrf_k=self.config.rrf_k,
                )
        except TimeoutError:
            return SearchOutcome((), _ms(t0), "the node did not answer in time")
        except (NodeUnavailable, NodeError) as exc:
            return SearchOutcome((), _ms(t0), str(exc))
        hidden = store.hidden_ids([r.item["id"] for r in ranked])
        hits = tuple(self._hit(r.item, r.score) for r in ranked if r.item["id"] not in hidden)
        return SearchOutcome(hits, _ms(t0))

    async def recall(
        self,
        query: str,
        project_id: int,
        *,
        conversation_id: int | None = None,
        budget_tokens: int | None = None,
        k: int | None = None,
    ) -> Recall:
        """Context for a reply to ``query`` in ``project_id``: the project's summary, the
        pinned memories and the best memories and passages within the token budget.
        Exchanges of ``conversation_id`` (already in the chat history) are left out."""
        t0 = time.perf_counter()
        cfg = self.config
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        k = cfg.recall_k if k is None else k
        pinned = [self._record_hit(r, pinned=True) for r in self.store.pinned(project_id)]
        found: tuple[Hit, ...] = ()
        error: str | None = None
        if cfg.enabled and k > 0 and query.strip():
            kinds: tuple[str, ...] = MEMORY_KINDS
            if cfg.recall_documents:
                kinds = (*kinds, DOCUMENT_KIND)
            outcome = await self.search(
                query,
                project_id=project_id,
                k=k,
                kinds=kinds,
                timeout_s=cfg.recall_timeout_s,
            )
            found, error = outcome.hits, outcome.error
        candidates = _select(pinned, found, cfg.min_similarity, conversation_id)
        summary = None
        if cfg.summary_in_context and self.summary_of is not None:
            summary = self.summary_of(project_id)
        entries = [Entry(h.id, h.text, h.label) for h in candidates]
        fitted = fit_context(entries, budget, self.count_tokens, summary=summary)
        shown = {h.id: h.shown_id for h in candidates}
        return Recall(
            memories=tuple(candidates),
            used_ids=fitted.used_ids,
            context_text=fitted.text,
            context_tokens=fitted.tokens,
            latency_ms=_ms(t0),
            error=error,
            summary_used=fitted.summary_used,
            shown_ids=tuple(shown[i] for i in fitted.used_ids),
        )


def _select(
    pinned: Iterable[Hit],
    found: Iterable[Hit],
    min_similarity: float,
    conversation_id: int | None,
) -> list[Hit]:
    """Pinned first, then the retrieved ones that are similar enough, not from the
    current conversation, and not a repeat of something already chosen."""
    chosen: list[Hit] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    for hit in [*pinned, *found]:
        key = _normalized(hit.text)
        if hit.id in seen_ids or key in seen_texts:
            continue
        if not hit.pinned:
            if hit.similarity is not None and hit.similarity < min_similarity:
                continue
            if (
                conversation_id is not None
                and hit.kind == "exchange"
                and hit.metadata.get("conversation_id") == conversation_id
            ):
                continue
        chosen.append(hit)
        seen_ids.add(hit.id)
        seen_texts.add(key)
    return chosen


def _normalized(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _ms(t0: float) -> float:
    return round(1000 * (time.perf_counter() - t0), 3)


__all__ = [
    "DOCUMENT_KIND",
    "MEMORY_KINDS",
    "Delivery",
    "FlushReport",
    "Hit",
    "NodeNotConnected",
    "NodeSource",
    "Recall",
    "Scope",
    "SearchOutcome",
    "SemanticMemory",
    "SummarySource",
]

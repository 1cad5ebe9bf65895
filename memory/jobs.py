"""Maintenance: `tars jobs run` (nightly through deploy/systemd/tars-jobs.timer).

Jobs, in this order, each reporting what it did; a failing job does not stop
the others:

1. ``flush``: deliver what waits in the outbox.
2. ``merge``: near-duplicate memories (cosine at or above ``[memory]
   merge_threshold`` within one scope) are merged: the newest is kept, the others
   are hidden, recorded as merged into it (``merged_into``, ``merged_at``,
   ``merge_score``) and deleted on the node. Only memories new since the last
   complete run are compared (against everything).
3. ``compact``: the node rebuilds its index without deleted vectors.
4. ``summaries``: projects with messages newer than their summary get a new one
   from the local model (loaded only when some project needs it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memory.memory_store import MemoryRecord
from memory.project_store import ProjectError, Summarizer
from memory.semantic import NodeNotConnected
from node_daemon.client import NodeError

if TYPE_CHECKING:
    from memory.service import Memory

MERGE_CURSOR = "merge_checked_at"
MERGE_NEIGHBOURS = 5
JOB_NAMES = ("flush", "merge", "compact", "summaries")


@dataclass(frozen=True)
class JobReport:
    name: str
    ok: bool
    detail: str
    seconds: float

    def line(self) -> str:
        mark = "ok" if self.ok else "FAILED"
        return f"{self.name:<10} {mark:<6} {self.detail} ({self.seconds:.1f} s)"


async def flush_job(memory: Memory) -> str:
    report = await memory.semantic.flush()
    parked = f", {len(report.parked)} refused by the node" if report.parked else ""
    if report.error:
        raise RuntimeError(
            f"{len(report.sent)} delivered{parked}, {report.pending} still waiting: {report.error}"
        )
    return f"{len(report.sent)} delivered{parked}, {report.pending} waiting"


async def merge_job(memory: Memory, threshold: float | None = None) -> str:
    store, semantic = memory.store, memory.semantic
    threshold = memory.config.merge_threshold if threshold is None else threshold
    client = semantic.node()
    if client is None:
        raise NodeNotConnected("search")
    started = time.time()
    since = float(store.meta(MERGE_CURSOR) or 0.0)
    checked = merged = 0
    cursor = started  # moves back to the oldest memory the node does not have yet
    for record in store.memories_since(since):
        current = store.get_memory(record.id)
        if current is None or not current.active:
            continue  # merged away earlier in this run
        checked += 1
        try:
            result = await client.search(
                like_id=record.id,
                k=MERGE_NEIGHBOURS,
                mode="dense",
                namespace=store.memory_namespace,
                project=store.project_label(record.project_id),
            )
        except NodeError as exc:
            if exc.code == "not_found":  # not delivered yet: the next run compares it
                cursor = min(cursor, record.created_at)
                continue
            raise
        near = [
            (str(h["id"]), float(h["similarity"] or 0.0))
            for h in result["hits"]
            if (h["similarity"] or 0.0) >= threshold
        ]
        others = store.get_memories([i for i, _ in near])
        for other_id, score in near:
            other = others.get(other_id)
            if other is None or not other.active:
                continue
            keep, drop = _newest_first(current, other)
            if store.merge(keep.id, drop.id, score):
                merged += 1
            if drop.id == current.id:
                break  # this one is gone; its other neighbours meet the kept one later
    store.set_meta(MERGE_CURSOR, repr(cursor))
    flushed = await semantic.flush() if merged else None
    tail = f"; {len(flushed.sent)} deletions delivered" if flushed else ""
    return f"{checked} new memories compared, {merged} merged (cosine >= {threshold:g}){tail}"


def _newest_first(a: MemoryRecord, b: MemoryRecord) -> tuple[MemoryRecord, MemoryRecord]:
    return (a, b) if (a.created_at, a.id) >= (b.created_at, b.id) else (b, a)


async def compact_job(memory: Memory) -> str:
    client = memory.semantic.node()
    if client is None:
        raise NodeNotConnected("compact")
    r = await client.compact()
    return (
        f"{r['items']} items, vectors {r['vectors_before']} -> {r['vectors_after']}, "
        f"index {r['index']}"
    )


async def summaries_job(memory: Memory, make_summarizer: Callable[[], Summarizer] | None) -> str:
    projects = memory.projects.needing_summary()
    if not projects:
        return "no project has new conversations"
    if make_summarizer is None:
        raise RuntimeError(f"{len(projects)} projects need a summary but no model is available")
    summarizer = await asyncio.to_thread(make_summarizer)
    done, failed = [], []
    for project in projects:
        try:
            await asyncio.to_thread(memory.projects.summarize, project.id, summarizer)
            done.append(project.name)
        except ProjectError as exc:
            failed.append(f"{project.name}: {exc}")
    if failed:
        raise RuntimeError(f"summarised {done or 'none'}; failed {failed}")
    return "summarised " + ", ".join(done)


async def run_jobs(
    memory: Memory,
    *,
    make_summarizer: Callable[[], Summarizer] | None = None,
    only: Sequence[str] = JOB_NAMES,
    on_report: Callable[[JobReport], None] | None = None,
) -> list[JobReport]:
    """Run the jobs named in ``only`` in their fixed order; every one reports."""
    jobs: dict[str, Callable[[], Awaitable[str]]] = {
        "flush": lambda: flush_job(memory),
        "merge": lambda: merge_job(memory),
        "compact": lambda: compact_job(memory),
        "summaries": lambda: summaries_job(memory, make_summarizer),
    }
    unknown = set(only) - set(jobs)
    if unknown:
        raise ValueError(f"unknown jobs {sorted(unknown)}; known: {', '.join(JOB_NAMES)}")
    reports = []
    for name in JOB_NAMES:
        if name not in only:
            continue
        t0 = time.perf_counter()
        try:
            detail, ok = await jobs[name](), True
        except Exception as exc:  # a job's failure is its report, never the end of the run
            detail, ok = f"{type(exc).__name__}: {exc}", False
        report = JobReport(name, ok, detail, time.perf_counter() - t0)
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports


__all__ = [
    "JOB_NAMES",
    "JobReport",
    "compact_job",
    "flush_job",
    "merge_job",
    "run_jobs",
    "summaries_job",
]

"""The node's items: SQLite (truth) + FAISS (dense search) + FTS5 (keywords), kept in step.

Reads may run on any thread. Writes (``upsert``, ``delete_*``, ``compact``,
``save``) run on the node's single writer thread: each commits to SQLite first,
then updates FAISS, so an acknowledged write is durable and a crash in between
is repaired by ``open`` (FAISS is caught up from SQLite at start).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from node_daemon.faults import Corrupt
from node_daemon.index import IVF_MIN_ITEMS, IndexParams, VectorIndex
from node_daemon.schema import Filter, ItemIn
from node_daemon.store import NewRow, Row, Store

log = logging.getLogger("tars_node.collection")

EXACT_MAX = 2048  # filtered searches over this few candidates are scored exactly
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al.)
DEDUP_PROBE = 32
Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Prepared:
    """An item ready to write: validated, hashed, embedded."""

    item: ItemIn
    doc: str
    content_hash: bytes
    vector: np.ndarray


@dataclass
class Outcome:
    stored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    removed: int = 0


def matches(row: Row, flt: Filter) -> bool:
    return (
        (flt.namespace is None or row.namespace == flt.namespace)
        and (flt.project is None or row.project == flt.project)
        and (flt.kinds is None or row.kind in flt.kinds)
        and (flt.since is None or row.created_at >= flt.since)
        and (flt.until is None or row.created_at < flt.until)
    )


class Collection:
    def __init__(
        self, data_dir: Path, params: IndexParams, *, model: str, dedup_threshold: float
    ) -> None:
        self.data_dir = data_dir
        self.params = params
        self.model = model
        self.dedup_threshold = dedup_threshold
        self.index_path = data_dir / "index.faiss"
        self.store = Store(data_dir / "items.sqlite3")
        self.vindex = VectorIndex.empty(params)
        self.namespaces: dict[str, int] = {}
        self.dirty = 0
        self.saved_at: float | None = None

    @property
    def total(self) -> int:
        return sum(self.namespaces.values())

    # -- start, save, stop --------------------------------------------------------------

    def open(self, encode: Encode) -> None:
        """Check the model, then load FAISS and catch it up with SQLite, or rebuild it."""
        dim = self.params.dim
        model, stored_dim = self.store.meta("model"), self.store.meta("dim")
        if model is not None and (model != self.model or stored_dim != str(dim)):
            log.warning("model changed", extra={"old": model, "new": self.model})
            self._reembed(encode)
            self.index_path.unlink(missing_ok=True)
        self.store.set_meta({"model": self.model, "dim": str(dim)})
        live = self.store.live_rids()
        self.namespaces = self.store.namespace_counts()
        loaded = VectorIndex.load(self.params, self.index_path)
        if loaded is not None and self.params.kind == "ivf" and loaded.actual == "flat":
            loaded = None if len(live) >= IVF_MIN_ITEMS else loaded
        changed = loaded is None
        if loaded is not None:
            have = loaded.ids()
            missing = np.setdiff1d(live, have, assume_unique=True)
            stale = np.setdiff1d(have, live, assume_unique=True)
            if len(missing) > max(1000, len(live) // 2):
                loaded, changed = None, True
            else:
                for rids, vecs in self.store.iter_vectors(dim, missing):
                    loaded.add(rids, vecs)
                loaded.remove(int(r) for r in stale)
                changed = bool(len(missing) or len(stale))
                log.info("index loaded", extra={"added": len(missing), "dropped": len(stale)})
        if loaded is None:
            t0 = time.perf_counter()
            loaded = VectorIndex.build(self.params, lambda: self.store.iter_vectors(dim), len(live))
            log.info(
                "index rebuilt",
                extra={"items": len(live), "ms": round(1000 * (time.perf_counter() - t0))},
            )
        self.vindex = loaded
        if changed:
            self.save()
        else:
            self.saved_at = time.time()

    def _reembed(self, encode: Encode) -> None:
        done = 0
        for batch in self.store.iter_texts():
            vecs = encode([t for _, t in batch])
            self.store.update_vectors(
                [
                    (rid, vec.astype("<f4").tobytes())
                    for (rid, _), vec in zip(batch, vecs, strict=True)
                ]
            )
            done += len(batch)
        log.warning("re-embedded every item with the new model", extra={"items": done})

    def save(self) -> None:
        self.dirty = 0
        self.vindex.save(self.index_path)
        self.saved_at = time.time()

    def close(self) -> None:
        self.store.close()

    # -- reads --------------------------------------------------------------------------

    def dense(
        self, q: np.ndarray, k: int, flt: Filter, exclude: frozenset[int] = frozenset()
    ) -> list[tuple[int, float]]:
        """(rid, cosine), best first, matching ``flt``."""
        if flt.empty:
            scores, ids = self.vindex.search(q, k + len(exclude))
            return _pairs(scores[0], ids[0], exclude)[:k]
        # A broad filter: most of the top hits match anyway.
        probe = k * 4 + len(exclude)
        scores, ids = self.vindex.search(q, probe)
        pairs = _pairs(scores[0], ids[0], exclude)
        rows = self.store.rows_by_rids([r for r, _ in pairs])
        hits = [(r, s) for r, s in pairs if r in rows and matches(rows[r], flt)]
        if len(hits) >= k or int((ids[0] >= 0).sum()) < probe:  # enough, or saw everything
            return hits[:k]
        # A narrow filter: score its candidates exactly, or let FAISS skip the others.
        allowed = self.store.filter_rids(flt)
        if exclude:
            allowed = allowed[~np.isin(allowed, np.fromiter(exclude, np.int64))]
        if len(allowed) <= EXACT_MAX:
            vecs = self.store.vectors_by_rids(allowed.tolist(), self.params.dim)
            if not vecs:
                return []
            rids = np.fromiter(vecs, dtype=np.int64)
            sims = np.stack(list(vecs.values())) @ q.reshape(-1)
            order = np.argsort(-sims)[:k]
            return [(int(rids[i]), float(sims[i])) for i in order]
        scores, ids = self.vindex.search(q, k, allowed)
        return _pairs(scores[0], ids[0], exclude)[:k]

    def search(
        self,
        mode: str,
        query: str | None,
        qvec: np.ndarray | None,
        k: int,
        flt: Filter,
        exclude: frozenset[int] = frozenset(),
    ) -> list[dict[str, Any]]:
        dense: list[tuple[int, float]] = []
        keyword: list[tuple[int, float]] = []
        depth = k if mode != "hybrid" else max(3 * k, 30)
        if mode in ("dense", "hybrid") and qvec is not None:
            dense = self.dense(qvec, depth, flt, exclude)
        if mode in ("keyword", "hybrid") and query is not None:
            keyword = [
                p
                for p in self.store.keyword(query, flt, depth + len(exclude))
                if p[0] not in exclude
            ]
        if mode == "dense":
            ranked = dense
        elif mode == "keyword":
            ranked = keyword[:k]
        else:
            fused: dict[int, float] = {}
            for results in (dense, keyword):
                for rank, (rid, _) in enumerate(results):
                    fused[rid] = fused.get(rid, 0.0) + 1.0 / (RRF_K + rank + 1)
            ranked = sorted(fused.items(), key=lambda p: -p[1])[:k]
        rows = self.store.rows_by_rids([r for r, _ in ranked])
        sims = dict(dense)
        if qvec is not None:
            lacking = [r for r, _ in ranked if r not in sims and r in rows]
            for rid, vec in self.store.vectors_by_rids(lacking, self.params.dim).items():
                sims[rid] = float(vec @ qvec.reshape(-1))
        hits = []
        for rid, score in ranked:
            row = rows.get(rid)
            if row is None:  # deleted meanwhile
                continue
            hit = row_dict(row)
            del hit["updated_at"]
            hit["score"] = float(score)
            hit["similarity"] = sims.get(rid)
            hits.append(hit)
        return hits

    # -- writes (writer thread) ---------------------------------------------------------

    def upsert(
        self, prepared: Sequence[Prepared], on_duplicate: str, doc: tuple[str, str] | None = None
    ) -> Outcome:
        """Store new and changed items; report duplicates; ``doc`` = (namespace, name) whose
        chunks not in ``prepared`` are removed in the same transaction."""
        out = Outcome()
        ids = {p.item.id for p in prepared}
        existing = self.store.existing(list(ids), writer=True)
        now = time.time()
        changed: list[tuple[Prepared, float]] = []
        for p in prepared:
            it, ex = p.item, existing.get(p.item.id)
            created = it.created_at if it.created_at is not None else (ex.created_at if ex else now)
            if ex is not None and (
                ex.content_hash,
                ex.namespace,
                ex.project,
                ex.kind,
                ex.doc,
                ex.metadata,
                ex.created_at,
            ) == (p.content_hash, it.namespace, it.project, it.kind, p.doc, it.metadata, created):
                out.unchanged.append(it.id)
            else:
                changed.append((p, created))
        stale: dict[int, str] = {}
        if doc is not None:
            for item_id, rid in self.store.doc_rids(*doc).items():
                if item_id not in ids:
                    stale[rid] = doc[0]
        replaced = {existing[p.item.id].rid for p, _ in changed if p.item.id in existing}
        dups = self._duplicates([p for p, _ in changed], frozenset(replaced) | frozenset(stale))
        accepted: list[tuple[Prepared, float]] = []
        for (p, created), dup in zip(changed, dups, strict=True):
            if dup is not None:
                out.duplicates.append({"id": p.item.id, "duplicate_of": dup[0], "score": dup[1]})
                if on_duplicate == "skip":
                    continue
            accepted.append((p, created))
            old = existing.get(p.item.id)
            if old is not None:
                stale[old.rid] = old.namespace
        rows = [
            NewRow(
                p.item.id,
                p.item.namespace,
                p.item.project,
                p.item.kind,
                p.doc,
                created,
                now,
                p.item.text,
                p.item.metadata,
                p.content_hash,
                p.vector.astype("<f4").tobytes(),
            )
            for p, created in accepted
        ]
        if not rows and not stale:
            return out
        new_rids = self.store.write(rows, list(stale))
        self.vindex.remove(stale)
        if rows:
            vecs = np.stack([p.vector for p, _ in accepted])
            self.vindex.add(np.asarray(new_rids, dtype=np.int64), vecs)
        self._count(stale.values(), -1)
        self._count((p.item.namespace for p, _ in accepted), +1)
        out.stored = [p.item.id for p, _ in accepted]
        out.removed = len([r for r in stale if r not in replaced])
        self.dirty += len(rows) + len(stale)
        return out

    def _duplicates(
        self, items: Sequence[Prepared], exclude: frozenset[int]
    ) -> list[tuple[str, float] | None]:
        """For each item, (id, cosine) of a near-duplicate in its namespace, or None."""
        found: list[tuple[str, float] | None] = [None] * len(items)
        if not items:
            return found
        thr = self.dedup_threshold
        q = np.stack([p.vector for p in items])
        scores, ids = self.vindex.search(q, DEDUP_PROBE + len(exclude))
        hit_rids = {int(r) for r in ids.ravel() if r >= 0}
        rows = self.store.rows_by_rids(list(hit_rids), writer=True)
        for i, p in enumerate(items):
            pairs = _pairs(scores[i], ids[i], exclude)
            for rid, s in pairs:
                if s < thr:
                    break
                row = rows.get(rid)
                if row is not None and row.namespace == p.item.namespace and row.id != p.item.id:
                    found[i] = (row.id, round(s, 4))
                    break
            else:
                if len(pairs) >= DEDUP_PROBE and pairs[-1][1] >= thr:  # crowded: look closer
                    flt = Filter(namespace=p.item.namespace)
                    for rid, s in self.dense(p.vector, 4, flt, exclude):
                        row = self.store.rows_by_rids([rid], writer=True).get(rid)
                        if s >= thr and row is not None and row.id != p.item.id:
                            found[i] = (row.id, round(s, 4))
                            break
        # within the batch itself
        for i, p in enumerate(items):
            if found[i] is not None:
                continue
            for j in range(i):
                other = items[j]
                if found[j] is None and other.item.namespace == p.item.namespace:
                    s = float(other.vector @ p.vector)
                    if s >= thr:
                        found[i] = (other.item.id, round(s, 4))
                        break
        return found

    def delete_ids(self, ids: Sequence[str]) -> int:
        return self._deleted(self.store.delete_ids(ids))

    def delete_where(self, flt: Filter) -> int:
        return self._deleted(self.store.delete_where(flt))

    def _deleted(self, gone: list[tuple[int, str]]) -> int:
        self.vindex.remove(r for r, _ in gone)
        self._count((ns for _, ns in gone), -1)
        self.dirty += len(gone)
        return len(gone)

    def _count(self, namespaces: Iterable[str], delta: int) -> None:
        for ns in namespaces:
            n = self.namespaces.get(ns, 0) + delta
            if n > 0:
                self.namespaces[ns] = n
            else:
                self.namespaces.pop(ns, None)

    def compact(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        before = self.vindex.size + self.vindex.tombstones
        live = self.store.live_rids()
        dim = self.params.dim
        self.vindex = VectorIndex.build(
            self.params, lambda: self.store.iter_vectors(dim), len(live)
        )
        self.store.optimize()
        self.save()
        return {
            "items": len(live),
            "vectors_before": before,
            "vectors_after": self.vindex.size,
            "index": self.vindex.describe(),
            "took_ms": round(1000 * (time.perf_counter() - t0), 1),
        }


def _pairs(scores: np.ndarray, ids: np.ndarray, exclude: frozenset[int]) -> list[tuple[int, float]]:
    return [
        (int(r), float(s))
        for s, r in zip(scores, ids, strict=True)
        if r >= 0 and int(r) not in exclude
    ]


def row_dict(row: Row) -> dict[str, Any]:
    try:
        metadata = json.loads(row.metadata)  # the node wrote canonical JSON there
    except ValueError as exc:
        raise Corrupt(f"item {row.id[:60]!r}: its metadata is not JSON ({exc})") from None
    return {
        "id": row.id,
        "text": row.text,
        "namespace": row.namespace,
        "project": row.project,
        "kind": row.kind,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "metadata": metadata,
    }

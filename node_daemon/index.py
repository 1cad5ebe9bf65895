"""The FAISS vector index: flat (exact), HNSW or IVF over inner product, keyed by row id.

It is a cache of the vectors SQLite holds (see store.py): rebuilt or caught up
from SQLite at start, saved atomically (temp file, fsync, rename) now and then.
Flat and IVF remove vectors in place; HNSW cannot, so deleted ids become
tombstones that searches skip until ``compact`` rebuilds it. Thread-safe: one
lock around every use of the FAISS object.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

# The stubs faiss ships cover a fraction of its SWIG API: use it untyped.
faiss: Any = _faiss

IVF_MIN_ITEMS = 10_000  # below this an "ivf" index stays flat: exact and just as fast
Batches = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def one_thread_per_search() -> None:
    """For a thread that answers one query at a time: measured on 2 cores, a single query
    runs 1.5-3x faster on one OpenMP thread than on two (10k-100k flat), and concurrent
    requests still use every core through the node's read threads. OpenMP's thread
    count is per calling thread, so the writer (builds, batched dedup) keeps them all."""
    faiss.omp_set_num_threads(1)


@dataclass(frozen=True)
class IndexParams:
    kind: str = "flat"  # flat | hnsw | ivf
    dim: int = 384
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    ivf_nlist: int = 0  # 0 = auto
    ivf_nprobe: int = 16


class VectorIndex:
    def __init__(self, params: IndexParams, index: Any, tombstones: Iterable[int] = ()) -> None:
        self.params = params
        self._index = index
        self._lock = threading.Lock()
        self._tombstones: set[int] = set(tombstones)
        self.actual = _kind_of(index)

    # -- construction -----------------------------------------------------------

    @classmethod
    def empty(cls, params: IndexParams) -> VectorIndex:
        return cls(params, _new_index(params, "hnsw" if params.kind == "hnsw" else "flat"))

    @classmethod
    def build(cls, params: IndexParams, batches: Batches, total: int) -> VectorIndex:
        """A fresh index over every (rids, vectors) batch; ``batches`` may be iterated twice."""
        kind = params.kind
        if kind == "ivf" and total < IVF_MIN_ITEMS:
            kind = "flat"
        index = _new_index(params, kind, total)
        if kind == "ivf":
            ivf = faiss.extract_index_ivf(index)
            sample = _sample(batches, max(ivf.nlist * 40, 10_000), total)
            index.train(sample)
        for rids, vecs in batches():
            index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), rids)
        return cls(params, index)

    @classmethod
    def load(cls, params: IndexParams, path: Path) -> VectorIndex | None:
        """The saved index, or None when missing, unreadable or built differently."""
        try:
            index = faiss.read_index(str(path))
        except Exception:
            return None
        if index.d != params.dim:
            return None
        kind = _kind_of(index)
        if kind != params.kind and not (params.kind == "ivf" and kind == "flat"):
            return None
        return cls(params, index)

    def tuned(self, params: IndexParams) -> VectorIndex:
        """The same vectors searched with other knobs (efSearch, nprobe)."""
        with self._lock:
            return VectorIndex(params, self._index, self._tombstones)

    # -- use -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Live vectors (tombstones excluded)."""
        with self._lock:
            return int(self._index.ntotal) - len(self._tombstones)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def describe(self) -> str:
        if self.actual == "hnsw":
            return f"HNSW{self.params.hnsw_m},Flat IP (efSearch {self.params.hnsw_ef_search})"
        if self.actual == "ivf":
            nlist = faiss.extract_index_ivf(self._index).nlist
            return f"IVF{nlist},Flat IP (nprobe {self.params.ivf_nprobe})"
        pending = " (ivf from 10000 items, after a restart or compact)"
        return "Flat IP" + (pending if self.params.kind == "ivf" else "")

    def add(self, rids: np.ndarray, vecs: np.ndarray) -> None:
        if len(rids) == 0:
            return
        with self._lock:
            self._index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), rids)

    def remove(self, rids: Iterable[int]) -> None:
        ids = np.fromiter(rids, dtype=np.int64)
        if len(ids) == 0:
            return
        with self._lock:
            if self.actual == "hnsw":
                self._tombstones.update(int(r) for r in ids)
            else:
                self._index.remove_ids(ids)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rids), each (n, k); missing slots have rid -1. ``allowed``: live rids only."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.params.dim)
        with self._lock:
            if self._index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
                return np.zeros((len(q), k), np.float32), np.full((len(q), k), -1, np.int64)
            keep: list[Any] = []  # selectors must outlive the search call
            sel = None
            if allowed is not None:
                sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
                keep.append(sel)
            elif self._tombstones:
                inner = faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64))
                sel = faiss.IDSelectorNot(inner)
                keep += [inner, sel]
            scores, ids = self._index.search(q, k, params=self._search_params(sel))
            del keep
        return scores, ids

    def _search_params(self, sel: Any) -> Any:
        if self.actual == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=self.params.hnsw_ef_search)
        if self.actual == "ivf":
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.params.ivf_nprobe)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def ids(self) -> np.ndarray:
        """Every id stored in the FAISS structure (tombstoned ones too)."""
        with self._lock:
            if self.actual == "ivf":
                invlists = faiss.extract_index_ivf(self._index).invlists
                parts = []
                for lst in range(invlists.nlist):
                    size = invlists.list_size(lst)
                    if size:
                        ptr = invlists.get_ids(lst)
                        parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                        invlists.release_ids(lst, ptr)
                return np.concatenate(parts) if parts else np.empty(0, np.int64)
            ids: np.ndarray = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            return ids

    def set_tombstones(self, rids: Iterable[int]) -> None:
        with self._lock:
            self._tombstones = set(int(r) for r in rids)

    def save(self, path: Path) -> None:
        """Write atomically: a reader (or a crash) sees the old file or the new one."""
        with self._lock:
            data = faiss.serialize_index(self._index)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _new_index(params: IndexParams, kind: str, total: int = 0) -> Any:
    d = params.dim
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = max(40, params.hnsw_m * 2)
        return faiss.IndexIDMap(hnsw)
    if kind == "ivf":
        nlist = params.ivf_nlist or int(2 * math.sqrt(total))
        nlist = max(16, min(nlist, total // 39, 65536))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = params.ivf_nprobe
        return index
    return faiss.IndexIDMap(faiss.IndexFlatIP(d))


def _kind_of(index: Any) -> str:
    if isinstance(index, faiss.IndexIDMap):
        inner = faiss.downcast_index(index.index)
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    raise ValueError(f"unsupported FAISS index {type(index).__name__}")


def _sample(batches: Batches, want: int, total: int) -> np.ndarray:
    """About ``want`` training vectors drawn evenly from every batch."""
    rate = min(1.0, want / max(total, 1))
    rng = np.random.default_rng(0)
    parts = []
    for _, vecs in batches():
        take = rng.random(len(vecs)) < rate
        parts.append(np.asarray(vecs[take], dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts))

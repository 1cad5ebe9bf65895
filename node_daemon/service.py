"""The ops: validated args in, msgpack-able results out; nothing here knows about sockets.

Threads: the model runs on one "embed" thread (via the batcher), every write on
one "write" thread (SQLite commit, then FAISS), reads on a small "read" pool, so
a search or a count is answered while a batch encodes or a write commits. The
event loop itself only routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from node_daemon import faults, schema, sysinfo
from node_daemon.collection import Collection, Prepared, row_dict
from node_daemon.embedder import EmbedBatcher, Embedder, text_hash
from node_daemon.index import IndexParams, one_thread_per_search
from node_daemon.ingest import chunk_text
from node_daemon.metrics import OpMetrics
from node_daemon.protocol import (
    BAD_REQUEST,
    BUSY,
    INTERNAL,
    NOT_FOUND,
    PROTOCOL_VERSION,
    TOO_LARGE,
    ProtocolError,
)
from tars_core.settings.server import ServerConfig

log = logging.getLogger("tars_node.service")
T = TypeVar("T")
MAX_INGEST_CHUNKS = 10_000
OPEN_RETRY_S = (2.0, 60.0)  # a data directory that cannot be opened: first and longest wait
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Node:
    def __init__(self, cfg: ServerConfig, data_dir: Path, *, curve: bool) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.curve = curve
        self.started = time.monotonic()
        self.ready = False
        self.endpoint = ""
        self.inflight = 0
        self.faults = faults.FaultState(data_dir)
        self.metrics = OpMetrics()
        self.embedder: Embedder | None = None
        self.batcher: EmbedBatcher | None = None
        self.collection: Collection | None = None
        self._embed_pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="write")
        self._read_pool = ThreadPoolExecutor(
            4, thread_name_prefix="read", initializer=one_thread_per_search
        )
        self._saver: asyncio.Task[None] | None = None
        self.handlers: dict[str, Handler] = {
            "health": self.health,
            "stats": self.stats,
            "embed": self.embed,
            "upsert": self.upsert,
            "search": self.search,
            "get": self.get,
            "delete": self.delete,
            "count": self.count,
            "ingest": self.ingest,
            "compact": self.compact,
        }

    # -- life ------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the model and the index (seconds); until then ops other than health are busy."""
        loop = asyncio.get_running_loop()
        embedder = Embedder(
            self.cfg.embed_model, threads=self.cfg.threads, batch_size=self.cfg.batch_max
        )
        t0 = time.perf_counter()
        await loop.run_in_executor(self._embed_pool, embedder.load)
        params = IndexParams(
            kind=self.cfg.index_type,
            dim=embedder.dim,
            hnsw_m=self.cfg.hnsw_m,
            hnsw_ef_search=self.cfg.hnsw_ef_search,
            ivf_nlist=self.cfg.ivf_nlist,
            ivf_nprobe=self.cfg.ivf_nprobe,
        )
        collection = await self._open_collection(params, embedder)
        self.embedder, self.collection = embedder, collection
        self.batcher = EmbedBatcher(
            embedder,
            self._embed_pool,
            batch_max=self.cfg.batch_max,
            wait_s=self.cfg.batch_wait_ms / 1000,
            cache_items=self.cfg.embed_cache_items,
            max_queue=self.cfg.max_queue,
        )
        self.batcher.start()
        self._saver = loop.create_task(self._save_now_and_then(), name="index-saver")
        self.faults.current = None
        self.ready = True
        log.info(
            "ready",
            extra={
                "model": embedder.name,
                "dim": embedder.dim,
                "device": embedder.device,
                "items": collection.total,
                "index": collection.vindex.describe(),
                "ms": round(1000 * (time.perf_counter() - t0)),
            },
        )

    async def _open_collection(self, params: IndexParams, embedder: Embedder) -> Collection:
        """Open SQLite and FAISS. A storage fault (full, read-only, corrupt) keeps the
        node up: `health` reports it, other ops answer it, and opening is tried again
        now and then, so a freed or remounted disk needs no restart."""
        loop = asyncio.get_running_loop()
        wait, longest = OPEN_RETRY_S

        def open_it() -> Collection:
            collection = Collection(
                self.data_dir, params, model=embedder.name, dedup_threshold=self.cfg.dedup_threshold
            )
            try:
                collection.open(embedder.encode)
            except BaseException:
                collection.close()
                raise
            return collection

        while True:
            try:
                return await loop.run_in_executor(self._write_pool, open_it)
            except Exception as exc:
                # A damaged file can fail in any way: if nothing names it, ask SQLite.
                fault = self.faults.record(exc) or await loop.run_in_executor(
                    self._write_pool, self.faults.check, exc
                )
                if fault is None:
                    raise
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    async def close(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        loop = asyncio.get_running_loop()
        collection = self.collection
        if collection is not None:
            # after every queued write: the writer thread is FIFO
            if collection.dirty:
                try:
                    await loop.run_in_executor(self._write_pool, collection.save)
                except Exception as exc:  # SQLite has every change: FAISS catches up at start
                    log.error(
                        "saving the FAISS index failed",
                        extra={"error": faults.storage_fault(exc, self.data_dir) or str(exc)},
                    )
            await loop.run_in_executor(self._write_pool, collection.close)
        for pool in (self._write_pool, self._read_pool, self._embed_pool):
            pool.shutdown(wait=True, cancel_futures=True)

    async def _save_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.save_interval_s)
            collection = self.collection
            if collection is not None and collection.dirty:
                try:
                    await self._write(collection.save)
                except ProtocolError:
                    pass  # a storage fault: logged once, reported by health
                except Exception:
                    log.exception("saving the FAISS index failed")

    # -- helpers -----------------------------------------------------------------------

    def _need(self) -> tuple[Collection, EmbedBatcher, Embedder]:
        if not self.ready or self.collection is None or self.batcher is None:
            if self.faults.current is not None:
                raise ProtocolError(INTERNAL, self.faults.current)
            raise ProtocolError(BUSY, "the node is starting (loading the model and index)")
        assert self.embedder is not None
        return self.collection, self.batcher, self.embedder

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn, *args)
        except Exception as exc:
            raise self._as_reply(exc) from exc

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._write_pool, fn, *args)
        except Exception as exc:
            raise self._as_reply(exc) from exc
        self.faults.wrote()
        return result

    def _as_reply(self, exc: Exception) -> Exception:
        """A storage fault becomes an `internal` reply that says which; anything else
        is raised as it is."""
        if isinstance(exc, ProtocolError):
            return exc
        fault = self.faults.record(exc)
        return exc if fault is None else ProtocolError(INTERNAL, fault)

    async def explain(self, exc: Exception) -> ProtocolError | None:
        """For the server, an error no code path expected (a value read back of the
        wrong type...): the storage fault behind it, if SQLite's own check finds the
        file damaged; else None (a bug: the server logs its traceback)."""
        known = self._as_reply(exc)
        if isinstance(known, ProtocolError):
            return known
        if self.faults.corrupt:
            return ProtocolError(INTERNAL, str(self.faults.current))
        if not self.faults.check_due():
            return None  # the file was fine a moment ago
        loop = asyncio.get_running_loop()
        fault = await loop.run_in_executor(self._read_pool, self.faults.check, exc)
        return None if fault is None else ProtocolError(INTERNAL, fault)

    async def _prepare(self, items: list[schema.ItemIn], doc: str) -> list[Prepared]:
        """Hash and embed: unchanged texts reuse their stored vectors, the rest go to the model."""
        collection, batcher, embedder = self._need()
        existing = await self._read(collection.store.existing, [it.id for it in items])
        hashes = [text_hash(it.text) for it in items]
        vectors: list[np.ndarray | None] = []
        todo: list[int] = []
        for i, (it, h) in enumerate(zip(items, hashes, strict=True)):
            ex = existing.get(it.id)
            if ex is not None and ex.content_hash == h:
                vectors.append(np.frombuffer(ex.vector, dtype="<f4", count=embedder.dim))
            else:
                vectors.append(None)
                todo.append(i)
        if todo:
            fresh = await batcher.embed([items[i].text for i in todo])
            for i, vec in zip(todo, fresh, strict=True):
                vectors[i] = vec
        return [
            Prepared(it, doc, h, np.asarray(v, dtype=np.float32))
            for it, h, v in zip(items, hashes, vectors, strict=True)
        ]

    # -- ops -----------------------------------------------------------------------------

    async def health(self, args: dict[str, Any]) -> dict[str, Any]:
        schema.parse_empty(args)
        return {
            "ok": True,
            "ready": self.ready,
            "version": PROTOCOL_VERSION,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "model": self.embedder.name if self.ready and self.embedder else None,
            "dim": self.embedder.dim if self.ready and self.embedder else None,
            "items": self.collection.total if self.ready and self.collection else None,
            "curve": self.curve,
            "max_message_bytes": self.cfg.max_message_bytes,
            "storage_error": self.faults.current,
        }

    async def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        schema.parse_empty(args)
        out: dict[str, Any] = await self.health({})
        out["pid"] = os.getpid()
        out["endpoint"] = self.endpoint
        out["data_dir"] = str(self.data_dir)
        out["ops"] = self.metrics.snapshot()
        out["queue"] = {
            "inflight": self.inflight,
            "embed_pending": self.batcher.pending_texts if self.batcher else 0,
        }
        out["system"] = sysinfo.snapshot().to_dict()
        if self.ready and self.collection and self.batcher and self.embedder:
            c, b = self.collection, self.batcher.stats
            out["items_by_namespace"] = dict(c.namespaces)
            out["index"] = {
                "type": c.vindex.actual,
                "configured": self.cfg.index_type,
                "description": c.vindex.describe(),
                "vectors": c.vindex.size,
                "tombstones": c.vindex.tombstones,
                "unsaved_changes": c.dirty,
                "saved_at": c.saved_at,
            }
            out["embed"] = {
                "device": self.embedder.device,
                "requests": b.requests,
                "batches": b.batches,
                "texts_encoded": b.texts_encoded,
                "largest_batch": b.largest_batch,
                "cache_hits": b.cache_hits,
                "cache_misses": b.cache_misses,
                "cache_items": self.batcher.cache_size,
                "texts_per_s": round(b.texts_encoded / b.encode_seconds, 1)
                if b.encode_seconds
                else None,
            }
        return out

    async def embed(self, args: dict[str, Any]) -> dict[str, Any]:
        a = schema.parse_embed(args)
        _, batcher, embedder = self._need()
        vecs = await batcher.embed(a.texts)
        return {
            "model": embedder.name,
            "dim": embedder.dim,
            "count": len(vecs),
            "vectors": vecs.astype("<f4", copy=False).tobytes(),
        }

    async def upsert(self, args: dict[str, Any]) -> dict[str, Any]:
        a = schema.parse_upsert(args)
        collection, _, _ = self._need()
        prepared = await self._prepare(list(a.items), doc="")
        out = await self._write(collection.upsert, prepared, a.on_duplicate, None)
        return {"stored": out.stored, "unchanged": out.unchanged, "duplicates": out.duplicates}

    async def search(self, args: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        a = schema.parse_search(args)
        collection, batcher, embedder = self._need()
        qvec: np.ndarray | None = None
        exclude: frozenset[int] = frozenset()
        if a.vector is not None:
            want = 4 * embedder.dim
            if len(a.vector) != want:
                raise ProtocolError(
                    BAD_REQUEST,
                    f"args.vector: expected {want} bytes ({embedder.dim} float32), "
                    f"found {len(a.vector)}",
                )
            qvec = np.frombuffer(a.vector, dtype="<f4").astype(np.float32)
            if not np.isfinite(qvec).all():
                raise ProtocolError(BAD_REQUEST, "args.vector: contains NaN or infinity")
        elif a.like_id is not None:
            rows = await self._read(collection.store.existing, [a.like_id])
            if a.like_id not in rows:
                raise ProtocolError(NOT_FOUND, f"args.like_id: no item {a.like_id!r}")
            found = rows[a.like_id]
            qvec = np.frombuffer(found.vector, dtype="<f4").astype(np.float32)
            exclude = frozenset({found.rid})
        elif a.mode != "keyword":
            assert a.query is not None
            qvec = (await batcher.embed([a.query], urgent=True))[0]
        hits = await self._read(collection.search, a.mode, a.query, qvec, a.k, a.filter, exclude)
        return {
            "hits": hits,
            "mode": a.mode,
            "took_ms": round(1000 * (time.perf_counter() - t0), 3),
        }

    async def get(self, args: dict[str, Any]) -> dict[str, Any]:
        a = schema.parse_get(args)
        collection, _, _ = self._need()
        rows = await self._read(collection.store.rows_by_ids, list(a.ids))
        return {
            "items": [row_dict(rows[i]) for i in a.ids if i in rows],
            "missing": [i for i in a.ids if i not in rows],
        }

    async def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        a = schema.parse_delete(args)
        collection, _, _ = self._need()
        if a.ids is not None:
            return {"deleted": await self._write(collection.delete_ids, list(a.ids))}
        return {"deleted": await self._write(collection.delete_where, a.filter)}

    async def count(self, args: dict[str, Any]) -> dict[str, Any]:
        a = schema.parse_count(args)
        collection, _, _ = self._need()
        if a.filter.empty:
            return {"count": collection.total}
        return {"count": await self._read(collection.store.count, a.filter)}

    async def ingest(self, args: dict[str, Any]) -> dict[str, Any]:
        a = schema.parse_ingest(args)
        collection, _, _ = self._need()
        size = a.chunk_chars or self.cfg.chunk_chars
        overlap = a.chunk_overlap if a.chunk_overlap is not None else self.cfg.chunk_overlap
        overlap = min(overlap, size // 2)
        chunks = await self._read(lambda: chunk_text(a.text, chunk_chars=size, overlap=overlap))
        if len(chunks) > MAX_INGEST_CHUNKS:
            raise ProtocolError(
                TOO_LARGE,
                f"args.text: {len(chunks)} chunks; at most {MAX_INGEST_CHUNKS} per document",
            )
        meta = json.loads(a.metadata)
        items = [
            schema.ItemIn(
                id=f"doc:{a.namespace}:{a.name}#{c.index}",
                text=c.text,
                namespace=a.namespace,
                project=a.project,
                kind=a.kind,
                created_at=a.created_at,
                metadata=schema.metadata_json(
                    {
                        **meta,
                        "doc": a.name,
                        "chunk": c.index,
                        "chunks": len(chunks),
                        "section": c.heading,
                        "start": c.start,
                        "end": c.end,
                    },
                    "args.metadata",
                ),
            )
            for c in chunks
        ]
        prepared = await self._prepare(items, doc=a.name)
        out = await self._write(collection.upsert, prepared, a.on_duplicate, (a.namespace, a.name))
        dup_ids = {d["id"] for d in out.duplicates} if a.on_duplicate == "skip" else set()
        return {
            "name": a.name,
            "ids": [it.id for it in items if it.id not in dup_ids],
            "chunks": len(chunks),
            "stored": len(out.stored),
            "unchanged": len(out.unchanged),
            "removed": out.removed,
            "duplicates": out.duplicates,
        }

    async def compact(self, args: dict[str, Any]) -> dict[str, Any]:
        schema.parse_empty(args)
        collection, _, _ = self._need()
        result: dict[str, Any] = await self._write(collection.compact)
        return result

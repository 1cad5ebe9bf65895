"""Retrieval over the node: dense, keyword or hybrid, across several scopes at once.

One query may span scopes the node filters one at a time (the active project and
the global scope are two ``project`` labels). The query is embedded once on the
node (``embed``); then every scope is searched concurrently over the one client,
dense with the vector and keyword (BM25) with the text. Lists of one kind are
merged across scopes by their scores, which are comparable (cosine; BM25 with
the whole index's statistics). Hybrid is a weighted reciprocal-rank fusion of the
merged dense and keyword lists, done here on PC1 so the weights are ours:
paraphrased questions share few words with what they ask about, so the keyword
ranking is the weaker voice and counts ``keyword_weight`` against the dense one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from node_daemon.protocol import SearchHit, pack_vectors

if TYPE_CHECKING:
    from node_daemon.client import NodeClient

SearchMode = Literal["dense", "keyword", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "keyword", "hybrid")
RRF_K = 20  # reciprocal-rank fusion constant; 60 in Cormack et al. (2009), see fuse()


@dataclass(frozen=True)
class Ranked:
    item: SearchHit
    score: float  # higher is better: cosine (dense), BM25 (keyword), fused (hybrid)


def merge(lists: Sequence[Sequence[SearchHit]], k: int) -> list[Ranked]:
    """Lists of one kind from several scopes -> one list by score, each id once."""
    best: dict[str, SearchHit] = {}
    for hits in lists:
        for hit in hits:
            old = best.get(hit["id"])
            if old is None or hit["score"] > old["score"]:
                best[hit["id"]] = hit
    ranked = sorted(best.values(), key=lambda h: -h["score"])[:k]
    return [Ranked(h, float(h["score"])) for h in ranked]


def fuse(
    dense: Sequence[Ranked],
    keyword: Sequence[Ranked],
    k: int,
    keyword_weight: float,
    rrf_k: int = RRF_K,
) -> list[Ranked]:
    """Weighted reciprocal-rank fusion: 1/(rrf_k + rank_dense) + w/(rrf_k + rank_keyword).

    With the classic rrf_k = 60 the first twenty ranks of a list weigh almost the
    same, so a weak list reorders a strong one's top hits; a smaller constant and
    a lower weight let the keyword list add what dense search missed (names,
    exact terms) without outvoting it. Measured in bench/memory_recall.py.
    """
    scores: dict[str, float] = {}
    items: dict[str, SearchHit] = {}
    for weight, ranked in ((1.0, dense), (keyword_weight, keyword)):
        for rank, r in enumerate(ranked):
            item_id = r.item["id"]
            scores[item_id] = scores.get(item_id, 0.0) + weight / (rrf_k + rank + 1)
            if item_id not in items or items[item_id].get("similarity") is None:
                items[item_id] = r.item
    order = sorted(scores, key=lambda i: -scores[i])[:k]
    return [Ranked(items[i], scores[i]) for i in order]


async def retrieve(
    client: NodeClient,
    query: str,
    filters: Sequence[Mapping[str, Any]],
    *,
    mode: SearchMode = "hybrid",
    k: int = 10,
    keyword_weight: float = 0.2,
    rrf_k: int = RRF_K,
    depth: int | None = None,
    timeout_s: float | None = None,
) -> list[Ranked]:
    """The ``k`` best items for ``query`` over the union of ``filters`` (each a map of
    the node's search filters: namespace, project, kind...). Raises NodeUnavailable
    or NodeError."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {', '.join(SEARCH_MODES)}, not {mode!r}")
    if not query.strip() or k <= 0 or not filters:
        return []
    depth = depth or (max(3 * k, 20) if mode == "hybrid" else k)
    vector: bytes | None = None
    if mode != "keyword":
        vectors = await client.embed([query], timeout_s=timeout_s)
        vector = pack_vectors(vectors)

    async def run(kind: SearchMode) -> list[Ranked]:
        calls = [
            client.search(
                query if kind == "keyword" else None,
                vector=vector,  # keyword hits get their similarity from it
                mode=kind,
                k=depth,
                timeout_s=timeout_s,
                **dict(f),
            )
            for f in filters
        ]
        results = await asyncio.gather(*calls)
        return merge([r["hits"] for r in results], depth)

    if mode == "dense":
        return (await run("dense"))[:k]
    if mode == "keyword":
        return (await run("keyword"))[:k]
    dense, keyword = await asyncio.gather(run("dense"), run("keyword"))
    return fuse(dense, keyword, k, keyword_weight, rrf_k)


__all__ = ["RRF_K", "SEARCH_MODES", "Ranked", "SearchMode", "fuse", "merge", "retrieve"]

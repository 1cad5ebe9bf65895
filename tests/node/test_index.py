"""The index layer in-process: real FAISS and SQLite, synthetic unit vectors (no model).

Covers what a small daemon test cannot reach cheaply: HNSW tombstones and compact,
IVF (10k+ items), catching FAISS up with SQLite after a crash, and the three ways a
filtered dense search is answered.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node_daemon.collection import EXACT_MAX, Collection, Prepared
from node_daemon.index import IndexParams, VectorIndex
from node_daemon.schema import Filter, ItemIn
from node_daemon.store import NewRow

DIM = 384


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def prepared(ids: list[str], vecs: np.ndarray, namespace: str = "ns") -> list[Prepared]:
    out = []
    for item_id, vec in zip(ids, vecs, strict=True):
        text = f"text of {item_id}"
        item = ItemIn(item_id, text, namespace, "", "note", None, "{}")
        out.append(Prepared(item, "", hashlib.sha256(text.encode()).digest(), vec))
    return out


def no_model(texts: object) -> np.ndarray:
    raise AssertionError("the model is not needed here")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_each_index_type_finds_removes_and_persists(kind: str, tmp_path: Path) -> None:
    n = 12_000
    vecs = unit(n, 1)
    rids = np.arange(100, 100 + n, dtype=np.int64)
    params = IndexParams(kind=kind, dim=DIM, ivf_nprobe=64)

    def batches():  # type: ignore[no-untyped-def]
        for i in range(0, n, 5000):
            yield rids[i : i + 5000], vecs[i : i + 5000]

    index = VectorIndex.build(params, batches, n)
    assert index.actual == kind and index.size == n
    scores, ids = index.search(vecs[:5], 3)
    assert ids[:, 0].tolist() == rids[:5].tolist() and np.allclose(scores[:, 0], 1, atol=1e-4)

    index.remove([int(rids[0]), int(rids[1])])
    assert index.size == n - 2
    assert index.tombstones == (2 if kind == "hnsw" else 0)
    _, ids = index.search(vecs[:2], 3)
    assert int(rids[0]) not in ids and int(rids[1]) not in ids
    _, ids = index.search(vecs[2:3], 3, allowed=np.array([rids[2], rids[3]]))
    assert set(ids[0].tolist()) <= {int(rids[2]), int(rids[3]), -1}
    stored = set(index.ids().tolist())
    assert (int(rids[0]) in stored) is (kind == "hnsw") and int(rids[5]) in stored

    path = tmp_path / "index.faiss"
    index.save(path)
    again = VectorIndex.load(params, path)
    assert again is not None and again.actual == kind
    assert VectorIndex.load(IndexParams(kind=kind, dim=128), path) is None  # other dim
    other = "flat" if kind != "flat" else "hnsw"
    assert VectorIndex.load(IndexParams(kind=other, dim=DIM), path) is None  # other type


def test_ivf_stays_flat_while_small() -> None:
    vecs = unit(500, 2)
    index = VectorIndex.build(
        IndexParams(kind="ivf", dim=DIM),
        lambda: iter([(np.arange(500, dtype=np.int64), vecs)]),
        500,
    )
    assert index.actual == "flat" and "10000" in index.describe()


def test_hnsw_collection_tombstones_compact_and_reopen(tmp_path: Path) -> None:
    params = IndexParams(kind="hnsw", dim=DIM)
    coll = Collection(tmp_path, params, model="m", dedup_threshold=0.95)
    coll.open(no_model)
    ids = [f"i{i}" for i in range(300)]
    vecs = unit(300, 3)
    out = coll.upsert(prepared(ids, vecs), "skip")
    assert len(out.stored) == 300 and not out.duplicates
    assert coll.delete_ids(ids[:50]) == 50
    assert coll.vindex.tombstones == 50 and coll.vindex.size == 250 == coll.total
    hits = coll.dense(vecs[0], 5, Filter())
    assert all(rid not in {r for r, _ in hits} for rid in range(1, 51))
    assert coll.search("dense", None, vecs[60], 1, Filter())[0]["id"] == "i60"
    result = coll.compact()
    assert result["vectors_before"] == 300 and result["vectors_after"] == 250
    assert coll.vindex.tombstones == 0
    coll.close()

    reopened = Collection(tmp_path, params, model="m", dedup_threshold=0.95)
    reopened.open(no_model)
    assert reopened.vindex.size == reopened.total == 250
    reopened.close()


def test_open_catches_faiss_up_with_sqlite_after_a_crash(tmp_path: Path) -> None:
    params = IndexParams(dim=DIM)
    coll = Collection(tmp_path, params, model="m", dedup_threshold=0.95)
    coll.open(no_model)
    vecs = unit(40, 4)
    coll.upsert(prepared([f"a{i}" for i in range(20)], vecs[:20]), "skip")
    coll.save()
    # what a crash between the SQLite commit and FAISS leaves: rows FAISS never saw,
    # and a deleted row FAISS still has
    now = time.time()
    rows = [NewRow(f"b{i}", "ns", "", "note", "", now, now, f"b {i}", "{}", b"h" * 32,
                   vecs[20 + i].astype("<f4").tobytes()) for i in range(20)]  # fmt: skip
    coll.store.write(rows, [])
    coll.store.delete_ids(["a0"])
    coll.close()

    again = Collection(tmp_path, params, model="m", dedup_threshold=0.95)
    again.open(no_model)
    assert again.vindex.size == again.total == 39
    assert again.search("dense", None, vecs[25], 1, Filter())[0]["id"] == "b5"
    assert "a0" not in [h["id"] for h in again.search("dense", None, vecs[0], 3, Filter())]
    again.close()


def test_a_new_model_re_embeds_everything(tmp_path: Path) -> None:
    coll = Collection(tmp_path, IndexParams(dim=DIM), model="old", dedup_threshold=0.95)
    coll.open(no_model)
    coll.upsert(prepared(["x", "y"], unit(2, 5)), "skip")
    coll.close()
    seen: list[str] = []

    def encode(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return unit(len(texts), 6)

    new = Collection(tmp_path, IndexParams(dim=DIM), model="new", dedup_threshold=0.95)
    new.open(encode)  # type: ignore[arg-type]
    assert sorted(seen) == ["text of x", "text of y"] and new.vindex.size == 2
    assert new.store.meta("model") == "new"
    new.close()


def test_filtered_dense_search_matches_brute_force_on_every_path(tmp_path: Path) -> None:
    coll = Collection(tmp_path, IndexParams(dim=DIM), model="m", dedup_threshold=0.999)
    coll.open(no_model)
    rng = np.random.default_rng(7)
    centre = unit(1, 8)[0]
    near = centre + 0.15 * rng.standard_normal((2500, DIM)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    far = unit(2600, 9)
    few = unit(60, 10)
    for name, vecs in (("near", near), ("far", far), ("few", few)):
        ids = [f"{name}{i}" for i in range(len(vecs))]
        for i in range(0, len(ids), 1000):
            coll.upsert(prepared(ids[i : i + 1000], vecs[i : i + 1000], name), "store")
    q = centre
    cases = {  # namespace: its vectors, and which path answers (a spy records it)
        "near": (near, []),  # broad and close to the query: over-fetching is enough
        "few": (few, ["filter_rids", "vectors_by_rids"]),  # narrow: scored exactly
        "far": (far, ["filter_rids"]),  # > EXACT_MAX, far away: FAISS with an id selector
    }
    assert len(far) > EXACT_MAX
    calls: list[str] = []

    def spy(method: str) -> None:
        real = getattr(coll.store, method)

        def record(*args: Any) -> Any:
            calls.append(method)
            return real(*args)

        setattr(coll.store, method, record)

    spy("filter_rids")
    spy("vectors_by_rids")
    for name, (vecs, path) in cases.items():
        calls.clear()
        hits = coll.dense(q, 10, Filter(namespace=name))
        assert calls == path, name
        want = np.argsort(-(vecs @ q))[:10]
        rows = coll.store.rows_by_rids([r for r, _ in hits])
        assert [rows[r].id for r, _ in hits] == [f"{name}{i}" for i in want], name
        assert np.allclose([s for _, s in hits], np.sort(vecs @ q)[::-1][:10], atol=1e-5)
    coll.close()

"""Every op against a real node (the bundled MiniLM, real SQLite, real FAISS, real sockets)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from node_daemon.client import NodeClient, NodeError
from node_daemon.ingest import read_document
from node_daemon.protocol import Item
from tests.node.conftest import Daemon

pytestmark = pytest.mark.slow

CORPUS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The user's daughter Maya starts primary school in September.",
    "Rust's borrow checker prevents data races at compile time.",
    "Sourdough bread needs a starter that is fed flour and water.",
    "The quarterly budget review meeting moved to Thursday at 3 pm.",
    "Jupiter is the largest planet in the solar system.",
    "The user prefers tea without sugar in the morning.",
    "A kettlebell swing works the hips, glutes and hamstrings.",
    "The VPN certificate on the home router expires next March.",
    "Penguins live almost exclusively in the southern hemisphere.",
    "The car's next service is due at 60,000 kilometres.",
]


@pytest.fixture
async def client(node: Daemon) -> AsyncIterator[NodeClient]:
    async with NodeClient(node.endpoint, timeout_s=20.0) as c:
        yield c


def items(ns: str, texts: list[str], **extra: object) -> list[Item]:
    return [Item(id=f"{ns}:{i}", text=t, namespace=ns, **extra) for i, t in enumerate(texts)]  # type: ignore[typeddict-item]


async def test_health_and_stats(client: NodeClient) -> None:
    health = await client.health()
    assert health["ok"] and health["ready"] and health["version"] == 1
    assert health["dim"] == 384 and "MiniLM" in str(health["model"]) and not health["curve"]
    assert client.last_rtt_ms is not None and 0 < client.last_rtt_ms < 1000
    stats = await client.stats()
    assert stats["index"]["type"] == "flat" and stats["uptime_s"] > 0
    assert stats["queue"]["inflight"] >= 1  # this very request
    assert stats["ops"]["health"]["count"] >= 1
    assert {"p50_ms", "p95_ms", "p99_ms"} <= set(stats["ops"]["health"])
    system = stats["system"]
    assert system["ram_total_mb"] > 0 and system["rss_mb"] > 100  # torch + MiniLM are loaded
    assert isinstance(system["gpus"], list)


async def test_every_op_round_trips(client: NodeClient, ns: str) -> None:
    t0 = 1_700_000_000.0
    batch = [
        Item(
            id=f"{ns}:a",
            text=CORPUS[0],
            namespace=ns,
            project="trip",
            kind="fact",
            created_at=t0,
            metadata={"source": "chat", "n": 1, "tags": ["x"]},
        ),
        Item(id=f"{ns}:b", text=CORPUS[1], namespace=ns),
        Item(id=f"{ns}:c", text=CORPUS[2], namespace=ns, kind="person"),
    ]
    up = await client.upsert(batch)
    assert dict(up) == {
        "stored": [f"{ns}:a", f"{ns}:b", f"{ns}:c"],
        "unchanged": [],
        "duplicates": [],
    }
    assert (await client.upsert(batch[:1]))["unchanged"] == [f"{ns}:a"]

    got = await client.get([f"{ns}:a", f"{ns}:zzz"])
    assert got["missing"] == [f"{ns}:zzz"]
    (a,) = got["items"]
    assert (a["text"], a["project"], a["kind"], a["created_at"]) == (CORPUS[0], "trip", "fact", t0)
    assert a["metadata"] == {"source": "chat", "n": 1, "tags": ["x"]}
    assert (await client.get([f"{ns}:b"]))["items"][0]["kind"] == "note"  # the default

    assert await client.count(namespace=ns) == 3
    for mode in ("dense", "keyword", "hybrid"):
        res = await client.search("Eiffel Tower in Paris", namespace=ns, k=2, mode=mode)
        assert res["mode"] == mode and res["hits"][0]["id"] == f"{ns}:a", res
        assert res["took_ms"] >= 0
    hit = (await client.search("Eiffel Tower", namespace=ns, k=1))["hits"][0]
    assert hit["metadata"]["source"] == "chat" and hit["similarity"] is not None

    vecs = await client.embed([CORPUS[0], "something else entirely"])
    assert len(vecs) == 2 and len(vecs[0]) == 384
    assert math.isclose(sum(x * x for x in vecs[0]), 1.0, rel_tol=1e-4)
    by_vec = await client.search(vector=vecs[0], namespace=ns, k=1)
    assert by_vec["hits"][0]["id"] == f"{ns}:a" and by_vec["hits"][0]["score"] > 0.99

    assert await client.delete([f"{ns}:b", f"{ns}:never"]) == 1
    assert await client.delete([f"{ns}:b"]) == 0  # idempotent
    assert await client.delete(namespace=ns, kind="person") == 1
    assert await client.count(namespace=ns) == 1

    ing = await client.ingest("notes.md", "# Notes\n\n" + CORPUS[4], namespace=ns)
    assert ing["chunks"] == 1 and ing["ids"] == [f"doc:{ns}:notes.md#0"]
    assert await client.count(namespace=ns, kind="document") == 1

    compact = await client.compact()
    assert compact["items"] == compact["vectors_after"] >= 2
    assert (await client.search("bread starter", namespace=ns, k=1))["hits"][0]["id"] == ing["ids"][
        0
    ]


async def test_search_returns_the_planted_nearest_neighbours(client: NodeClient, ns: str) -> None:
    await client.upsert(items(ns, CORPUS))
    paraphrases = {
        "Which planet is the biggest one?": 6,
        "How does a plant make food from light?": 1,
        "When does the router's VPN cert run out?": 9,
        "What does the user like to drink at breakfast?": 7,
        "The little girl is going to begin school in the autumn": 2,
    }
    for query, index in paraphrases.items():
        res = await client.search(query, namespace=ns, k=3, mode="dense")
        assert res["hits"][0]["id"] == f"{ns}:{index}", (query, res["hits"])
        scores = [h["score"] for h in res["hits"]]
        assert scores == sorted(scores, reverse=True)
    # like_id: the neighbours of a stored item, without the item itself
    like = await client.search(like_id=f"{ns}:6", namespace=ns, k=3)
    assert f"{ns}:6" not in [h["id"] for h in like["hits"]] and len(like["hits"]) == 3
    with pytest.raises(NodeError) as info:
        await client.search(like_id=f"{ns}:missing")
    assert info.value.code == "not_found"


async def test_filters_on_namespace_project_kind_and_time(client: NodeClient, ns: str) -> None:
    t0 = 1_600_000_000.0
    batch = [
        Item(
            id=f"{ns}:{i}",
            text=text,
            namespace=ns,
            project=f"p{i % 2}",
            kind="fact" if i % 3 == 0 else "note",
            created_at=t0 + 100 * i,
        )
        for i, text in enumerate(CORPUS)
    ]
    await client.upsert(batch)
    await client.upsert([Item(id=f"{ns}-other:0", text=CORPUS[6], namespace=f"{ns}-other")])
    by_id = {it["id"]: it for it in batch}

    async def ids(**filters: object) -> list[str]:
        res = await client.search("the solar system's largest planet", k=20, **filters)  # type: ignore[arg-type]
        return [h["id"] for h in res["hits"]]

    assert sorted(await ids(namespace=ns)) == sorted(by_id)
    assert await ids(namespace=f"{ns}-other") == [f"{ns}-other:0"]
    p1 = await ids(namespace=ns, project="p1")
    assert p1 and all(by_id[i]["project"] == "p1" for i in p1) and len(p1) == 6
    facts = await ids(namespace=ns, kind="fact")
    assert sorted(facts) == sorted(i for i, it in by_id.items() if it["kind"] == "fact")
    assert sorted(await ids(namespace=ns, kind=["fact", "note"])) == sorted(by_id)
    window = await ids(namespace=ns, since=t0 + 300, until=t0 + 600)  # [since, until)
    assert sorted(window) == sorted(f"{ns}:{i}" for i in (3, 4, 5))
    for mode in ("keyword", "dense"):
        res = await client.search("planet", namespace=ns, project="p0", mode=mode, k=20)
        assert all(by_id[h["id"]]["project"] == "p0" for h in res["hits"])
        assert (f"{ns}:6" in [h["id"] for h in res["hits"]]) is True
    assert await client.count(namespace=ns, project="p1", kind="note") == len(
        [i for i in by_id.values() if i["project"] == "p1" and i["kind"] == "note"]
    )


async def test_hybrid_fuses_keyword_and_dense(client: NodeClient, ns: str) -> None:
    code_item = "Ticket ZQX-4471: the office printer on floor two jams on A3 paper."
    texts = [code_item, *CORPUS]
    await client.upsert(items(ns, texts))
    # The code alone means nothing to the model; BM25 finds it.
    kw = await client.search("ZQX-4471", namespace=ns, mode="keyword", k=3)
    assert kw["hits"][0]["id"] == f"{ns}:0" and kw["hits"][0]["similarity"] is None
    # A paraphrase with no shared words: dense finds it, keyword does not.
    query = "which hot beverage is liked at breakfast"
    keyword = await client.search(query, namespace=ns, mode="keyword", k=20)
    assert f"{ns}:8" not in [h["id"] for h in keyword["hits"]]
    hybrid = await client.search(query, namespace=ns, mode="hybrid", k=3)
    assert hybrid["hits"][0]["id"] == f"{ns}:8", hybrid["hits"]
    # Both halves count: the code plus a paraphrase puts the ticket first.
    both = await client.search("ZQX-4471 printer problem", namespace=ns, mode="hybrid", k=5)
    assert both["hits"][0]["id"] == f"{ns}:0"
    top = both["hits"][0]["score"]
    assert math.isclose(top, 2 / 61, rel_tol=1e-6)  # ranked first by both: RRF 1/61 + 1/61


async def test_near_duplicates_are_reported_not_stored_twice(client: NodeClient, ns: str) -> None:
    first = Item(id=f"{ns}:rex", text="The user's dog is called Rex.", namespace=ns)
    assert (await client.upsert([first]))["stored"] == [f"{ns}:rex"]
    again = Item(id=f"{ns}:rex2", text="the user's dog is called Rex", namespace=ns)
    res = await client.upsert([again])
    assert res["stored"] == [] and res["duplicates"][0]["duplicate_of"] == f"{ns}:rex"
    assert res["duplicates"][0]["score"] >= 0.95
    assert await client.count(namespace=ns) == 1
    # within one batch, and kept apart by namespace
    twins = [
        Item(id=f"{ns}:t1", text="Maya's school starts on 4 September.", namespace=ns),
        Item(id=f"{ns}:t2", text="Maya's school starts on 4 September!", namespace=ns),
    ]
    res = await client.upsert(twins)
    assert res["stored"] == [f"{ns}:t1"] and res["duplicates"][0]["id"] == f"{ns}:t2"
    other = Item(id=f"{ns}:rex-elsewhere", text=first["text"], namespace=f"{ns}-b")
    assert (await client.upsert([other]))["stored"] == [f"{ns}:rex-elsewhere"]
    # on_duplicate="store": stored and still reported
    res = await client.upsert([again], on_duplicate="store")
    assert res["stored"] == [f"{ns}:rex2"] and res["duplicates"]
    # an item may change its own text without being its own duplicate
    edit = Item(id=f"{ns}:rex", text="The user's dog is called Rex!", namespace=ns)
    res = await client.upsert([edit], on_duplicate="store")
    assert res["stored"] == [f"{ns}:rex"]


DOC = """# Home network

The router lives in the hallway cupboard. Its admin password is on a card taped
inside the cupboard door. The guest Wi-Fi is called Lighthouse.

## Backups

Every night at 2 am the NAS copies the photo library to an external disk. Once a
month the disk is swapped with the one kept at grandmother's flat, so a fire or
burglary cannot destroy both copies.

## Plants

The fiddle-leaf fig wants bright indirect light and water only when the top two
centimetres of soil are dry. The basil on the kitchen sill needs water daily in
summer.

## Car

The winter tyres are stored at the garage on Mill Street; they go on in late
October. The insurance renews every April and the broker is Ms. Okafor.
"""


async def test_ingest_markdown_and_find_a_passage_by_paraphrase(
    client: NodeClient, ns: str, tmp_path: Path
) -> None:
    path = tmp_path / "household.md"
    path.write_text(DOC, encoding="utf-8")
    text = read_document(path)
    res = await client.ingest(path.name, text, namespace=ns, chunk_chars=300, chunk_overlap=60)
    assert res["chunks"] >= 4 and res["stored"] == res["chunks"] == len(res["ids"])
    assert await client.count(namespace=ns, kind="document") == res["chunks"]

    query = "how do we keep a copy of the pictures safe if the house burns down?"
    hits = (await client.search(query, namespace=ns, kind="document", k=3))["hits"]
    assert "swapped with the one kept at grandmother's" in hits[0]["text"].replace("\n", " ")
    meta = hits[0]["metadata"]
    assert meta["doc"] == "household.md" and meta["section"] == "Backups"
    assert text[meta["start"] : meta["end"]] == hits[0]["text"]

    again = await client.ingest(path.name, text, namespace=ns, chunk_chars=300, chunk_overlap=60)
    assert (again["stored"], again["unchanged"], again["removed"]) == (0, res["chunks"], 0)
    shorter = text.split("## Plants")[0]
    cut = await client.ingest(path.name, shorter, namespace=ns, chunk_chars=300, chunk_overlap=60)
    assert cut["removed"] > 0
    assert await client.count(namespace=ns, kind="document") == cut["chunks"]


async def test_concurrent_embeds_share_model_calls(node: Daemon, ns: str) -> None:
    topics = [
        "volcanoes erupting lava",
        "baking chocolate cake",
        "training for a marathon",
        "repairing a bicycle puncture",
        "learning the violin",
        "planting tulip bulbs",
        "filing income tax returns",
        "watching a solar eclipse",
    ]
    texts = [f"{ns}: a short note about {t}" for t in topics]
    clients = [NodeClient(node.endpoint, timeout_s=20.0) for _ in range(4)]
    try:
        before = (await clients[0].stats())["embed"]
        calls = [clients[i % 4].embed([t]) for i, t in enumerate(texts * 2)]
        results = await asyncio.gather(*calls)
        after = (await clients[0].stats())["embed"]
        # every reply is the vector of its own text: compare with paraphrases embedded apart
        paraphrases = [f"something about {t}" for t in topics]
        ref = np.array(await clients[0].embed(paraphrases))
        for i, (vec,) in enumerate(results):
            assert int(np.argmax(ref @ np.array(vec))) == i % len(topics)
    finally:
        for c in clients:
            c.close()
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == 2 * len(topics)
    assert batches < len(topics), (batches, requests)


async def test_reads_are_answered_while_a_batch_encodes(client: NodeClient, ns: str) -> None:
    await client.upsert(items(ns, CORPUS[:4]))
    long_texts = [f"{ns} {i}: " + " ".join(CORPUS) for i in range(120)]
    big = asyncio.create_task(client.embed(long_texts, timeout_s=120))
    deadline = time.monotonic() + 30
    while (await client.stats())["queue"]["embed_pending"] == 0:
        assert time.monotonic() < deadline and not big.done()
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    assert await client.count(namespace=ns) == 4
    assert len((await client.get([f"{ns}:0"]))["items"]) == 1
    kw = await client.search("Eiffel", namespace=ns, mode="keyword")
    assert kw["hits"][0]["id"] == f"{ns}:0"
    elapsed = time.perf_counter() - t0
    assert not big.done(), "the batch finished before the reads: make it bigger"
    assert elapsed < 5.0  # the batch itself takes far longer; margin for a loaded machine
    assert len(await big) == 120


async def test_several_clients_get_their_own_replies(node: Daemon, ns: str) -> None:
    n = 6
    clients = [NodeClient(node.endpoint, timeout_s=20.0) for _ in range(n)]
    try:
        await asyncio.gather(
            *[
                c.upsert([Item(id=f"{ns}-{i}:x", text=CORPUS[i], namespace=f"{ns}-{i}")])
                for i, c in enumerate(clients)
            ]
        )

        async def worker(i: int, c: NodeClient) -> None:
            for _ in range(10):
                got, count, found = await asyncio.gather(
                    c.get([f"{ns}-{i}:x"]),
                    c.count(namespace=f"{ns}-{i}"),
                    c.search(CORPUS[i], namespace=f"{ns}-{i}", k=1, mode="keyword"),
                )
                assert got["items"][0]["text"] == CORPUS[i]
                assert count == 1
                assert found["hits"][0]["id"] == f"{ns}-{i}:x"

        await asyncio.gather(*[worker(i, c) for i, c in enumerate(clients)])
    finally:
        for c in clients:
            c.close()


async def test_one_client_multiplexes_many_calls(client: NodeClient, ns: str) -> None:
    await client.upsert(items(ns, CORPUS))
    results = await asyncio.gather(*[client.get([f"{ns}:{i % 12}"]) for i in range(60)])
    assert [r["items"][0]["id"] for r in results] == [f"{ns}:{i % 12}" for i in range(60)]

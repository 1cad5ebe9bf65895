"""kill -9 in the middle of a stream of upserts: every acknowledged one survives, and
FAISS agrees with SQLite after the restart. Also: one node per data directory,
`busy` under load, JSON-lines logs, and FAISS rebuilt from SQLite when missing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from node_daemon.client import BlockingNodeClient, NodeError, NodeUnavailable
from node_daemon.collection import Collection
from node_daemon.embedder import BUNDLED_NAME
from node_daemon.index import IndexParams
from node_daemon.schema import Filter
from tests.node.conftest import node_env, spawn, wait_ready

pytestmark = pytest.mark.slow

WORDS = [
    "amber",
    "basalt",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lagoon",
    "meadow",
    "nickel",
    "orchid",
    "pepper",
    "quartz",
]


def unique_text(rnd: random.Random, n: int) -> str:
    return f"Memory number {n}: " + " ".join(rnd.choices(WORDS, k=12)) + "."


def test_kill_9_during_upserts_keeps_every_acknowledged_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server]\nsave_interval_s = 1.0\nmax_queue = 64\n", encoding="utf-8")
    data, home = tmp_path / "node", tmp_path / "home"
    args = ("--config", str(config))
    daemon = spawn(data, home=home, args=args)
    wait_ready(daemon)

    acked: list[str] = []
    texts: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        rnd = random.Random(w)
        n = 0
        with BlockingNodeClient(daemon.endpoint, timeout_s=2.0, retries=1) as client:
            while not stop.is_set():
                batch = []
                for _ in range(rnd.randint(1, 3)):
                    n += 1
                    batch.append({"id": f"w{w}-{n}", "text": unique_text(rnd, n)})
                try:
                    res = client.upsert(batch, on_duplicate="store")  # type: ignore[arg-type]
                except NodeUnavailable:
                    return
                assert res["stored"] == [it["id"] for it in batch]
                with lock:
                    acked.extend(res["stored"])
                    texts.update({it["id"]: it["text"] for it in batch})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.5))  # land anywhere: mid-commit, mid-save, between
    daemon.kill9()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 60

    again = spawn(data, home=home, args=args)
    try:
        wait_ready(again)
        with BlockingNodeClient(again.endpoint, timeout_s=30.0) as client:
            found: list[str] = []
            for i in range(0, len(acked), 1000):
                got = client.get(acked[i : i + 1000])
                assert got["missing"] == [], f"lost {len(got['missing'])} acknowledged upserts"
                found += [it["id"] for it in got["items"]]
            assert sorted(found) == sorted(acked)
            stats = client.stats()
            assert stats["items"] >= len(acked)  # a commit whose reply was lost counts too
            assert stats["index"]["vectors"] == stats["items"], stats["index"]
            for item_id in random.Random(1).sample(acked, 5):  # FAISS really has them
                hits = client.search(texts[item_id], k=1, mode="dense")["hits"]
                assert hits[0]["id"] == item_id and hits[0]["score"] > 0.99

            with pytest.raises(NodeError) as info:  # max_queue = 64
                client.embed([f"text {i}" for i in range(100)])
            assert info.value.code == "busy"

        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "node_daemon",
                "serve",
                "--bind",
                "tcp://127.0.0.1:*",
                "--data-dir",
                str(data),
                *args,
            ],
            env=node_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 4 and "another tars-node" in second.stderr
    finally:
        assert again.stop() == 0, again.stderr()[-2000:]

    lines = [json.loads(ln) for ln in (data / "logs" / "node.log").read_text().splitlines()]
    upserts = [ln for ln in lines if ln.get("event") == "request" and ln.get("op") == "upsert"]
    assert upserts and {"rid", "ms", "outcome", "ts", "level"} <= set(upserts[0])
    assert any(ln.get("event") == "index loaded" for ln in lines)  # caught up, not rebuilt

    # FAISS is a cache: missing or corrupt, it is rebuilt from SQLite
    params = IndexParams(dim=384)
    for damage in ("delete", "corrupt"):
        index_file = data / "index.faiss"
        if damage == "delete":
            index_file.unlink()
        else:
            index_file.write_bytes(b"not a faiss index")
        coll = Collection(data, params, model=BUNDLED_NAME, dedup_threshold=0.95)
        coll.open(lambda texts: np.zeros((len(texts), 384), np.float32))
        try:
            n = coll.store.count(Filter())
            assert coll.vindex.size == n == coll.total and n >= len(acked)
            assert index_file.stat().st_size > 1000
        finally:
            coll.close()

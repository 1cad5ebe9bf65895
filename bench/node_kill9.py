"""kill -9 of the node at random moments during upserts, then restart and check.

Writers (threads, one DEALER each) upsert batches of 1-3 new items without pause;
an upsert counts as acknowledged when its `ok` reply arrived. At a random moment
(``--min-s`` to ``--max-s`` after the writes start, so it lands mid-commit,
mid-embedding or mid-save) the node gets SIGKILL; it is started again on the same
data directory, and then: every acknowledged id must be there (`get`), FAISS must
hold exactly as many vectors as SQLite has rows (`stats` next to a count read
from the SQLite file itself), and a sample of acknowledged texts must come back
first from a dense search (FAISS really has them). Prints ONE JSON object.
``python bench/node_kill9.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from node_daemon.protocol import encode_request  # noqa: E402
from tests.node.conftest import Daemon, spawn  # noqa: E402
from tests.node.wire import Wire, wait_ready  # noqa: E402

WORDS = ["amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo"]


def log(msg: str) -> None:
    print(f"[node_kill9] {msg}", file=sys.stderr, flush=True)


class Writers:
    """Threads upserting until stopped; ``acked`` holds what the node acknowledged."""

    def __init__(self, endpoint: str, n: int, cycle: int, texts: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.cycle = cycle
        self.texts = texts
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(n)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self, w: int) -> None:
        rnd = random.Random(self.cycle * 1000 + w)
        with Wire(self.endpoint) as wire:
            n = 0
            while not self.stop.is_set():
                batch = []
                for _ in range(rnd.randint(1, 3)):
                    n += 1
                    item_id = f"c{self.cycle}-w{w}-{n}"
                    text = f"{item_id}: " + " ".join(rnd.choices(WORDS, k=12))
                    batch.append({"id": item_id, "text": text})
                rid = f"{self.cycle}-{w}-{n}"
                wire.send(
                    [encode_request(rid, "upsert", {"items": batch, "on_duplicate": "store"})]
                )
                reply = None
                for _ in range(150):  # 30 s; once the node is killed, a reply is already here
                    reply = wire.recv(0.2)
                    if reply is not None or self.stop.is_set():
                        break
                if reply is None:
                    return  # the node is gone: what was in flight is not acknowledged
                if not reply.get("ok"):
                    with self.lock:
                        self.errors.append(str(reply.get("error"))[:200])
                    continue
                with self.lock:
                    self.acked.extend(reply["result"]["stored"])
                    self.texts.update({it["id"]: it["text"] for it in batch})


def sqlite_rows(data_dir: Path) -> int:
    con = sqlite3.connect(f"file:{data_dir / 'items.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT count(*) FROM items").fetchone()[0])
    finally:
        con.close()


def check(
    daemon: Daemon, acked: list[str], texts: dict[str, str], rnd: random.Random
) -> dict[str, Any]:
    with Wire(daemon.endpoint) as wire:
        missing = 0
        for i in range(0, len(acked), 1000):
            missing += len(wire.call("get", {"ids": acked[i : i + 1000]}, timeout_s=60)["missing"])
        stats = wire.call("stats", timeout_s=30)
        found = 0
        sample = rnd.sample(acked, min(5, len(acked)))
        for item_id in sample:
            hits = wire.call("search", {"query": texts[item_id], "k": 1, "mode": "dense"})["hits"]
            found += bool(hits) and hits[0]["id"] == item_id
    return {
        "lost": missing,
        "faiss": stats["index"]["vectors"],
        "sqlite": sqlite_rows(daemon.data_dir),
        "items": stats["items"],
        "sample_found": found,
        "sample": len(sample),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--min-s", type=float, default=0.05, help="earliest kill after writes start")
    ap.add_argument("--max-s", type=float, default=2.5, help="latest kill after writes start")
    ap.add_argument("--seed", type=int, default=1)
    opts = ap.parse_args()
    rnd = random.Random(opts.seed)
    root = Path(tempfile.mkdtemp(prefix="tars-node-kill9-"))
    config = root / "node.toml"
    # Save FAISS as often as allowed, so that kills also land in the middle of a save.
    config.write_text("[server]\nsave_interval_s = 1.0\n", encoding="utf-8")
    args = ("--config", str(config))
    data, home = root / "data", root / "home"
    acked: list[str] = []
    texts: dict[str, str] = {}
    cycles: list[dict[str, Any]] = []
    upsert_errors: list[str] = []
    starts: list[float] = []
    t_run = time.perf_counter()
    daemon = spawn(data, home=home, args=args)
    wait_ready(daemon.endpoint, lambda: daemon.proc.poll() is None)
    try:
        for cycle in range(opts.kills):
            writers = Writers(daemon.endpoint, opts.writers, cycle, texts)
            writers.start()
            delay = rnd.uniform(opts.min_s, opts.max_s)
            time.sleep(delay)
            daemon.kill9()
            writers.join()
            acked += writers.acked
            upsert_errors += writers.errors
            t0 = time.perf_counter()
            daemon = spawn(data, home=home, args=args)
            wait_ready(daemon.endpoint, lambda d=daemon: d.proc.poll() is None)
            starts.append(time.perf_counter() - t0)
            result = check(daemon, acked, texts, rnd)
            result.update(
                cycle=cycle, kill_after_s=round(delay, 3), acked_this_cycle=len(writers.acked)
            )
            cycles.append(result)
            log(
                f"kill {cycle + 1}/{opts.kills} after {delay:.2f} s: {len(writers.acked)} acked, "
                f"lost {result['lost']}, faiss {result['faiss']} sqlite {result['sqlite']}"
            )
    finally:
        exit_code = daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    lost = cycles[-1]["lost"] if cycles else 0  # every check looks for all acked so far
    mismatched = [
        c["cycle"] for c in cycles if c["faiss"] != c["sqlite"] or c["items"] != c["sqlite"]
    ]
    out = {
        "bench": "node_kill9",
        "kills": len(cycles),
        "acknowledged_writes": len(acked),
        "acknowledged_writes_lost": lost,
        "restarts_with_a_loss": sum(1 for c in cycles if c["lost"]),
        "restarts_where_faiss_differs_from_sqlite": len(mismatched),
        "faiss_equals_sqlite_after_every_restart": not mismatched,
        "dense_search_found_sample": sum(c["sample_found"] for c in cycles),
        "dense_search_sampled": sum(c["sample"] for c in cycles),
        "upsert_errors": len(upsert_errors),
        "upsert_error_samples": upsert_errors[:3],
        "final_sqlite_rows": cycles[-1]["sqlite"] if cycles else None,
        "restart_to_ready_s": {
            "median": round(sorted(starts)[len(starts) // 2], 2) if starts else None,
            "max": round(max(starts), 2) if starts else None,
        },
        "kill_after_s": {"min": opts.min_s, "max": opts.max_s},
        "goals": {"acknowledged_writes_lost": 0, "restarts_where_faiss_differs_from_sqlite": 0},
        "met": lost == 0 and not mismatched and not upsert_errors,
        "node_exit_code_at_stop": exit_code,
        "seconds": round(time.perf_counter() - t_run, 1),
    }
    print(json.dumps(out))
    return 0 if out["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

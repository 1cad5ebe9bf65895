"""Node under load: N clients x M mixed ops at once, next to the same ops from one client.

Each client is its own process with its own DEALER, in its own namespace, and
runs a closed loop of mixed ops (upsert 20 %, search 30 %, get 20 %, count 15 %,
health 15 %), one request at a time, each with a unique id. Every reply is
checked against the request it should answer: the id, and the content (`get`
returns the ids asked for, `count` equals this client's acknowledged upserts,
`search` for an item's text finds that item first, in this namespace).
Prints ONE JSON object: errors (goal 0), replies matched to the wrong request
(goal 0), latency percentiles per op and overall, throughput, and the same
figures for one client alone in the same run, with the ratios.
``python bench/node_load.py --help``; defaults take a couple of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MIX = (("upsert", 20), ("search", 30), ("get", 20), ("count", 15), ("health", 15))
WORDS = [
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
    "juniper", "kestrel", "lagoon", "meadow", "nickel", "orchid", "pepper", "quartz",
    "raven", "saffron", "tundra", "umber", "violet", "willow",
]  # fmt: skip
TIMEOUT_S = 60.0


def log(msg: str) -> None:
    print(f"[node_load] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def client(name: str, endpoint: str, n_ops: int, seed: int, start: Any, out: Any) -> None:
    """One client process: ``n_ops`` mixed ops, each reply checked; results to ``out``."""
    import msgpack  # type: ignore[import-untyped]
    import zmq

    from node_daemon.protocol import encode_request

    rnd = random.Random(seed)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    ns = f"load-{name}"
    texts: dict[str, str] = {}
    acked: list[str] = []
    lat: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    wrong = 0
    ops = [op for op, weight in MIX for _ in range(weight)]
    start.wait()
    t_start = time.perf_counter()
    for i in range(n_ops):
        op = rnd.choice(ops) if acked else "upsert"
        rid = f"{name}-{i}"
        args: dict[str, Any]
        if op == "upsert":
            item_id = f"{ns}-{len(texts)}"
            text = f"{name} note {len(texts)}: " + " ".join(rnd.choices(WORDS, k=10))
            texts[item_id] = text
            args = {
                "items": [{"id": item_id, "text": text, "namespace": ns}],
                "on_duplicate": "store",
            }
        elif op == "search":
            target = rnd.choice(acked)
            # not the stored text itself: the node's embedding cache would answer it
            args = {"query": texts[target] + "?", "k": 3, "mode": "dense", "namespace": ns}
        elif op == "get":
            ids = rnd.sample(acked, min(3, len(acked)))
            args = {"ids": ids}
        elif op == "count":
            args = {"namespace": ns}
        else:
            args = {}
        t0 = time.perf_counter()
        sock.send(encode_request(rid, op, args))
        if not sock.poll(int(TIMEOUT_S * 1000)):
            errors.append(f"{op}: timeout")
            break
        reply = msgpack.unpackb(sock.recv(), raw=False)
        lat[op].append(1000 * (time.perf_counter() - t0))
        if reply.get("id") != rid:
            wrong += 1
            continue
        if not reply.get("ok"):
            errors.append(f"{op}: {reply['error']['code']}: {reply['error']['message'][:100]}")
            continue
        res = reply["result"]
        if op == "upsert":
            if res["stored"] + res["unchanged"] != [item_id]:
                wrong += 1
            else:
                acked.append(item_id)
        elif op == "search":
            hits = res["hits"]
            if not hits or hits[0]["id"] != target or any(h["namespace"] != ns for h in hits):
                wrong += 1
        elif op == "get":
            if [it["id"] for it in res["items"]] != ids or res["missing"]:
                wrong += 1
        elif op == "count":
            if res["count"] != len(acked):
                wrong += 1
        elif not res.get("ok"):
            wrong += 1
    seconds = time.perf_counter() - t_start
    sock.close(linger=0)
    out.put({"name": name, "lat": dict(lat), "errors": errors, "wrong": wrong, "seconds": seconds})


def phase(endpoint: str, n_clients: int, n_ops: int, tag: str, seed: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # a fresh zmq context per client, no fork of this one
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=client, args=(f"{tag}{k}", endpoint, n_ops, seed + k, start, out))
        for k in range(n_clients)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # every client imported and connected
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=3600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    by_op: dict[str, list[float]] = defaultdict(list)
    for r in results:
        for op, values in r["lat"].items():
            by_op[op].extend(values)
    every = [v for values in by_op.values() for v in values]
    errors = [e for r in results for e in r["errors"]]
    return {
        "clients": n_clients,
        "ops": len(every),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wrong_replies": sum(r["wrong"] for r in results),
        "p50_ms": percentile(every, 0.50),
        "p95_ms": percentile(every, 0.95),
        "p99_ms": percentile(every, 0.99),
        "max_ms": round(max(every), 3) if every else None,
        "ops_per_s": round(len(every) / wall, 1),
        "seconds": round(wall, 2),
        "p99_ms_by_op": {op: percentile(v, 0.99) for op, v in sorted(by_op.items())},
        "p50_ms_by_op": {op: percentile(v, 0.50) for op, v in sorted(by_op.items())},
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ops", type=int, default=1000, help="ops per client")
    ap.add_argument("--seed", type=int, default=1)
    opts = ap.parse_args()

    from tests.node.conftest import spawn
    from tests.node.wire import wait_ready

    root = Path(tempfile.mkdtemp(prefix="tars-node-load-"))
    daemon = spawn(root / "data", home=root / "home")
    try:
        wait_ready(daemon.endpoint, lambda: daemon.proc.poll() is None)
        log(f"one client x {opts.ops} ops")
        single = phase(daemon.endpoint, 1, opts.ops, "s", opts.seed)
        log(f"{opts.clients} clients x {opts.ops} ops at once")
        many = phase(daemon.endpoint, opts.clients, opts.ops, "c", opts.seed + 100)
    finally:
        exit_code = daemon.stop()
        shutil.rmtree(root, ignore_errors=True)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    out = {
        "bench": "node_load",
        "concurrent": many,
        "single_client": single,
        "p99_ratio_concurrent_vs_single": ratio(many["p99_ms"], single["p99_ms"]),
        "p50_ratio_concurrent_vs_single": ratio(many["p50_ms"], single["p50_ms"]),
        "throughput_ratio_concurrent_vs_single": ratio(many["ops_per_s"], single["ops_per_s"]),
        "goals": {"errors": 0, "wrong_replies": 0},
        "met": many["errors"] == 0
        and many["wrong_replies"] == 0
        and single["errors"] == 0
        and single["wrong_replies"] == 0,
        "node_exit_code": exit_code,
        "mix_percent": dict(MIX),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))
    return 0 if out["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

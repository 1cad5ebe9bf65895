"""Streaming through `tars serve` (SSE, measured by the official openai client) vs the
engine alone, 16 concurrent streaming clients, and llama.cpp's own server side by side.

Same GGUF, same threads, same prompt, same number of tokens (EOS banned with
logit_bias), interleaved rounds so machine noise hits every side. Prints one JSON
object. Goals: tok/s through the API / engine alone >= 0.95; TTFT added by the API
<= 10 ms; 16 concurrent clients all complete, in order, none waiting longer than
its queue position x the mean reply time, 0 errors.

llama.cpp's server (`python -m llama_cpp.server`) needs the `server` extra of
llama-cpp-python; its few missing packages are installed into a temporary folder
for this run only, and it is reported unavailable if they do not resolve.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import openai

from tars_api.keys import KeyStore
from tars_assistant.llm import ChatMessage, LLMEngine, Reply, auto_threads, resolve_model_path
from tars_core.config import load_config

PROMPT = "Write a long story about a lighthouse keeper and the sea."
SERVER_EXTRA = ["sse-starlette>=1.6.1", "starlette-context>=0.3.6,<0.4", "pydantic-settings>=2.0.1",
                "python-dotenv"]  # fmt: skip
med = statistics.median


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: no answer after {timeout:.0f} s")


def start_tars(
    root: Path, tokens: int, threads: int, batch_ms: float
) -> tuple[subprocess.Popen[bytes], str, str]:
    keys = root / "keys.json"
    key = KeyStore(keys).new("bench")
    config = root / "config.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{root / "data"}"\n'
        f"[llm]\nn_ctx = 2048\nn_threads = {threads}\nmax_tokens = {tokens}\n"
        "temperature = 0.0\ntop_p = 1.0\n"
        '[node]\nendpoint = "off"\n'
        f'[api]\nkeys_file = "{keys}"\nrate_limit_per_minute = 0\nqueue_length = 64\n'
        f'log_level = "warning"\nstream_batch_ms = {batch_ms}\n',
        encoding="utf-8",
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tars_tui.cli",
            "--config",
            str(config),
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).json().get("model_ready"):
                return proc, url, key
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("tars serve did not start and load its model")
        time.sleep(0.2)


# -- one streamed reply, three ways ------------------------------------------------------


# tok/s on every side: (tokens - 1) / (last piece - first piece), as the reader sees
# the pieces, with the tokens the model counted (a piece can carry several).


def engine_once(engine: LLMEngine, system: str, eos: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    times = []
    history = [ChatMessage(role="user", content=PROMPT)]
    reply = Reply()
    for _ in engine.stream(system, history, logit_bias={eos: -100.0}, reply=reply):
        times.append(time.perf_counter())
    assert reply.metrics is not None and reply.metrics.completion_tokens
    tokens = reply.metrics.completion_tokens
    return (times[0] - t0) * 1000, (tokens - 1) / (times[-1] - times[0])


def client_once(
    client: openai.OpenAI, messages: list[Any], tokens: int, eos: int, extra: dict[str, Any]
) -> tuple[float, float, float | None]:
    """(TTFT ms, tok/s, the server's own engine TTFT ms if it says) as the client sees it."""
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model="tars" if extra else "local",
        messages=messages,
        stream=True,
        max_tokens=tokens,
        temperature=0.0,
        top_p=1.0,
        logit_bias={str(eos): -100},
        extra_body=extra or None,
    )
    times: list[float] = []
    server_ttft: float | None = None
    counted: int | None = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        tars = (chunk.model_extra or {}).get("tars")
        if tars:
            server_ttft = tars["stages"].get("ttft_ms")
        if chunk.usage is not None:
            counted = chunk.usage.completion_tokens
    n = counted or len(times)  # llama.cpp's server: one token per chunk, no usage
    return (times[0] - t0) * 1000, (n - 1) / (times[-1] - times[0]), server_ttft


# -- 16 at once ---------------------------------------------------------------------------


async def concurrent(url: str, key: str, clients: int, tokens: int, eos: int) -> dict[str, Any]:
    client = openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=600)

    async def one(i: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        stream = await client.chat.completions.create(
            model="tars",
            messages=[{"role": "user", "content": f"Tell me fact number {i} about the sea."}],
            stream=True,
            max_tokens=tokens,
            logit_bias={str(eos): -100},  # every reply exactly as long: comparable waits
            extra_body={"tars": {"memory": False}},
        )
        pieces, tars = 0, None
        async for chunk in stream:
            pieces += bool(chunk.choices and chunk.choices[0].delta.content)
            tars = (chunk.model_extra or {}).get("tars") or tars
        assert tars is not None and pieces > 0
        total = (time.perf_counter() - t0) * 1000
        wait = float(tars["stages"]["queue_ms"])
        return {"position": tars["queue_position"], "wait_ms": wait, "service_ms": total - wait}

    results = await asyncio.gather(*(one(i) for i in range(clients)), return_exceptions=True)
    await client.close()
    ok = [r for r in results if isinstance(r, dict)]
    errors = [repr(r) for r in results if not isinstance(r, dict)]
    mean_service = statistics.fmean(r["service_ms"] for r in ok) if ok else 0.0
    ratios = [
        (r["wait_ms"] / (r["position"] * mean_service), r["position"])
        for r in ok
        if r["position"] > 0
    ]
    first = [r["wait_ms"] for r in ok if r["position"] == 0]
    by_position = sorted(ok, key=lambda r: r["position"])
    # The strict FIFO bound: nobody waits longer than the replies ahead of it took.
    ahead = [sum(b["service_ms"] for b in by_position[: r["position"]]) for r in by_position]
    over_ahead = [r["wait_ms"] / a for r, a in zip(by_position, ahead, strict=True) if a > 0]
    fifo = [r["position"] for r in by_position] == list(range(len(ok))) and all(
        a["wait_ms"] <= b["wait_ms"] for a, b in itertools.pairwise(by_position)
    )
    max_ratio, worst_position = max(ratios) if ratios else (0.0, None)
    strict = max(over_ahead, default=0.0)
    return {
        "clients": clients,
        "completed": len(ok),
        "errors": len(errors),
        "error_samples": errors[:3],
        "fifo": fifo,
        "mean_reply_ms": round(mean_service, 1),
        "max_wait_ms": round(max((r["wait_ms"] for r in ok), default=0.0), 1),
        "first_wait_ms": round(first[0], 2) if first else None,
        # The bound: wait / (queue position x mean reply time). Near the head
        # of the line it rests on one or two replies, so their noise shows in it.
        "max_wait_ratio": round(max_ratio, 3),
        "max_wait_ratio_at_position": worst_position,
        "within_position_x_mean_reply": bool(ok) and max_ratio <= 1.10,
        # The exact FIFO bound: wait / (the replies ahead of it, as they took).
        "max_wait_over_replies_ahead": round(strict, 3),
        "none_starved": bool(ok) and fifo and strict <= 1.05,
    }


# -- llama.cpp's own server ---------------------------------------------------------------


def llama_server(root: Path, model: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ)
    missing = [m for m in ("sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    if missing:
        target = root / "llama-server-deps"
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
        done = subprocess.run([*pip, str(target), *SERVER_EXTRA], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"its extra does not resolve: {done.stderr.strip()[-300:]}")
        env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
           "--n_threads_batch", str(threads), "--verbose", "False"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/models", proc, timeout=90)
    except RuntimeError as exc:
        err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
        proc.kill()
        raise RuntimeError(f"{exc}: {err}") from None
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client-tokens", type=int, default=24)
    parser.add_argument("--no-llama-server", action="store_true")
    parser.add_argument("--batch-ms", type=float, default=20.0, help="[api] stream_batch_ms")
    args = parser.parse_args()

    base = load_config(env={}).llm
    threads = base.n_threads or auto_threads()
    cfg = dataclasses.replace(
        base, n_ctx=2048, n_threads=threads, temperature=0.0, top_p=1.0, max_tokens=args.tokens
    )
    model = resolve_model_path(cfg)
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="tars-bench-api-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        tars_proc, url, key = start_tars(root, args.tokens, threads, args.batch_ms)
        procs.append(tars_proc)
        api = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=600)
        engine = LLMEngine(cfg)
        engine.load()
        eos = engine.eos_token_id
        system = cfg.system_prompt
        user = [{"role": "user", "content": PROMPT}]
        with_system = [{"role": "system", "content": system}, *user]
        llama: openai.OpenAI | None = None
        llama_note = "skipped (--no-llama-server)"
        if not args.no_llama_server:
            try:
                lproc, lurl = llama_server(root, model, threads)
                procs.append(lproc)
                llama = openai.OpenAI(api_key="none", base_url=f"{lurl}/v1", max_retries=0)
                llama_note = "ok"
            except (RuntimeError, OSError) as exc:
                llama_note = f"unavailable: {exc}"

        stored = {"tars": {"memory": False}}
        unstored = {"tars": {"memory": False, "store": False}}
        Side = Callable[[], tuple[float, float, float | None]]
        sides: dict[str, Side] = {
            "engine": lambda: (*engine_once(engine, system, eos), None),
            "api": lambda: client_once(api, user, args.tokens, eos, stored),
            "api_unstored": lambda: client_once(api, user, args.tokens, eos, unstored),
        }
        if llama is not None:
            lclient = llama
            sides["llama_server"] = lambda: client_once(lclient, with_system, args.tokens, eos, {})
        for run in sides.values():  # warm every side (page cache, prompt cache)
            run()
        ttft: dict[str, list[float]] = {k: [] for k in sides}
        tps: dict[str, list[float]] = {k: [] for k in sides}
        overhead: list[float] = []
        names = list(sides)
        for i in range(args.rounds):
            order = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
            for name in order:
                t, s, server_ttft = sides[name]()
                ttft[name].append(t)
                tps[name].append(s)
                if name == "api" and server_ttft is not None:
                    overhead.append(t - server_ttft)
        crowd = asyncio.run(concurrent(url, key, args.clients, args.client_tokens, eos))

        result: dict[str, Any] = {
            "bench": "api_stream",
            "model": model.name,
            "tokens_per_reply": args.tokens,
            "rounds": args.rounds,
            "threads": threads,
            "cpu_count": os.cpu_count(),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "engine_tps_median": round(med(tps["engine"]), 1),
            "api_tps_median": round(med(tps["api"]), 1),
            "tps_ratio": round(med(tps["api"]) / med(tps["engine"]), 3),
            # Each round's API run over the engine run next to it: slow drifts of a
            # shared machine cancel out.
            "tps_ratio_paired_median": round(
                med(a / e for a, e in zip(tps["api"], tps["engine"], strict=True)), 3
            ),
            "tps_ratio_goal": 0.95,
            "engine_ttft_ms_median": round(med(ttft["engine"]), 2),
            "api_ttft_ms_median": round(med(ttft["api"]), 2),
            "ttft_added_ms": round(med(ttft["api"]) - med(ttft["engine"]), 2),
            "ttft_added_goal_ms": 10.0,
            # The client's TTFT less the server's own engine TTFT, per request: HTTP,
            # queue, storing the user's message, the pipe to the model process.
            "api_overhead_ttft_ms_median": round(med(overhead), 2) if overhead else None,
            "api_unstored_ttft_ms_median": round(med(ttft["api_unstored"]), 2),
            "api_unstored_tps_median": round(med(tps["api_unstored"]), 1),
            "stream_batch_ms": args.batch_ms,
            "concurrent": crowd,
            "llama_server": llama_note,
        }
        if llama is not None:
            result["llama_server_tps_median"] = round(med(tps["llama_server"]), 1)
            result["llama_server_ttft_ms_median"] = round(med(ttft["llama_server"]), 2)
            result["api_vs_llama_server_tps"] = round(med(tps["api"]) / med(tps["llama_server"]), 3)
        print(json.dumps(result))
        engine.close()
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

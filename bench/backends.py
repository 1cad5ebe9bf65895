"""TARS on a model server: what TARS adds between the user and llama.cpp's own server.

One llama.cpp server (xllamacpp's build of llama-server, the bundled SmolLM2 GGUF, one
thread) is driven three ways, in interleaved rounds so machine noise hits every side:

- directly, by the official ``openai`` client (the baseline);
- through TARS's engine as the TUI uses it (``ModelRouter`` -> ``OpenAIEngine``);
- through ``tars serve`` in front of it, by the same ``openai`` client.

Same prompt, same number of tokens (end of text banned with logit_bias), temperature 0.
Every side is timed the same way, by its reader: TTFT = first text piece after the
request; tok/s = (tokens - 1) / (last piece - first piece). Goals, for both TARS sides,
each run paired with the direct run of its round: tok/s ratio >= 0.97 and TTFT added
<= 10 ms, medians over the rounds.

Fallback: a turn whose primary profile is a dead port and whose fallback is the same
server, through ``ChatSession`` (one retry, then the fallback): time from the request
to the fallback's first piece, p50, beside the same turn sent straight to the server.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import openai

from memory.conversation_store import ConversationStore
from tars_api.keys import KeyStore
from tars_assistant.llm import ChatMessage, Reply, Sampling
from tars_assistant.model_discovery import bundled_model_path
from tars_assistant.model_router import ModelRouter
from tars_assistant.session import ChatSession
from tars_core.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "tests" / "backends" / "llama_server.py"
PROMPT = "Write a long story about a lighthouse keeper and the sea."
med = statistics.median


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llama(model: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), str(model), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("ready"):
        proc.kill()
        raise RuntimeError("the llama.cpp server did not start")
    return proc, f"http://127.0.0.1:{port}/v1"


def write_config(
    root: Path, primary: str, fallback: str | None = None, max_tokens: int = 512
) -> Path:
    keys = root / "keys.json"
    path = root / "config.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{root / "data"}"\n'
        f'[llm]\nmodel = "{"dead" if fallback else "srv"}"\n'
        + ('fallback = "srv"\n' if fallback else "")
        + 'ollama_url = ""\nn_ctx = 2048\ntemperature = 0.0\ntop_p = 1.0\n'
        f"max_tokens = {max_tokens}\n"
        '[node]\nendpoint = "off"\n'
        f'[api]\nkeys_file = "{keys}"\nrate_limit_per_minute = 0\nlog_level = "warning"\n'
        f'[models.srv]\nbackend = "openai"\nbase_url = "{primary}"\n'
        + (f'[models.dead]\nbackend = "openai"\nbase_url = "{fallback}"\n' if fallback else ""),
        encoding="utf-8",
    )
    return path


def start_tars(root: Path, config: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    key = KeyStore(root / "keys.json").new("bench")
    port = free_port()
    cmd = [sys.executable, "-m", "tars_tui.cli", "--config", str(config), "serve"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=5).json().get("model_ready"):
                return proc, url, key
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("tars serve did not start")


def eog_ids(v1: str) -> list[int]:
    """The model's end-of-text tokens, asked of the server (to ban them)."""
    root = v1.removesuffix("/v1")
    ids = []
    for text in ("<|im_end|>", "<|endoftext|>"):
        r = httpx.post(f"{root}/tokenize", json={"content": text, "parse_special": True})
        ids += [int(t) for t in r.json().get("tokens", [])]
    return sorted(set(ids))


def client_once(
    client: openai.OpenAI, model: str, tokens: int, bias: dict[str, int], system: str | None
) -> tuple[float, float]:
    """``system``: sent by this client (tars serve adds its own: None)."""
    t0 = time.perf_counter()
    times: list[float] = []
    used = 0
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    stream = client.chat.completions.create(
        model=model,
        messages=[*messages, {"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias=bias,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    return (times[0] - t0) * 1000, (used - 1) / (times[-1] - times[0])


def engine_once(
    router: ModelRouter, tokens: int, bias: dict[int, float], system: str
) -> tuple[float, float]:
    t0 = time.perf_counter()
    times: list[float] = []
    reply = Reply()
    history = [ChatMessage(role="user", content=PROMPT)]
    sampling = Sampling(max_tokens=tokens, temperature=0.0)
    for _ in router.stream(system, history, reply=reply, logit_bias=bias, sampling=sampling):
        times.append(time.perf_counter())
    assert reply.metrics is not None and reply.metrics.completion_tokens
    return (times[0] - t0) * 1000, (reply.metrics.completion_tokens - 1) / (times[-1] - times[0])


def fallback_once(session: ChatSession) -> float:
    t0 = time.perf_counter()
    first: list[float] = []
    notes: list[str] = []

    def piece(_: str) -> None:
        if notes and not first:
            first.append(time.perf_counter())

    session.new_conversation()
    session.run_turn("Say hello.", on_piece=piece, on_notice=notes.append)
    assert notes and first, "the fallback did not answer"
    return (first[0] - t0) * 1000


def direct_session_once(session: ChatSession) -> float:
    t0 = time.perf_counter()
    first: list[float] = []
    session.new_conversation()
    session.run_turn("Say hello.", on_piece=lambda _: first.append(time.perf_counter()))
    return (first[0] - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=192)
    ap.add_argument("--fallback-turns", type=int, default=7)
    args = ap.parse_args()
    model = bundled_model_path()
    assert model is not None, "the bundled SmolLM2 is not installed (make setup)"
    llama, v1 = start_llama(model)
    tmp = Path(tempfile.mkdtemp(prefix="tars-bench-backends-"))
    serve = None
    try:
        config_path = write_config(tmp, v1)
        config = load_config(config_path, env={})
        serve, url, key = start_tars(tmp, config_path)
        bias = {i: -100.0 for i in eog_ids(v1)}
        wire_bias = {str(k): -100 for k in bias}
        direct = openai.OpenAI(base_url=v1, api_key="none", max_retries=0)
        through = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        router = ModelRouter(config, process=False)
        router.load()
        # Every side sends the same prompt (tars serve's system prompt), so the server's
        # prompt cache serves each alike; the order rotates every round.
        system = config.llm.system_prompt
        runs = {
            "direct": lambda: client_once(direct, "x", args.tokens, wire_bias, system),
            "engine": lambda: engine_once(router, args.tokens, bias, system),
            "serve": lambda: client_once(through, "tars", args.tokens, wire_bias, None),
        }
        sides: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        client_once(direct, "x", 32, wire_bias, system)  # warm-up: the server's first request
        order = list(runs)
        for i in range(args.rounds):
            for name in order[i % 3 :] + order[: i % 3]:
                sides[name].append(runs[name]())
        router.close()
        result: dict[str, Any] = {"bench": "backends", "tokens": args.tokens, "rounds": args.rounds}
        base_ttft = med(t for t, _ in sides["direct"])
        base_tps = med(s for _, s in sides["direct"])
        result["direct"] = {"ttft_ms_p50": round(base_ttft, 1), "tok_s_p50": round(base_tps, 1)}
        for side in ("engine", "serve"):
            ttft = med(t for t, _ in sides[side])
            tps = med(s for _, s in sides[side])
            # Each round's run beside the direct run of the same round: this machine's
            # speed drifts by several per cent over a minute, within a round far less.
            paired = med(s / d for (_, s), (_, d) in zip(sides[side], sides["direct"], strict=True))
            added = med(t - d for (t, _), (d, _) in zip(sides[side], sides["direct"], strict=True))
            result[side] = {
                "ttft_ms_p50": round(ttft, 1),
                "tok_s_p50": round(tps, 1),
                "tok_s_ratio_of_medians": round(tps / base_tps, 3),
                "tok_s_ratio_paired": round(paired, 3),
                "ttft_added_ms_p50": round(ttft - base_ttft, 1),
                "ttft_added_ms_paired_p50": round(added, 1),
                "goal_met": paired >= 0.97 and added <= 10.0,
            }
        result["fallback"] = fallback_figures(tmp, v1, args.fallback_turns)
        print(_json(result))
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(20)
        llama.kill()


def fallback_figures(tmp: Path, v1: str, turns: int) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    root = tmp / "fallback"
    root.mkdir()
    config: Config = load_config(write_config(root, v1, fallback=dead, max_tokens=8), env={})
    store = ConversationStore(config.data_dir / "tars.db")
    failing = ChatSession(config, ModelRouter(config, process=False), store)
    straight = ChatSession(config, ModelRouter(config, profile="srv", process=False), store)
    try:
        first = fallback_once(failing)  # includes building and asking the fallback
        dead_times = [fallback_once(failing) for _ in range(turns)]
        direct_times = [direct_session_once(straight) for _ in range(turns)]
    finally:
        failing.engine.close()
        straight.engine.close()
        store.close()
    return {
        "first_turn_ms": round(first, 1),
        "dead_primary_to_fallback_first_piece_ms_p50": round(med(dead_times), 1),
        "same_turn_straight_to_the_server_ms_p50": round(med(direct_times), 1),
        "added_by_the_dead_primary_ms_p50": round(med(dead_times) - med(direct_times), 1),
        "turns": turns,
    }


def _json(obj: object) -> str:
    return json.dumps(obj)


if __name__ == "__main__":
    main()

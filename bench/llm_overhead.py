"""Decode speed and TTFT through TARS's engine vs bare llama-cpp-python.

Same GGUF, same settings, same prompt, same number of tokens (EOS banned),
runs interleaved A/B so machine noise hits both. Prints one JSON object.
Goal: decode ratio >= 0.97, TTFT added by the engine <= 5 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_cpp import Llama

from tars_assistant.llm import ChatMessage, LLMEngine, Reply, auto_threads, resolve_model_path
from tars_core.config import load_config

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def bare_run(
    llama: Llama, messages: list[ChatMessage], tokens: int, eos: int
) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    for chunk in llama.create_chat_completion(
        messages=[dict(m) for m in messages],  # type: ignore[misc]
        max_tokens=tokens,
        temperature=0.0,
        top_p=1.0,
        repeat_penalty=1.1,
        stream=True,
        logit_bias={eos: -100.0},
    ):
        delta = chunk["choices"][0]["delta"]  # type: ignore[index]
        if isinstance(delta, dict) and delta.get("content"):
            n += 1
            last = time.perf_counter()
            first = first or last
    return (first - t0) * 1000, (n - 1) / (last - first)


def engine_run(engine: LLMEngine, system: str, tokens: int, eos: int) -> tuple[float, float]:
    reply = Reply()
    for _ in engine.stream(
        system, [ChatMessage(role="user", content=PROMPT)], reply=reply, logit_bias={eos: -100.0}
    ):
        pass
    assert reply.metrics is not None and reply.metrics.ttft_ms is not None
    assert reply.metrics.tokens_per_s is not None
    return reply.metrics.ttft_ms, reply.metrics.tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    base = load_config(env={}).llm
    cfg = dataclasses.replace(base, temperature=0.0, top_p=1.0, max_tokens=args.tokens, n_ctx=2048)
    path = resolve_model_path(cfg)
    threads = cfg.n_threads or auto_threads()
    engine = LLMEngine(cfg)
    engine.load()
    eos = engine.eos_token_id
    bare = Llama(
        model_path=str(path),
        n_ctx=cfg.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=cfg.n_gpu_layers,
        verbose=False,
    )
    system = cfg.system_prompt
    messages = [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=PROMPT),
    ]
    # Warm both (page cache, allocator), then interleave.
    bare_run(bare, messages, 16, eos)
    engine_run(engine, system, 16, eos)
    b_ttft, b_tps, e_ttft, e_tps = [], [], [], []
    for i in range(args.rounds):
        # ABBA: neither side always runs first (caches, CPU clocks).
        for side in ("bare", "engine") if i % 2 == 0 else ("engine", "bare"):
            if side == "bare":
                t, s = bare_run(bare, messages, args.tokens, eos)
                b_ttft.append(t)
                b_tps.append(s)
            else:
                t, s = engine_run(engine, system, args.tokens, eos)
                e_ttft.append(t)
                e_tps.append(s)
    med = statistics.median
    result = {
        "bench": "llm_overhead",
        "model": path.name,
        "tokens_per_reply": args.tokens,
        "rounds": args.rounds,
        "engine_decode_tps_median": round(med(e_tps), 1),
        "bare_decode_tps_median": round(med(b_tps), 1),
        "decode_ratio": round(med(e_tps) / med(b_tps), 3),
        "decode_ratio_goal": 0.97,
        "engine_ttft_ms_median": round(med(e_ttft), 2),
        "bare_ttft_ms_median": round(med(b_ttft), 2),
        "ttft_added_ms": round(med(e_ttft) - med(b_ttft), 2),
        "ttft_added_goal_ms": 5.0,
        "threads": threads,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The headless app streaming a 512-token reply, against the engine alone.

Measured side by side in one run (interleaved rounds, same model, same prompt,
EOS banned so every reply is exactly --tokens long):
- tokens/s end to end through the UI (Enter -> last chunk rendered) vs the engine
  alone (call -> last token), goal ratio >= 0.95;
- event-loop lag during streaming (a 10 ms ticker's overshoot), goal p99 <= 50 ms;
- start -> first frame, next to the model's load time (the frame must not wait).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from textual import events

from tars_assistant.llm import ChatMessage, LLMEngine, Reply
from tars_assistant.llm_process import Engine, ProcessEngine
from tars_core.config import Config, load_config
from tars_tui.app import make_app
from tars_tui.messages import ModelLoaded, ReplyChunk, ReplyFinished
from tars_tui.screens.chat import ChatScreen

PROMPT = "Write a long story about a lighthouse keeper and the sea."
TICK_S = 0.010


class BanEosEngine(LLMEngine):
    """The real engine, told to never stop early so each reply has the same length."""

    def stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("logit_bias", {self.eos_token_id: -100.0})
        return super().stream(*args, **kwargs)


class BanEosProcessEngine(ProcessEngine):
    """The engine the TUI uses (llama.cpp in a child process), likewise."""

    def stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("logit_bias", {self.eos_token_id: -100.0})
        return super().stream(*args, **kwargs)


STORE_WRITES = ("begin_turn", "checkpoint_reply", "finish_reply")


def time_storage(store: object) -> dict[str, float]:
    """Wrap the store's writes on this instance to sum the time the turn spends in them
    (each commits with an fsync: synchronous = FULL)."""
    totals = {"ms": 0.0, "calls": 0.0}
    for name in STORE_WRITES:
        original = getattr(store, name)

        def timed(*a: object, _original: Any = original, **kw: object) -> object:
            t = time.perf_counter()
            try:
                return _original(*a, **kw)
            finally:
                totals["ms"] += (time.perf_counter() - t) * 1000
                totals["calls"] += 1

        setattr(store, name, timed)
    return totals


def engine_alone(engine: LLMEngine, system: str) -> tuple[float, int]:
    reply = Reply()
    t0 = time.perf_counter()
    for _ in engine.stream(system, [ChatMessage(role="user", content=PROMPT)], reply=reply):
        pass
    assert reply.metrics is not None and reply.metrics.completion_tokens
    return time.perf_counter() - t0, reply.metrics.completion_tokens


def engine_alone_timed(engine: LLMEngine, system: str) -> tuple[float, int, float]:
    """As engine_alone, and the time to the first token."""
    reply = Reply()
    first = 0.0
    t0 = time.perf_counter()
    for _ in engine.stream(system, [ChatMessage(role="user", content=PROMPT)], reply=reply):
        if not first:
            first = time.perf_counter() - t0
    assert reply.metrics is not None and reply.metrics.completion_tokens
    return time.perf_counter() - t0, reply.metrics.completion_tokens, first


async def through_ui(config: Config, engine: Engine) -> dict[str, float]:
    chunks = 0
    done = asyncio.Event()
    t_end = 0.0

    first_chunk_at: list[float] = []

    def hook(message: object) -> None:
        nonlocal chunks, t_end
        if isinstance(message, ReplyChunk):
            chunks += 1
            if not first_chunk_at:
                first_chunk_at.append(time.perf_counter())
        elif isinstance(message, ReplyFinished):
            t_end = time.perf_counter()
            done.set()

    app = make_app(config, engine=engine)
    storage = time_storage(app.store)
    lags: list[float] = []
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        assert app.chat is not None
        app.chat.session.new_conversation()

        async def ticker() -> None:
            while not done.is_set():
                t = time.perf_counter()
                await asyncio.sleep(TICK_S)
                lags.append((time.perf_counter() - t - TICK_S) * 1000)

        tick = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        app.chat.send(PROMPT)
        await asyncio.wait_for(done.wait(), 600)
        await pilot.pause()  # the final chunk is rendered
        t_rendered = time.perf_counter()
        first_chunk = first_chunk_at[0] if first_chunk_at else t_rendered
        await tick
        reply = app.chat.query("AssistantMessage").last()
        text_len = len(getattr(reply, "text", ""))
    assert t_end
    lags.sort()
    return {
        "seconds": t_rendered - t0,
        "chunks": chunks,
        "text_chars": text_len,
        "first_chunk_s": first_chunk - t0,
        "finish_to_rendered_ms": (t_rendered - t_end) * 1000,
        "storage_ms": storage["ms"],
        "storage_calls": storage["calls"],
        "lag_p50_ms": lags[len(lags) // 2],
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        "lag_max_ms": lags[-1],
    }


async def first_frame(config: Config) -> dict[str, float]:
    """Start -> the chat screen mounted (its first frame follows at once), and start ->
    the model loaded, both timed from the app's own messages."""
    marks: dict[str, float] = {}

    def hook(message: object) -> None:
        now = time.perf_counter()
        if isinstance(message, events.Mount) and isinstance(message._sender, ChatScreen):
            marks.setdefault("frame", now)
        elif isinstance(message, ModelLoaded):
            marks.setdefault("model", now)

    t0 = time.perf_counter()
    app = make_app(config)  # as shipped: the model loads in its child process
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        while "model" not in marks:
            await pilot.pause(0.005)
    return {
        "first_frame_ms": (marks["frame"] - t0) * 1000,
        "model_ready_ms": (marks["model"] - t0) * 1000,
        "model_was_ready_at_first_frame": float(marks["model"] < marks["frame"]),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with TemporaryDirectory() as tmp:
        base = load_config(env={})
        config = dataclasses.replace(
            base,
            llm=dataclasses.replace(base.llm, max_tokens=args.tokens, n_ctx=2048, temperature=0.0),
            storage=dataclasses.replace(base.storage, data_dir=str(Path(tmp) / "data")),
            # The chat path alone: no node process or Whisper loading beside the stream.
            node=dataclasses.replace(base.node, endpoint="off"),
            voice=dataclasses.replace(base.voice, enabled=False),
        )
        engine = BanEosEngine(config.llm)  # the baseline: in-process, no UI
        engine.load()
        engine_alone(engine, config.llm.system_prompt)  # warm
        ui_engine = BanEosProcessEngine(config.llm)  # as the TUI runs it
        ui_engine.load()
        await through_ui(config, ui_engine)  # warm: the first app start loads Textual's CSS
        alone_tps, ui_tps, lag_p99, lag_max, chunks = [], [], [], [], []
        storage_ms, finish_ms, first_chunk_s, alone_ttft_s = [], [], [], []
        tokens = 0
        for _ in range(args.rounds):
            secs, tokens, ttft = engine_alone_timed(engine, config.llm.system_prompt)
            alone_tps.append(tokens / secs)
            alone_ttft_s.append(ttft)
            ui = await through_ui(config, ui_engine)
            ui_tps.append(tokens / ui["seconds"])
            storage_ms.append(ui["storage_ms"])
            finish_ms.append(ui["finish_to_rendered_ms"])
            first_chunk_s.append(ui["first_chunk_s"])
            lag_p99.append(ui["lag_p99_ms"])
            lag_max.append(ui["lag_max_ms"])
            chunks.append(ui["chunks"])
        ui_engine.close()
        frame = await first_frame(config)
    med = statistics.median
    return {
        "bench": "ui_stream",
        "tokens_per_reply": tokens,
        "rounds": args.rounds,
        "ui_tokens_per_s_median": round(med(ui_tps), 1),
        "engine_tokens_per_s_median": round(med(alone_tps), 1),
        "ui_vs_engine_ratio": round(med(ui_tps) / med(alone_tps), 3),
        # Each UI reply against the engine-alone reply measured just before it: the
        # machine's drift between rounds cancels out.
        "ui_vs_engine_paired_median": round(
            med(u / a for u, a in zip(ui_tps, alone_tps, strict=True)), 3
        ),
        "ui_vs_engine_goal": 0.95,
        "event_loop_lag_p99_ms": round(max(lag_p99), 1),
        "event_loop_lag_max_ms": round(max(lag_max), 1),
        "event_loop_lag_goal_ms": 50.0,
        "chunks_per_reply_median": med(chunks),
        # Where the UI's extra time goes, per reply (medians):
        "ui_storage_ms_median": round(med(storage_ms), 1),
        "ui_finish_to_rendered_ms_median": round(med(finish_ms), 1),
        "ui_first_chunk_s_median": round(med(first_chunk_s), 3),
        "engine_first_token_s_median": round(med(alone_ttft_s), 3),
        "ui_seconds_median": round(tokens / med(ui_tps), 3),
        "engine_seconds_median": round(tokens / med(alone_tps), 3),
        "repaint_hz_config": config.ui.repaint_hz,
        "setup": "headless app (engine in its child process, as shipped), node off, voice "
        "off, EOS banned; engine alone = LLMEngine in-process, same model and settings",
        "first_frame_ms": round(frame["first_frame_ms"], 1),
        "model_ready_ms": round(frame["model_ready_ms"], 1),
        "model_was_ready_at_first_frame": bool(frame["model_was_ready_at_first_frame"]),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()

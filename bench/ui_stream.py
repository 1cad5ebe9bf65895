"""The headless app streaming a 512-token reply, against the engine alone.

Measured side by side in one run (rounds of alone, UI, UI, alone; same model,
same prompt, EOS banned so every reply is exactly --tokens long):
- tokens/s end to end through the UI (Enter -> last chunk rendered) vs the engine
  alone (call -> last token), each UI reply against the engine-alone reply beside
  it; the figure is the median of those pairs, goal >= 0.95. Two baselines:
  llama.cpp in this process (the bare engine), and the UI's own engine (llama.cpp
  in its child process) driven with no UI. Beside them, the engine's own decode
  speed: whether the UI slows the engine or only adds its own time;
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


def engine_alone_timed(engine: Engine, system: str) -> dict[str, float]:
    """One reply from the engine alone: call -> last token, first token, its metrics."""
    reply = Reply()
    first = 0.0
    t0 = time.perf_counter()
    for _ in engine.stream(system, [ChatMessage(role="user", content=PROMPT)], reply=reply):
        if not first:
            first = time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    assert reply.metrics is not None and reply.metrics.completion_tokens
    tokens = reply.metrics.completion_tokens
    return {
        "tokens": float(tokens),
        "tokens_per_s": tokens / seconds,
        "first_token_s": first,
        "decode_tokens_per_s": reply.metrics.tokens_per_s or 0.0,
    }


class RunningApp:
    """One headless TARS app for every UI round, kept open as a user keeps it: each
    reply is sent (as after /new) to an app that is already up, so the reply's time
    holds the reply's work, not the app's start (first_frame() times that)."""

    def __init__(self, config: Config, engine: Engine):
        self.app = make_app(config, engine=engine)
        self.storage = time_storage(self.app.store)
        self.pilot: Any = None
        self._chunks = 0
        self._first_chunk_at = 0.0
        self._finished: list[tuple[ReplyFinished, float]] = []
        self._done = asyncio.Event()

    def hook(self, message: object) -> None:
        if isinstance(message, ReplyChunk):
            self._chunks += 1
            self._first_chunk_at = self._first_chunk_at or time.perf_counter()
        elif isinstance(message, ReplyFinished) and not self._finished:
            self._finished.append((message, time.perf_counter()))
            self._done.set()

    async def reply(self) -> dict[str, float]:
        app, pilot = self.app, self.pilot
        assert app.chat is not None and pilot is not None
        app.chat.session.new_conversation()
        app.chat.reload_view()
        await pilot.pause()
        self._chunks, self._first_chunk_at = 0, 0.0
        self._finished.clear()
        self._done.clear()
        storage_before = dict(self.storage)
        lags: list[float] = []

        async def ticker() -> None:
            while not self._done.is_set():
                t = time.perf_counter()
                await asyncio.sleep(TICK_S)
                lags.append((time.perf_counter() - t - TICK_S) * 1000)

        tick = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        app.chat.send(PROMPT)
        await asyncio.wait_for(self._done.wait(), 600)
        await pilot.pause()  # the final chunk is rendered
        t_rendered = time.perf_counter()
        await tick
        finished, t_end = self._finished[0]
        metrics = finished.result.metrics
        assert metrics is not None
        lags.sort()
        return {
            # The engine's own view of the reply (in its child process): decode speed
            # from its first token to its last, time to its first token, prompt size.
            "decode_tokens_per_s": metrics.tokens_per_s or 0.0,
            "engine_ttft_ms": metrics.ttft_ms or 0.0,
            "prompt_tokens": float(metrics.prompt_tokens or 0),
            "seconds": t_rendered - t0,
            "chunks": self._chunks,
            "first_chunk_s": (self._first_chunk_at or t_rendered) - t0,
            "finish_to_rendered_ms": (t_rendered - t_end) * 1000,
            "storage_ms": self.storage["ms"] - storage_before["ms"],
            "storage_calls": self.storage["calls"] - storage_before["calls"],
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


async def rounds(
    args: argparse.Namespace,
    engine: LLMEngine,
    process_engine: ProcessEngine,
    running: RunningApp,
    system: str,
) -> dict[str, Any]:
    """Rounds of in-process alone, child-process alone, UI, UI, child alone, in-process
    alone: a drift of the machine's speed within a round hits both sides alike, and
    each UI reply is paired with the alone replies beside it. The child-process
    engine is the UI's own, driven with no UI: the UI's cost and nothing else."""
    alone: list[dict[str, float]] = []
    child: list[dict[str, float]] = []
    ui: list[dict[str, float]] = []
    for _ in range(args.rounds):
        alone.append(engine_alone_timed(engine, system))
        child.append(engine_alone_timed(process_engine, system))
        ui.append(await running.reply())
        ui.append(await running.reply())
        child.append(engine_alone_timed(process_engine, system))
        alone.append(engine_alone_timed(engine, system))
    tokens = int(alone[0]["tokens"])
    for row in ui:
        row["tokens_per_s"] = tokens / row["seconds"]
    return {"alone": alone, "child": child, "ui": ui, "tokens": tokens}


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
        system = config.llm.system_prompt
        engine = BanEosEngine(config.llm)  # the baseline: in-process, no UI
        engine.load()
        engine_alone_timed(engine, system)  # warm
        ui_engine = BanEosProcessEngine(config.llm)  # as the TUI runs it
        ui_engine.load()
        running = RunningApp(config, ui_engine)
        async with running.app.run_test(size=(120, 40), message_hook=running.hook) as pilot:
            running.pilot = pilot
            await running.reply()  # warm: the first reply mounts Textual's Markdown
            measured = await rounds(args, engine, ui_engine, running, system)
        ui_engine.close()
        frame = await first_frame(config)
    med = statistics.median
    alone, child, ui = measured["alone"], measured["child"], measured["ui"]
    tokens = measured["tokens"]

    def col(rows: list[dict[str, float]], name: str) -> list[float]:
        return [r[name] for r in rows]

    ui_tps, alone_tps = col(ui, "tokens_per_s"), col(alone, "tokens_per_s")
    child_tps = col(child, "tokens_per_s")
    pairs = [u / a for u, a in zip(ui_tps, alone_tps, strict=True)]
    child_pairs = [u / c for u, c in zip(ui_tps, child_tps, strict=True)]
    alone_decode, ui_decode = col(alone, "decode_tokens_per_s"), col(ui, "decode_tokens_per_s")
    return {
        "bench": "ui_stream",
        "tokens_per_reply": tokens,
        "rounds": args.rounds,
        "ui_tokens_per_s_median": round(med(ui_tps), 1),
        "engine_tokens_per_s_median": round(med(alone_tps), 1),
        # The figure: each UI reply against the engine-alone reply beside it (the
        # machine's drift between rounds cancels out), median over the pairs.
        "ui_vs_engine_ratio": round(med(pairs), 3),
        "ui_vs_engine_pairs": [round(p, 3) for p in pairs],
        "ui_vs_engine_ratio_of_medians": round(med(ui_tps) / med(alone_tps), 3),
        # The same against the UI's own engine (its child process) with no UI.
        "ui_vs_same_engine_no_ui_ratio": round(med(child_pairs), 3),
        "ui_vs_same_engine_no_ui_pairs": [round(p, 3) for p in child_pairs],
        "same_engine_no_ui_tokens_per_s_median": round(med(child_tps), 1),
        "ui_vs_engine_goal": 0.95,
        # Is the engine itself slower with the UI beside it (both cores busy), or is
        # the gap the UI's own work (first chunk, storage, final render)?
        "engine_decode_tokens_per_s_alone_median": round(med(alone_decode), 1),
        "engine_decode_tokens_per_s_under_ui_median": round(med(ui_decode), 1),
        "engine_decode_under_ui_vs_alone": round(med(ui_decode) / med(alone_decode), 3),
        "engine_ttft_ms_under_ui_median": round(med(col(ui, "engine_ttft_ms")), 1),
        "ui_prompt_tokens_median": med(col(ui, "prompt_tokens")),
        "event_loop_lag_p99_ms": round(max(col(ui, "lag_p99_ms")), 1),
        "event_loop_lag_max_ms": round(max(col(ui, "lag_max_ms")), 1),
        "event_loop_lag_goal_ms": 50.0,
        "chunks_per_reply_median": med(col(ui, "chunks")),
        # Where the UI's extra time goes, per reply (medians):
        "ui_storage_ms_median": round(med(col(ui, "storage_ms")), 1),
        "ui_finish_to_rendered_ms_median": round(med(col(ui, "finish_to_rendered_ms")), 1),
        "ui_first_chunk_s_median": round(med(col(ui, "first_chunk_s")), 3),
        "engine_first_token_s_median": round(med(col(alone, "first_token_s")), 3),
        "ui_seconds_median": round(tokens / med(ui_tps), 3),
        "engine_seconds_median": round(tokens / med(alone_tps), 3),
        "repaint_hz_config": config.ui.repaint_hz,
        "setup": "one headless app kept open, each reply after /new (engine in its child "
        "process, as shipped), node off, voice off, EOS banned; engine alone = LLMEngine "
        "in-process, same model and settings",
        "first_frame_ms": round(frame["first_frame_ms"], 1),
        "model_ready_ms": round(frame["model_ready_ms"], 1),
        "model_was_ready_at_first_frame": bool(frame["model_was_ready_at_first_frame"]),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="each: 4 alone + 2 UI replies")
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()

"""The llama.cpp engine in a child process, on the real bundled SmolLM2."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tars_tui.config import LLMConfig, load_config
from tars_tui.llm import ChatMessage, ModelError, Reply
from tars_tui.llm_process import ProcessEngine


def small_cfg(**changes: Any) -> LLMConfig:
    settings: dict[str, Any] = {"n_ctx": 512, "max_tokens": 48, "seed": 7, "temperature": 0.0}
    return dataclasses.replace(load_config(env={}).llm, **{**settings, **changes})


@pytest.fixture(scope="module")
def engine() -> Iterator[ProcessEngine]:
    e = ProcessEngine(small_cfg())
    e.load()
    yield e
    e.close()


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.02)
    return False


def test_streams_a_reply_with_metrics(engine: ProcessEngine) -> None:
    reply = Reply()
    pieces = list(engine.stream("You are helpful.", user("Name three colours."), reply=reply))
    assert pieces and "".join(pieces) == reply.text and reply.text.strip()
    m = reply.metrics
    assert m is not None and not reply.cancelled and reply.finish_reason in ("stop", "length")
    assert m.prompt_tokens == len(
        engine.fit("You are helpful.", user("Name three colours.")).tokens
    )
    assert m.completion_tokens is not None and 0 < m.completion_tokens <= 48
    assert m.ttft_ms is not None and m.ttft_ms > 0
    assert m.tokens_per_s is not None and m.tokens_per_s > 0
    assert m.total_ms is not None and m.total_ms >= m.ttft_ms
    assert engine.count_tokens("hello world") > 0 and engine.eos_token_id >= 0
    assert engine.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf" and engine.is_ready


def test_pieces_are_coalesced_in_the_child() -> None:
    e = ProcessEngine(small_cfg(max_tokens=120), batch_interval_s=10.0)
    try:
        e.load()
        reply = Reply()
        ban_eos = {e.eos_token_id: -100.0}
        pieces = list(e.stream("", user("Tell a story."), reply=reply, logit_bias=ban_eos))
        # The first piece at once, the rest within the interval: the end message's tail.
        assert len(pieces) == 2 and "".join(pieces) == reply.text
        assert reply.metrics is not None and reply.metrics.completion_tokens == 120
        assert reply.finish_reason == "length"
    finally:
        e.close()


def test_cancel_stops_the_child_and_keeps_the_text(engine: ProcessEngine) -> None:
    reply = Reply()
    seen: list[str] = []
    stop = threading.Event()
    for piece in engine.stream(
        "", user("Count from one to fifty in words."), should_stop=stop.is_set, reply=reply
    ):
        seen.append(piece)
        stop.set()
    assert reply.cancelled and reply.text == "".join(seen)
    assert reply.metrics is not None and reply.metrics.completion_tokens is not None
    assert reply.metrics.completion_tokens < 48


def test_cancel_while_waiting_stops_within_one_token() -> None:
    # A child that sends nothing until the end: the parent's poll of should_stop
    # is what stops it, before the child's next token.
    e = ProcessEngine(small_cfg(max_tokens=400, n_ctx=1024), batch_interval_s=60.0)
    try:
        e.load()
        reply = Reply()
        t_first: list[float] = []

        def should_stop() -> bool:
            return bool(t_first) and time.perf_counter() - t_first[0] > 0.05

        ban_eos = {e.eos_token_id: -100.0}
        for _ in e.stream(
            "", user("Tell a story."), should_stop=should_stop, reply=reply, logit_bias=ban_eos
        ):
            t_first.append(time.perf_counter())
        assert reply.cancelled and reply.metrics is not None
        n = reply.metrics.completion_tokens
        assert n is not None and 1 < n < 200  # ~5 tokens in 50 ms; 400 if it ran on
        assert reply.finish_reason is None
    finally:
        e.close()


def test_closing_the_generator_cancels_and_the_next_request_works(engine: ProcessEngine) -> None:
    reply = Reply()
    gen = engine.stream("", user("Count from one to fifty in words."), reply=reply)
    assert isinstance(gen, Generator)
    first = next(gen)
    gen.close()
    assert reply.cancelled and reply.text == first
    again = engine.complete("You are helpful.", user("Say hello."))
    assert again.text.strip() and not again.cancelled and again.metrics is not None


def test_long_conversation_never_overflows_the_window(engine: ProcessEngine) -> None:
    history: list[ChatMessage] = []
    for i in range(60):
        history.append(ChatMessage(role="user", content=f"Message {i}: " + "tell me more " * 12))
        history.append(ChatMessage(role="assistant", content=f"Answer {i}: " + "certainly " * 15))
    history.append(ChatMessage(role="user", content="And the last question?"))
    fitted = engine.fit("system prompt " * 10, history)
    n_ctx = engine.cfg.n_ctx
    assert len(fitted.tokens) + fitted.max_new_tokens <= n_ctx
    assert fitted.dropped_messages > 0
    assert fitted.messages[0]["role"] == "system" and fitted.messages[1]["role"] == "user"
    assert fitted.messages[-1]["content"] == "And the last question?"
    reply = Reply()
    for _ in engine.stream("system prompt " * 10, history, reply=reply):
        pass
    m = reply.metrics
    assert m is not None and m.prompt_tokens is not None and m.completion_tokens is not None
    assert m.prompt_tokens + m.completion_tokens <= n_ctx


Make = Callable[[Path], Path]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d / "absent.gguf", "model file not found"),
        (lambda d: d, "not a file"),
        (lambda d: (d / "x.gguf").write_bytes(b"not a model") and d / "x.gguf", "not a GGUF"),
        (
            lambda d: (d / "t.gguf").write_bytes(b"GGUF" + b"\0" * 64) and d / "t.gguf",
            "llama.cpp could not load",
        ),
    ],
)
def test_bad_model_files_are_clear_errors(tmp_path: Path, make: Make, fragment: str) -> None:
    path = make(tmp_path)
    e = ProcessEngine(dataclasses.replace(LLMConfig(), model_path=str(path)))
    try:
        with pytest.raises(ModelError, match=fragment):
            e.load()
        with pytest.raises(ModelError, match=fragment):
            e.wait_ready(0)  # a waiting prompt gets the same error, not a hang
        assert not e.is_ready and e.load_error is not None
    finally:
        e.close()


def test_failed_switch_keeps_the_previous_model(engine: ProcessEngine, tmp_path: Path) -> None:
    before = engine.model_path
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 64)  # fails in the child
    with pytest.raises(ModelError, match=r"llama\.cpp could not load"):
        engine.load(tmp_path / "bad.gguf")
    assert engine.model_path == before and engine.is_ready
    assert engine.complete("", user("Hi.")).text


def test_close_ends_the_child_and_a_killed_child_recovers_on_load() -> None:
    e = ProcessEngine(small_cfg())
    e.load()
    pid = e.child_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    with pytest.raises(ModelError, match="model process died"):
        list(e.stream("", user("Hi.")))
    assert not e.is_ready
    with pytest.raises(ModelError, match="model process died"):
        e.wait_ready(0)
    e.load()  # a fresh child
    assert e.child_pid not in (None, pid)
    assert e.complete("", user("Hi.")).text
    pid = e.child_pid
    assert pid is not None
    e.close()
    assert wait_gone(pid) and e.child_pid is None and not e.is_ready


def test_a_child_killed_mid_stream_raises_model_error() -> None:
    e = ProcessEngine(small_cfg(max_tokens=400, n_ctx=1024))
    try:
        e.load()
        pid = e.child_pid
        assert pid is not None
        gen = e.stream("", user("Tell a story."), logit_bias={e.eos_token_id: -100.0})
        next(gen)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ModelError, match="model process died"):
            for _ in gen:
                pass
        e.load()
        assert e.complete("", user("Hi.")).text
    finally:
        e.close()


def test_the_child_exits_when_its_parent_dies(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import dataclasses, sys\n"
        "from tars_tui.config import load_config\n"
        "from tars_tui.llm_process import ProcessEngine\n"
        "if __name__ == '__main__':\n"
        "    e = ProcessEngine(dataclasses.replace(load_config(env={}).llm, n_ctx=256))\n"
        "    e.load()\n"
        "    print(e.child_pid, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()  # no atexit, no clean-up: the child must notice by itself
    parent.wait()
    assert wait_gone(child)

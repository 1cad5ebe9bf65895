"""The engines on the real bundled SmolLM2.

What ``LLMEngine`` (in this process) and ``ProcessEngine`` (in a child) share is
tested once, over both (the ``engine`` and ``engine_type`` fixtures); what only the
in-process engine does follows. The child process's own behaviour is in
test_llm_process.py.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tars_assistant import model_memory
from tars_assistant.llm import ChatMessage, LLMEngine, ModelError, Reply, resolve_model_path
from tars_assistant.llm_process import Engine, ProcessEngine
from tars_core.config import LLMConfig, load_config

EngineType = type[LLMEngine] | type[ProcessEngine]
ENGINES = [pytest.param(LLMEngine, id="in-process"), pytest.param(ProcessEngine, id="child")]


def small_cfg(**changes: Any) -> LLMConfig:
    settings: dict[str, Any] = {"n_ctx": 512, "max_tokens": 48, "seed": 7, "temperature": 0.0}
    return dataclasses.replace(load_config(env={}).llm, **{**settings, **changes})


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


@pytest.fixture(params=ENGINES)
def engine_type(request: pytest.FixtureRequest) -> EngineType:
    kind: EngineType = request.param
    return kind


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    e: Engine = request.param(small_cfg())
    e.load()
    yield e
    e.close()


# -- both engines ----------------------------------------------------------------------


def test_streams_a_reply_with_metrics(engine: Engine) -> None:
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


def test_cancel_keeps_the_text_generated_so_far(engine: Engine) -> None:
    reply = Reply()
    seen: list[str] = []
    stop = threading.Event()
    for piece in engine.stream(
        "", user("Count from one to fifty in words."), should_stop=stop.is_set, reply=reply
    ):
        seen.append(piece)
        if len(seen) == 3:
            stop.set()
    assert reply.cancelled and reply.text == "".join(seen)
    assert reply.metrics is not None and reply.metrics.completion_tokens is not None
    assert 3 <= reply.metrics.completion_tokens < 48
    if isinstance(engine, LLMEngine):
        # Checked before every token. (The child's pieces in flight still arrive; how far
        # it runs on is bounded in test_llm_process.py.)
        assert len(seen) == 3


def test_closing_the_generator_cancels_and_the_next_request_works(engine: Engine) -> None:
    reply = Reply()
    gen = engine.stream("", user("Count from one to fifty in words."), reply=reply)
    assert isinstance(gen, Generator)
    first = next(gen)
    gen.close()
    assert reply.cancelled and reply.text == first
    again = engine.complete("You are helpful.", user("Say hello."))
    assert again.text.strip() and not again.cancelled and again.metrics is not None


def test_long_conversation_never_overflows_the_window(engine: Engine) -> None:
    history: list[ChatMessage] = []
    for i in range(60):
        history.append(ChatMessage(role="user", content=f"Message {i}: " + "tell me more " * 12))
        history.append(ChatMessage(role="assistant", content=f"Answer {i}: " + "certainly " * 15))
    history.append(ChatMessage(role="user", content="And the last question?"))
    fitted = engine.fit("system prompt " * 10, history)
    n_ctx = engine.cfg.n_ctx
    assert len(fitted.tokens) + fitted.max_new_tokens <= n_ctx
    assert fitted.dropped_messages > 0
    assert fitted.messages[0]["role"] == "system"
    assert fitted.messages[1]["role"] == "user"  # never starts on an orphaned reply
    assert fitted.messages[-1]["content"] == "And the last question?"
    # Adding back one more turn would not have fitted.
    more = engine.format_tokens([fitted.messages[0], *history[fitted.dropped_messages - 2 :]])
    assert len(more) > n_ctx - min(engine.cfg.max_tokens, n_ctx // 2)
    reply = Reply()
    for _ in engine.stream("system prompt " * 10, history, reply=reply):
        pass
    m = reply.metrics
    assert m is not None and m.prompt_tokens is not None and m.completion_tokens is not None
    assert m.prompt_tokens + m.completion_tokens <= n_ctx


def test_a_single_huge_message_is_cut_to_fit(engine: Engine) -> None:
    fitted = engine.fit("sys", user("word " * 3000))
    assert len(fitted.tokens) <= engine.cfg.n_ctx - engine.cfg.max_tokens
    assert "[…]" in fitted.messages[-1]["content"]


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
def test_bad_model_files_are_clear_errors(
    engine_type: EngineType, tmp_path: Path, make: Make, fragment: str
) -> None:
    e = engine_type(dataclasses.replace(LLMConfig(), model_path=str(make(tmp_path))))
    try:
        with pytest.raises(ModelError, match=fragment):
            e.load()
        with pytest.raises(ModelError, match=fragment):
            e.wait_ready(0)  # a waiting prompt gets the same error, not a hang
        assert not e.is_ready and e.load_error is not None
    finally:
        e.close()


def test_failed_switch_keeps_the_previous_model(engine: Engine, tmp_path: Path) -> None:
    before = engine.model_path
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 64)  # passes the checks, fails to load
    with pytest.raises(ModelError, match=r"llama\.cpp could not load"):
        engine.load(tmp_path / "bad.gguf")
    assert engine.model_path == before and engine.is_ready
    assert engine.complete("", user("Hi.")).text


def test_a_model_too_big_for_free_memory_is_refused_before_llama_cpp(
    engine_type: EngineType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault: a machine with 64 MiB of RAM free. SmolLM2 needs ~200 MiB at n_ctx 512.
    tight = model_memory.FreeMemory(ram_bytes=64 * 2**20, vram_bytes=None)
    monkeypatch.setattr(model_memory, "free_memory", lambda: tight)
    e = engine_type(small_cfg())
    try:
        with pytest.raises(ModelError) as info:
            e.load()
        message = str(info.value)
        assert "SmolLM2-135M-Instruct.Q4_1.gguf needs about" in message
        assert "of RAM at n_ctx 512" in message and "64 MiB is available" in message
        assert "MiB missing" in message and "n_ctx" in message
        assert not e.is_ready and e.load_error is not None
        if isinstance(e, ProcessEngine):
            assert e.child_pid is None  # refused without starting a child
    finally:
        e.close()


# -- the in-process engine -------------------------------------------------------------


def test_default_is_the_bundled_smollm2() -> None:
    path = resolve_model_path(LLMConfig())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


@pytest.fixture(scope="module")
def local() -> Iterator[LLMEngine]:
    e = LLMEngine(small_cfg())
    e.load()
    yield e
    e.close()


def test_chat_template_comes_from_the_gguf(local: LLMEngine) -> None:
    tokens = local.format_tokens(user("hello"))
    text = local._require().llama.detokenize(tokens, special=True).decode()
    assert "<|im_start|>user\nhello<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")

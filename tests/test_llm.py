"""The llama.cpp engine on the real bundled SmolLM2."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from tars_tui.config import LLMConfig, load_config
from tars_tui.llm import ChatMessage, LLMEngine, ModelError, Reply, resolve_model_path


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    cfg = dataclasses.replace(
        load_config(env={}).llm, n_ctx=512, max_tokens=48, seed=7, temperature=0.0
    )
    e = LLMEngine(cfg)
    e.load()
    return e


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def test_default_is_the_bundled_smollm2() -> None:
    path = resolve_model_path(LLMConfig())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


def test_chat_template_comes_from_the_gguf(engine: LLMEngine) -> None:
    tokens = engine.format_tokens(user("hello"))
    llama = engine._require().llama
    text = llama.detokenize(tokens, special=True).decode()
    assert "<|im_start|>user\nhello<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_streams_a_reply_with_metrics(engine: LLMEngine) -> None:
    reply = Reply()
    pieces = list(engine.stream("You are helpful.", user("Name three colours."), reply=reply))
    assert len(pieces) > 3
    assert "".join(pieces) == reply.text and reply.text.strip()
    m = reply.metrics
    assert m is not None and not reply.cancelled
    assert m.prompt_tokens == len(
        engine.fit("You are helpful.", user("Name three colours.")).tokens
    )
    assert 0 < m.completion_tokens <= 48
    assert m.ttft_ms > 0 and m.tokens_per_s > 0 and m.total_ms >= m.ttft_ms


def test_cancel_stops_within_one_token(engine: LLMEngine) -> None:
    reply = Reply()
    seen: list[str] = []
    stop = threading.Event()
    for piece in engine.stream(
        "", user("Count from one to fifty in words."), should_stop=stop.is_set, reply=reply
    ):
        seen.append(piece)
        if len(seen) == 3:
            stop.set()
    assert len(seen) == 3  # the check runs before every further token
    assert reply.cancelled and reply.text == "".join(seen)
    assert reply.metrics is not None and reply.metrics.completion_tokens >= 3


def test_long_conversation_never_overflows_the_window(engine: LLMEngine) -> None:
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
    assert reply.metrics is not None
    assert reply.metrics.prompt_tokens + reply.metrics.completion_tokens <= n_ctx


def test_a_single_huge_message_is_cut_to_fit(engine: LLMEngine) -> None:
    huge = "word " * 3000
    fitted = engine.fit("sys", user(huge))
    assert len(fitted.tokens) <= engine.cfg.n_ctx - engine.cfg.max_tokens
    assert "[…]" in fitted.messages[-1]["content"]


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
def test_bad_model_files_are_clear_errors(tmp_path: Path, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    engine = LLMEngine(dataclasses.replace(LLMConfig(), model_path=str(path)))
    with pytest.raises(ModelError, match=fragment):
        engine.load()
    with pytest.raises(ModelError, match=fragment):
        engine.wait_ready(0)  # a waiting prompt gets the same error, not a hang


def test_failed_switch_keeps_the_previous_model(engine: LLMEngine, tmp_path: Path) -> None:
    before = engine.model_path
    (tmp_path / "bad.gguf").write_bytes(b"nope")
    with pytest.raises(ModelError):
        engine.load(tmp_path / "bad.gguf")
    assert engine.model_path == before and engine.is_ready

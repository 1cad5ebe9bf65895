"""A chat session on a model server: stored as on llama.cpp, retried once, answered by
the fallback when the server fails, and kept from memories a profile must not see."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from memory.conversation_store import ConversationStore
from tars_assistant.backend_errors import BackendError
from tars_assistant.http_engine import OpenAIEngine
from tars_assistant.llm import FittedPrompt, Sampling
from tars_assistant.model_router import ModelRouter
from tars_assistant.session import ChatSession
from tars_core.config import Config, load_config
from tests.backends.conftest import LlamaServer, free_port

pytestmark = pytest.mark.slow


def configured(tmp_path: Path, primary_url: str, *, fallback: bool, extra: str = "") -> Config:
    text = f"""
[storage]
data_dir = "{tmp_path / "data"}"

[llm]
model = "srv"
n_ctx = 1024
max_tokens = 24
temperature = 0.0
seed = 1
ollama_url = ""
{'fallback = "here"' if fallback else ""}

[models.srv]
backend = "openai"
base_url = "{primary_url}"
timeout_s = 5.0
{extra}

[models.here]
backend = "llama.cpp"
"""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


def session_for(config: Config) -> tuple[ChatSession, ModelRouter, ConversationStore]:
    router = ModelRouter(config, process=False)
    store = ConversationStore(config.data_dir / "tars.db")
    return ChatSession(config, router, store), router, store


def test_a_turn_on_a_server_is_stored_with_the_model_that_wrote_it(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    session, router, store = session_for(configured(tmp_path, llama_server.v1, fallback=False))
    try:
        result = session.run_turn("Say hello.")
        assert result.text and not result.cancelled and result.notes == ()
        assert result.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert session.conversation is not None
        user, reply = store.messages(session.conversation.id)
        assert user.text == "Say hello." and reply.text == result.text
        assert reply.model == result.model and reply.status == "complete"
        assert reply.metrics is not None and reply.metrics.ttft_ms
        assert session.latency.last("ttft_ms") is not None  # the latency panel's series
    finally:
        router.close()
        store.close()


def test_a_dead_primary_is_retried_then_the_fallback_answers_the_same_turn(
    tmp_path: Path,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    session, router, store = session_for(configured(tmp_path, dead, fallback=True))
    notices: list[str] = []
    try:
        result = session.run_turn("What is two plus two?", on_notice=notices.append)
        assert result.text and result.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert len(notices) == 1 and "refused" in notices[0] and "fallback" in notices[0]
        assert result.notes == tuple(notices)
        assert session.conversation is not None
        user, failed, answered = store.messages(session.conversation.id)
        assert user.text == "What is two plus two?"  # nothing the user typed is lost
        assert failed.status == "error" and failed.error and "refused" in failed.error
        assert answered.status == "complete" and answered.text == result.text
        # The next turn tries the primary again, and the fallback answers again.
        again = session.run_turn("And three plus three?")
        assert again.text and again.notes
    finally:
        router.close()
        store.close()


def test_a_server_killed_mid_reply_keeps_the_partial_and_the_fallback_answers(
    tmp_path: Path, own_llama_server: LlamaServer
) -> None:
    config = configured(tmp_path, own_llama_server.v1, fallback=True)
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, max_tokens=300))
    session, router, store = session_for(config)
    pieces: list[str] = []

    def on_piece(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            threading.Thread(target=own_llama_server.kill).start()

    try:
        long = Sampling(max_tokens=300, temperature=0.8)
        result = session.run_turn(
            "Tell me a long story about a fox.", on_piece=on_piece, sampling=long
        )
        assert result.text and result.notes and "closed the connection" in result.notes[0]
        assert session.conversation is not None
        _, cut, answered = store.messages(session.conversation.id)
        assert cut.status == "cancelled" and cut.text and cut.error
        assert "".join(pieces).startswith(cut.text)  # what was shown was kept
        assert answered.text == result.text and answered.status == "complete"
    finally:
        router.close()
        store.close()


def test_without_a_fallback_the_error_is_raised_and_the_next_turn_works(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = configured(tmp_path, dead, fallback=False)
    session, router, store = session_for(config)
    try:
        with pytest.raises(BackendError, match="refused"):
            session.run_turn("Are you there?")
        assert session.conversation is not None
        user, failed = store.messages(session.conversation.id)
        assert user.text == "Are you there?" and failed.status == "error"
        # The user points the profile at a live server: the next turn answers.
        live = dataclasses.replace(config.models["srv"], base_url=llama_server.v1)
        config = dataclasses.replace(config, models={**config.models, "srv": live})
        router.config = config
        router.select("srv")
        assert session.run_turn("Are you there now?").text
    finally:
        router.close()
        store.close()


class RecordingEngine(OpenAIEngine):
    """The real engine, keeping what it sends (to check the prompt it was given)."""

    sent: list[list[dict[str, Any]]]

    def _body(self, fitted: FittedPrompt, *args: Any) -> dict[str, Any]:
        self.sent = [*getattr(self, "sent", []), list(fitted.messages)]  # type: ignore[list-item]
        return super()._body(fitted, *args)


@pytest.mark.parametrize("send_memory", [True, False])
def test_send_memory_false_keeps_recalled_memories_here(
    tmp_path: Path, llama_server: LlamaServer, send_memory: bool
) -> None:
    extra = "" if send_memory else "send_memory = false"
    config = configured(tmp_path, llama_server.v1, fallback=False, extra=extra)
    engine = RecordingEngine(config.models["srv"])
    router = ModelRouter(config, engine=engine)
    router.profile = config.models["srv"]
    store = ConversationStore(config.data_dir / "tars.db")
    session = ChatSession(config, router, store)
    try:
        session.run_turn("Where do I live?", context="Memory: the user lives in Lisbon.")
        prompt = " ".join(m["content"] for m in engine.sent[-1])
        assert ("Lisbon" in prompt) is send_memory
        assert "Where do I live?" in prompt
    finally:
        engine.close()
        store.close()

"""The official `openai` package against a running `tars serve`: chat (plain and
streamed), models, embeddings, and errors as the client's own exception types."""

from __future__ import annotations

import math
from typing import Any

import openai
import pytest

from .conftest import Server

pytestmark = pytest.mark.slow
# Deterministic replies: no memory in the context, nothing stored.
QUIET: dict[str, Any] = {"tars": {"memory": False, "store": False}}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(api_key=server.key, base_url=server.v1, max_retries=0, timeout=120)


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_models_lists_the_bundled_gguf_marked_loaded(client: openai.OpenAI) -> None:
    models = client.models.list().data
    loaded = [m for m in models if (m.model_extra or {})["tars"]["loaded"]]
    assert len(loaded) == 1
    assert loaded[0].id == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert models[0].id == loaded[0].id  # the loaded one comes first
    assert loaded[0].owned_by == "bundled"


def test_chat_completion_with_usage_and_the_tars_field(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tars", messages=ask("What is 2 + 2?"))
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    tars = (reply.model_extra or {})["tars"]
    assert tars["conversation_id"] and tars["message_id"]
    assert {"retrieval_ms", "queue_ms", "ttft_ms", "total_ms"} <= set(tars["stages"])


def test_streaming_matches_the_plain_reply_and_reports_usage(client: openai.OpenAI) -> None:
    prompt = ask("Name three colours.")
    plain = client.chat.completions.create(model="tars", messages=prompt, extra_body=QUIET)
    stream = client.chat.completions.create(
        model="tars",
        messages=prompt,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=QUIET,
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1, "the reply arrives in pieces"
    assert "".join(pieces) == plain.choices[0].message.content
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert finish == plain.choices[0].finish_reason


def test_sampling_parameters_are_honoured(client: openai.OpenAI) -> None:
    short = client.chat.completions.create(
        model="tars", messages=ask("Tell me about the sea."), max_tokens=3, extra_body=QUIET
    )
    assert short.usage is not None and short.usage.completion_tokens <= 3
    assert short.choices[0].finish_reason == "length"
    full = client.chat.completions.create(
        model="tars", messages=ask("Tell me about the sea."), temperature=0.0, extra_body=QUIET
    )
    text = full.choices[0].message.content or ""
    words = text.split()
    assert len(words) > 3
    cut = client.chat.completions.create(
        model="tars",
        messages=ask("Tell me about the sea."),
        temperature=0.0,
        top_p=0.5,
        stop=[words[2]],
        extra_body=QUIET,
    )
    stopped = cut.choices[0].message.content or ""
    assert words[2] not in stopped and text.startswith(stopped.rstrip())


def test_unknown_fields_are_ignored(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tars",
        messages=ask("Hi"),
        extra_body={**QUIET, "frobnicate": {"level": 3}, "presence_penalty": 0.1},
        user="someone",
    )
    assert reply.choices[0].message.content


def test_a_stateless_chat_stays_one_stored_conversation(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="tars", messages=ask("My cat is called Miso."))
    answer = first.choices[0].message.content or ""
    history = [*ask("My cat is called Miso."), {"role": "assistant", "content": answer}]
    second = client.chat.completions.create(
        model="tars", messages=[*history, *ask("What is my cat called?")]
    )
    ids = [(r.model_extra or {})["tars"]["conversation_id"] for r in (first, second)]
    assert ids[0] == ids[1]


def test_embeddings_through_the_node(client: openai.OpenAI) -> None:
    texts = ["a cat sleeps on the sofa", "a kitten naps on the couch", "quarterly tax forms"]
    result = client.embeddings.create(model="tars", input=texts)  # base64 on the wire
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    floats = client.embeddings.create(model="tars", input=texts[0], encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert result.usage.prompt_tokens > 0


def test_errors_are_the_clients_own_exceptions(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-4o", messages=ask("Hi"))
    assert "not loaded" in nf.value.message and nf.value.code == "model_not_found"

    anonymous = openai.OpenAI(api_key="tars-wrong", base_url=server.v1, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="tars",
            messages=ask("Hi"),
            temperature="warm",  # type: ignore[arg-type]
        )
    assert bad.value.param == "temperature" and bad.value.status_code == 400

    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-large", input="hello")

    with pytest.raises(openai.NotFoundError) as project:
        client.chat.completions.create(
            model="tars", messages=ask("Hi"), extra_headers={"X-Tars-Project": "no-such"}
        )
    assert "unknown project" in project.value.message

"""The OpenAI-compatible engine against a real llama.cpp server, and each way a server
fails, on real sockets."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tars_assistant.backend_errors import BackendError
from tars_assistant.http_engine import OpenAIEngine, normalise_base_url
from tars_assistant.llm import Reply
from tars_core.config import LLMConfig
from tests.backends.conftest import (
    FaultServer,
    LlamaServer,
    event_stream,
    free_port,
    profile,
    send_json,
    start_llama_server,
    with_models,
)

pytestmark = pytest.mark.slow
Fault = Callable[[Callable[[BaseHTTPRequestHandler], None]], FaultServer]
ASK = [{"role": "user", "content": "Name three colours."}]
LONG = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]


def long_profile(url: str, **kw: object) -> OpenAIEngine:
    llm = LLMConfig(max_tokens=400, temperature=0.7, seed=3)
    return OpenAIEngine(profile(url, llm=llm, **kw))  # type: ignore[arg-type]


def test_base_urls_are_normalised_to_the_api_root() -> None:
    assert normalise_base_url("http://h:8080") == "http://h:8080/v1"
    assert normalise_base_url("http://h:8080/") == "http://h:8080/v1"
    assert normalise_base_url("http://h:11434/api") == "http://h:11434/v1"  # Ollama's native
    assert normalise_base_url("https://x.example/openai/v1/") == "https://x.example/openai/v1"


def test_streams_a_reply_with_usage_timings_and_the_servers_window(
    llama_server: LlamaServer,
) -> None:
    engine = OpenAIEngine(profile(llama_server.url))  # no /v1: added
    try:
        engine.load()
        assert engine.is_ready and engine.model_name.endswith(".gguf")
        assert engine.n_ctx == 2048  # asked of llama-server's /props
        reply = Reply()
        pieces = list(engine.stream("You are terse.", ASK, reply=reply))
        assert len(pieces) > 1 and "".join(pieces) == reply.text and reply.text.strip()
        assert reply.finish_reason in ("stop", "length")
        m = reply.metrics
        assert m is not None and m.completion_tokens and m.prompt_tokens
        assert m.ttft_ms and m.ttft_ms > 0 and m.tokens_per_s and m.tokens_per_s > 0
        # llama-server reports its prompt time: the rest of the TTFT is the network.
        assert "server_prompt_ms" in m.stages and m.stages["network_ms"] >= 0
    finally:
        engine.close()


def test_stop_strings_end_the_reply(llama_server: LlamaServer) -> None:
    from tars_assistant.llm import Sampling

    engine = OpenAIEngine(profile(llama_server.v1))
    try:
        history = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
        whole = Reply()
        list(engine.stream("", history, reply=whole))  # type: ignore[arg-type]
        assert "5" in whole.text
        cut = Reply()
        list(engine.stream("", history, reply=cut, sampling=Sampling(stop=("5",))))  # type: ignore[arg-type]
        assert "5" not in cut.text and len(cut.text) < len(whole.text)
    finally:
        engine.close()


def test_cancel_closes_the_stream_and_the_server_stops_generating(
    llama_server: LlamaServer,
) -> None:
    engine = long_profile(llama_server.v1)
    try:
        reply = Reply()
        seen = 0

        def stop() -> bool:
            return seen >= 3

        t0 = time.monotonic()
        for _ in engine.stream("", LONG, reply=reply, should_stop=stop):  # type: ignore[arg-type]
            seen += 1
        assert reply.cancelled and reply.text and time.monotonic() - t0 < 10
        deadline = time.monotonic() + 3
        while llama_server.busy():
            assert time.monotonic() < deadline, "the server kept generating after the cancel"
            time.sleep(0.05)
        after = Reply()
        list(engine.stream("", ASK, reply=after))  # type: ignore[arg-type]
        assert after.text and not after.cancelled
    finally:
        engine.close()


def test_a_server_that_is_not_listening_is_transient_and_says_so() -> None:
    engine = OpenAIEngine(profile(f"http://127.0.0.1:{free_port()}/v1"))
    try:
        with pytest.raises(BackendError) as info:
            list(engine.stream("", ASK))  # type: ignore[arg-type]
        assert info.value.transient and info.value.kind == "unreachable"
        assert "refused" in str(info.value) and "is it running" in str(info.value)
    finally:
        engine.close()


def test_a_wrong_key_names_the_setting_and_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_llama_server(key="right-key-123")
    try:
        monkeypatch.setenv("SRV_KEY", "wrong-key-456")
        engine = OpenAIEngine(profile(server.v1, api_key_env="SRV_KEY"))
        with pytest.raises(BackendError) as info:
            engine.load()
        message = str(info.value)
        assert info.value.kind == "auth" and not info.value.transient
        assert "$SRV_KEY" in message and "wrong-key-456" not in message
        engine.close()
        keyless = OpenAIEngine(profile(server.v1))
        with pytest.raises(BackendError, match=r"needs an API key: set \[models.srv\]"):
            keyless.load()
        keyless.close()
        monkeypatch.setenv("SRV_KEY", "right-key-123")
        good = OpenAIEngine(profile(server.v1, api_key_env="SRV_KEY"))
        reply = Reply()
        list(good.stream("", ASK, reply=reply))  # type: ignore[arg-type]
        assert reply.text
        good.close()
    finally:
        server.kill()


def test_an_unknown_model_lists_the_models_the_server_has(llama_server: LlamaServer) -> None:
    engine = OpenAIEngine(profile(llama_server.v1, model="no-such-model"))
    try:
        with pytest.raises(BackendError) as info:
            engine.load()
        assert info.value.kind == "model" and "no-such-model" in str(info.value)
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in str(info.value)
        assert "[models.srv] model" in str(info.value)
    finally:
        engine.close()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path, llama_server: LlamaServer) -> None:
    key = tmp_path / "key"
    key.write_text("secret-value\n")
    os.chmod(key, 0o644)
    engine = OpenAIEngine(profile(llama_server.v1, api_key_file=str(key)))
    try:
        with pytest.raises(Exception, match="chmod 600") as info:
            engine.load()
        assert "secret-value" not in str(info.value)
        os.chmod(key, 0o600)
        engine.load()  # llama-server without keys takes any
        assert engine.is_ready
    finally:
        engine.close()


def test_a_server_that_stalls_past_timeout_s_times_out(fault: Fault) -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        time.sleep(20)  # never answers the chat request in time

    server = fault(with_models(stall))
    engine = OpenAIEngine(profile(server.url, timeout_s=1.0))
    try:
        t0 = time.monotonic()
        with pytest.raises(BackendError) as info:
            list(engine.stream("", ASK))  # type: ignore[arg-type]
        assert info.value.kind == "timeout" and info.value.transient
        assert "timeout_s" in str(info.value)
        assert time.monotonic() - t0 < 8
    finally:
        engine.close()


def test_a_garbage_stream_ends_with_a_clear_error_and_keeps_what_arrived(fault: Fault) -> None:
    def garbage(h: BaseHTTPRequestHandler) -> None:
        good = b'data: {"choices":[{"delta":{"content":"Hello there"},"index":0}]}\n\n'
        event_stream(h, good + b"data: {this is not json\n\n")

    server = fault(with_models(garbage))
    engine = OpenAIEngine(profile(server.url))
    try:
        reply = Reply()
        with pytest.raises(BackendError) as info:
            list(engine.stream("", ASK, reply=reply))  # type: ignore[arg-type]
        assert info.value.kind == "malformed" and "malformed stream" in str(info.value)
        assert reply.text == "Hello there"
    finally:
        engine.close()


def test_a_5xx_is_transient(fault: Fault) -> None:
    def unavailable(h: BaseHTTPRequestHandler) -> None:
        send_json(h, 503, {"error": {"message": "loading model"}})

    engine = OpenAIEngine(profile(fault(with_models(unavailable)).url))
    try:
        with pytest.raises(BackendError, match="loading model") as info:
            list(engine.stream("", ASK))  # type: ignore[arg-type]
        assert info.value.transient and info.value.status == 503
    finally:
        engine.close()


def test_a_server_killed_mid_stream_keeps_the_partial_reply(
    own_llama_server: LlamaServer,
) -> None:
    engine = long_profile(own_llama_server.v1)
    try:
        reply = Reply()
        with pytest.raises(BackendError) as info:
            for n, _ in enumerate(engine.stream("", LONG, reply=reply)):  # type: ignore[arg-type]
                if n == 3:
                    threading.Thread(target=own_llama_server.kill).start()
        assert info.value.transient and info.value.kind == "closed"
        assert reply.text
    finally:
        engine.close()


def test_tool_calls_stream_through_as_openai_sends_them(fault: Fault) -> None:
    # A stand-in replaying OpenAI's documented stream of a tool call: the bundled
    # SmolLM2's chat template declares no tools, so llama-server never makes one with it.
    import json

    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_time", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]  # fmt: skip

    def tool_call(h: BaseHTTPRequestHandler) -> None:
        events = [{"choices": [{"index": 0, "delta": d}]} for d in deltas]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        event_stream(h, body.encode())

    server = fault(with_models(tool_call))
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    engine = OpenAIEngine(profile(server.url))
    try:
        reply = Reply()
        list(engine.stream("", ASK, reply=reply, tools=tools))  # type: ignore[arg-type]
        assert reply.finish_reason == "tool_calls" and reply.text == ""
        (call,) = reply.tool_calls
        assert (call.id, call.name, json.loads(call.arguments)) == (
            "call_1",
            "get_time",
            {"city": "Paris"},
        )
        assert '"tools"' in server.requests[-1] or "get_time" in server.requests[-1]
    finally:
        engine.close()

"""Limits on a server of their own (node off, tight limits): a body over the limit is
413, a flood from one key is 429 with Retry-After, a full queue is 503 with
Retry-After at once, never a hang; and the server keeps serving."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from .conftest import Server, start_server

pytestmark = pytest.mark.slow

LIMITS = """\
max_body_bytes = 4096
queue_length = 1
rate_limit_per_minute = 6
rate_limit_burst = 4
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("api-limits"), extra=LIMITS)
    try:
        yield srv
    finally:
        srv.stop()


def chat_body(text: str = "Hi", **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_body_over_the_limit_is_413(limited: Server) -> None:
    key = limited.new_key("body")
    with limited.client(key) as http:
        big = http.post("/v1/chat/completions", json=chat_body("x" * 10_000))
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        chunked = http.post(
            "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413
        assert http.get("/v1/models").status_code == 200


def test_a_flood_from_one_key_is_429_with_retry_after(limited: Server) -> None:
    key = limited.new_key("flood")
    with limited.client(key) as http:
        codes = [http.get("/v1/models") for _ in range(8)]
    statuses = [r.status_code for r in codes]
    assert statuses[:4] == [200] * 4 and 429 in statuses[4:]
    refused = next(r for r in codes if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    client = openai.OpenAI(api_key=key, base_url=limited.v1, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.models.list()
    # Another key is not slowed down by this one.
    with limited.client(limited.new_key("calm")) as http:
        assert http.get("/v1/models").status_code == 200


def test_a_full_queue_is_503_at_once_and_the_line_moves_on(limited: Server) -> None:
    keys = [limited.new_key(f"queue{i}") for i in range(3)]
    long = chat_body("Write a long story about a lighthouse.", max_tokens=400, stream=True)
    first_token = threading.Event()
    results: dict[str, object] = {}

    def stream(name: str, key: str, until: threading.Event | None = None) -> None:
        with (
            limited.client(key) as http,
            http.stream(
                "POST", "/v1/chat/completions", json=long if until else chat_body(stream=True)
            ) as r,
        ):
            results[f"{name}.status"] = r.status_code
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    first_token.set()
                    if until is not None:
                        until.wait(60)
                        break  # the client goes away mid-reply
                if line == "data: [DONE]":
                    results[f"{name}.done"] = True

    release = threading.Event()
    a = threading.Thread(target=stream, args=("a", keys[0], release))
    a.start()
    assert first_token.wait(60), "the first reply did not start"
    b = threading.Thread(target=stream, args=("b", keys[1]))
    b.start()
    deadline = time.monotonic() + 10
    while limited.health()["queue"]["waiting"] != 1:  # type: ignore[index]
        assert time.monotonic() < deadline, "the second reply did not queue"
        time.sleep(0.05)

    t0 = time.monotonic()
    with limited.client(keys[2]) as http:
        full = http.post("/v1/chat/completions", json=chat_body())
    assert full.status_code == 503 and time.monotonic() - t0 < 2.0
    assert int(full.headers["Retry-After"]) >= 1
    assert full.json()["error"]["code"] == "queue_full"
    client = openai.OpenAI(api_key=keys[2], base_url=limited.v1, max_retries=0)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="tars", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 503

    release.set()  # the first client leaves: its reply stops, the waiting one runs
    a.join(60)
    b.join(120)
    assert results.get("b.status") == 200 and results.get("b.done") is True
    queue = limited.health()["queue"]
    assert queue["active"] == 0 and queue["waiting"] == 0  # type: ignore[index]
    with limited.client(limited.new_key("after")) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_the_model_process_dying_mid_reply_is_an_error_then_it_reloads(limited: Server) -> None:
    key = limited.new_key("crash")
    pid = limited.health()["model"]["pid"]  # type: ignore[index]
    assert isinstance(pid, int)
    body = chat_body("Write a long story about a volcano.", max_tokens=400, stream=True)
    with limited.client(key) as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content":"' in line and '"content":""' not in line:
                os.kill(pid, signal.SIGKILL)
                break
        rest = [x for x in lines if x]
    errors = [json.loads(x[6:]) for x in rest if x.startswith('data: {"error"')]
    assert errors and "model" in errors[0]["error"]["message"], rest[-3:]
    assert rest[-1] == "data: [DONE]"
    deadline = time.monotonic() + 60
    while limited.health()["model"]["pid"] in (pid, None):  # type: ignore[index]
        assert time.monotonic() < deadline, "the model was not reloaded"
        time.sleep(0.2)
    with limited.client(key) as http:
        again = http.post("/v1/chat/completions", json=chat_body())
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"]

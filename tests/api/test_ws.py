"""``/ws/chat`` with the `websockets` client: tokens, stage timings and final metrics
as JSON events; cancel stops the reply within one token; a bad key never connects."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .conftest import Server

pytestmark = pytest.mark.slow


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/ws/chat"


async def events_until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    out = []
    while True:
        event = json.loads(await ws.recv(decode=True))
        out.append(event)
        if event["type"] in (kind, "error"):
            return out


async def test_a_turn_streams_tokens_stages_and_metrics(server: Server) -> None:
    async with connect(ws_url(server), additional_headers=server.headers()) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "message", "text": "Say something about owls."}))
        events = await events_until(ws, "done")
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "done", events[-1]
        stages = {e["name"] for e in events if e["type"] == "stage"}
        assert {"retrieval_ms", "queue_ms", "first_token_ms"} <= stages
        assert "memory" in kinds
        tokens = [e["text"] for e in events if e["type"] == "token"]
        done = events[-1]
        assert len(tokens) > 1 and "".join(tokens) == done["text"]
        assert done["metrics"]["ttft_ms"] > 0 and done["metrics"]["completion_tokens"] > 0
        assert done["usage"]["completion_tokens"] == done["metrics"]["completion_tokens"]
        conv = done["tars"]["conversation_id"]

        # The next message on the socket continues its conversation.
        await ws.send(json.dumps({"type": "message", "text": "And about bats?", "memory": False}))
        second = (await events_until(ws, "done"))[-1]
        assert second["tars"]["conversation_id"] == conv

        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_cancel_stops_within_one_token(server: Server) -> None:
    async with connect(ws_url(server), additional_headers=server.headers()) as ws:
        await ws.recv()
        message = {
            "type": "message",
            "text": "Write a long story about a lighthouse keeper and the sea.",
            "max_tokens": 300,
            "memory": False,
        }
        await ws.send(json.dumps(message))
        tokens = 0
        while tokens < 3:
            event = json.loads(await ws.recv())
            assert event["type"] != "done", "the reply ended before it could be cancelled"
            tokens += event["type"] == "token"
        await ws.send(json.dumps({"type": "cancel"}))
        done = (await events_until(ws, "done"))[-1]
        assert done["type"] == "done" and done["cancelled"] is True
        assert done["finish_reason"] == "cancelled"
        # One token may follow the cancel (the engine checks before every token), plus
        # what the child had made but not yet sent ([api] stream_batch_ms = 20 ms of it).
        batched = math.ceil(done["metrics"]["tokens_per_s"] * 0.020)
        assert done["tokens_after_cancel"] is not None
        assert done["tokens_after_cancel"] <= 1 + batched + 1
        assert done["metrics"]["completion_tokens"] < 300
        # Stored as cancelled, with the text generated so far.
        with server.client() as http:
            conv = http.get(f"/conversations/{done['tars']['conversation_id']}").json()
        last = conv["messages"][-1]
        assert last["status"] == "cancelled" and last["text"] == done["text"]

        # Nothing left to cancel; the socket is still usable.
        await ws.send(json.dumps({"type": "cancel"}))
        assert json.loads(await ws.recv())["code"] == "nothing_to_cancel"


async def test_bad_messages_get_error_events_and_the_socket_lives(server: Server) -> None:
    async with connect(ws_url(server), additional_headers=server.headers()) as ws:
        await ws.recv()
        for raw, code in (
            ("not json", "invalid_json"),
            (json.dumps({"type": "dance"}), "invalid_value"),
            (json.dumps({"type": "message", "text": 5}), "string_type"),
            (json.dumps({"type": "message", "text": "x" * 5000}), "message_too_long"),
            (json.dumps({"type": "message", "text": "hi", "project": "nope"}), "project_not_found"),
        ):
            await ws.send(raw)
            event = json.loads(await ws.recv())
            assert event["type"] == "error" and event["code"] == code, event
        await ws.send(b'{"type": "ping"}')  # a binary frame
        assert json.loads(await ws.recv())["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "message", "text": "Hello", "memory": False}))
        await ws.send(json.dumps({"type": "message", "text": "Again"}))  # while it streams
        events = await events_until(ws, "done")
        assert any(e["type"] == "error" and e["code"] == "busy" for e in events)
        if events[-1]["type"] == "error":  # the busy error came first; the reply follows
            events = await events_until(ws, "done")
        assert events[-1]["type"] == "done"


async def test_a_bad_key_never_opens_the_socket(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer tars-nope"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body or b"{}")
        assert body["error"]["code"] == "invalid_api_key"
    # An origin outside [api] cors_origins (a web page) is refused even with a key.
    with pytest.raises(InvalidStatus) as cross:
        async with connect(
            ws_url(server), additional_headers=server.headers(), origin="http://evil.example"
        ):
            pass
    assert cross.value.response.status_code == 403
    assert httpx.get(f"{server.url}/health").status_code == 200

"""``/ws/chat``: a conversation over one WebSocket, as JSON events.

Client -> server::

    {"type": "message", "text": "...", "project"?: str, "conversation_id"?: int,
     "memory"?: bool, "temperature"?, "top_p"?, "max_tokens"?, "stop"?}
    {"type": "cancel"}                       stops the reply within one token
    {"type": "ping"}

Server -> client::

    {"type": "ready", "conversation_id": null}
    {"type": "stage", "name": "retrieval_ms" | "queue_ms" | "first_token_ms", "value": ms}
    {"type": "memory", "ids": [...], "summary_used": bool, "error": str | null}
    {"type": "queued", "position": n}
    {"type": "token", "text": "..."}
    {"type": "done", "text", "cancelled", "finish_reason", "metrics", "usage", "tars",
     "tokens_after_cancel"}
    {"type": "error", "code": str, "message": str, "param": str | null, "retry_after"?: s}
    {"type": "pong"}

One reply at a time per socket; after ``done`` the next message continues the same
conversation unless it names another. The handshake needs ``Authorization: Bearer
KEY``; a bad key is refused with 401 before the socket opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from tars_api.auth import check_key, check_rate
from tars_api.chat import KEEPALIVE, TurnStream, admit
from tars_api.errors import ApiError, deny_websocket, validation_error
from tars_api.keys import KeyFileError
from tars_api.routes_openai import usage
from tars_api.routes_tars import query_request
from tars_api.runtime import Runtime
from tars_api.schemas import ChatQuery, WsMessage
from tars_api.turns import TurnOutcome

router = APIRouter(tags=["TARS"])


def _error(exc: ApiError) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "error",
        "code": exc.code or "error",
        "message": exc.message,
        "param": exc.param,
    }
    if "Retry-After" in exc.headers:
        event["retry_after"] = int(exc.headers["Retry-After"])
    return event


class ChatSocket:
    def __init__(self, ws: WebSocket, rt: Runtime, key_name: str) -> None:
        self.ws, self.rt, self.key_name = ws, rt, key_name
        self.out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.turn: TurnStream | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.conversation_id: int | None = None
        self.project: str | None = None

    async def writer(self) -> None:
        while (event := await self.out.get()) is not None:
            await self.ws.send_text(json.dumps(event, separators=(",", ":")))

    async def serve(self) -> None:
        writer = asyncio.get_running_loop().create_task(self.writer())
        self.out.put_nowait({"type": "ready", "conversation_id": None})
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    text = message.get("text")
                    if text is None:
                        raise ApiError(400, "send JSON in text frames", code="invalid_json")
                    await self.handle(text)
                except ApiError as exc:
                    self.out.put_nowait(_error(exc))
        except WebSocketDisconnect:
            pass
        finally:
            if self.turn is not None:
                self.turn.close()
            if self.forwarder is not None:
                self.forwarder.cancel()
            self.out.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer

    async def handle(self, raw: str) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, "not a JSON message", code="invalid_json") from None
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            self.out.put_nowait({"type": "pong"})
        elif kind == "cancel":
            if self.turn is None:
                raise ApiError(409, "no reply to cancel", code="nothing_to_cancel")
            self.turn.cancel()
        elif kind == "message":
            await self.start(data)
        else:
            raise ApiError(
                400, "type must be message, cancel or ping", param="type", code="invalid_value"
            )

    async def start(self, data: dict[str, Any]) -> None:
        if self.turn is not None:
            raise ApiError(409, "a reply is streaming: cancel it or wait for done", code="busy")
        try:
            entry = self.rt.keys.verify_name(self.key_name)
        except KeyFileError as exc:
            raise ApiError(500, str(exc), type_="server_error", code="keys_file") from None
        if entry is None:
            raise ApiError(401, "this socket's API key was revoked", code="invalid_api_key")
        check_rate(entry, self.rt.limiter)
        try:
            msg = WsMessage.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None
        conv = msg.conversation_id
        if conv is None and msg.project in (None, self.project):
            conv = self.conversation_id  # the socket's conversation goes on
        query = ChatQuery(
            message=msg.text,
            project=msg.project,
            conversation_id=conv,
            memory=msg.memory,
            temperature=msg.temperature,
            top_p=msg.top_p,
            max_tokens=msg.max_tokens,
            stop=msg.stop,
        )
        req = await asyncio.to_thread(query_request, self.rt, query)
        self.project = msg.project
        self.turn = TurnStream(self.rt, req, admit(self.rt), emit=self.out.put_nowait)
        self.forwarder = asyncio.get_running_loop().create_task(self.forward(self.turn))

    async def forward(self, turn: TurnStream) -> None:
        try:
            async for item in turn.events():
                if isinstance(item, str):
                    self.out.put_nowait({"type": "token", "text": item})
                elif isinstance(item, TurnOutcome):
                    self.conversation_id = item.conversation_id
                    self.out.put_nowait(_done(item))
                elif item is KEEPALIVE:
                    self.out.put_nowait({"type": "queued", "position": None})
        except ApiError as exc:
            self.out.put_nowait(_error(exc))
        finally:
            self.turn = None


def _done(outcome: TurnOutcome) -> dict[str, Any]:
    metrics = None
    if outcome.metrics is not None:
        metrics = dataclasses.asdict(outcome.metrics)
        metrics["stages"] = dict(outcome.metrics.stages)
    return {
        "type": "done",
        "text": outcome.text,
        "cancelled": outcome.cancelled,
        "finish_reason": outcome.finish_reason,
        "metrics": metrics,
        "usage": usage(outcome),
        "tars": outcome.tars_field(),
        "tokens_after_cancel": outcome.tokens_after_cancel,
    }


@router.websocket("/ws/chat")
async def ws_chat(ws: WebSocket) -> None:
    rt: Runtime = ws.app.state.runtime
    try:
        entry = check_key(ws.headers, rt.keys)
        check_rate(entry, rt.limiter)
    except ApiError as exc:
        await deny_websocket(ws.scope, ws.receive, ws.send, exc)
        return
    await ws.accept()
    await ChatSocket(ws, rt, entry.name).serve()


__all__ = ["router"]

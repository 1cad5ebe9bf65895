"""Every error, on every route, in OpenAI's shape, so any OpenAI client reports it well:

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

Validation errors (malformed JSON, a wrong type) are 400 naming the field; a route
that does not exist is 404; an unexpected failure is 500 and is logged, never
shown as a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

log = logging.getLogger("tars_api")

INVALID = "invalid_request_error"
SERVER = "server_error"


class ApiError(Exception):
    """An answer other than 2xx; raise it anywhere in a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = INVALID,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.type, self.code, self.param = type_, code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str = INVALID, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def send_error(send: Send, exc: ApiError) -> None:
    """The error as a raw ASGI response, for middleware that answers before routing."""
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def deny_websocket(scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
    """Refuse a WebSocket handshake with a real HTTP answer (JSON body) where the server
    supports it, else with a close (which the server turns into 403)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(exc.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        await send(
            {"type": "websocket.http.response.start", "status": exc.status, "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})


def validation_error(errors: Sequence[Any]) -> ApiError:
    """The first problem pydantic found, said the way OpenAI says it."""
    first = dict(errors[0]) if errors else {}
    kind = str(first.get("type", "invalid"))
    param = _param(first.get("loc", ()))
    loc = [param] if param else []
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        detail = ctx.get("error") if isinstance(ctx, dict) else None
        message = f"the request body is not valid JSON ({detail or 'cannot parse it'})"
        return ApiError(400, message, code="invalid_json")
    if kind == "missing" and not loc:
        return ApiError(400, "the request needs a JSON body", code="missing_body")
    if kind == "model_attributes_type" and not loc:
        return ApiError(
            400,
            "the request body must be a JSON object (send Content-Type: application/json)",
            code="invalid_body",
        )
    what = str(first.get("msg", "invalid value"))
    message = f"{param}: {what}" if param else what
    if "input" in first and kind != "missing":
        message += f" (got {_short(first['input'])})"
    return ApiError(400, message, param=param, code=kind)


_WHERE = ("body", "query", "path", "header", "cookie")
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: Sequence[Any]) -> str | None:
    """``('body', 'messages', 0, 'content', 'str')`` -> ``messages[0].content``."""
    parts = list(loc)
    if parts and parts[0] in _WHERE:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part) in _UNION_TAGS or str(part).startswith("function-"):
            continue  # the branch of a union pydantic tried, not a field
        else:
            out += f".{part}" if out else str(part)
    return out or None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_STATUS_CODES = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        err = ApiError(
            exc.status_code,
            message,
            code=_STATUS_CODES.get(exc.status_code),
            headers=dict(exc.headers or {}),
        )
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        err = ApiError(500, f"internal error: {type(exc).__name__}", type_=SERVER, code="internal")
        return error_response(err)


__all__ = [
    "INVALID",
    "SERVER",
    "ApiError",
    "deny_websocket",
    "error_body",
    "error_response",
    "install_error_handlers",
    "send_error",
    "validation_error",
]

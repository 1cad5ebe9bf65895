"""The OpenAI-compatible routes: chat completions (plain and SSE), models, embeddings.

Any OpenAI client works against ``http://HOST:PORT/v1``. TARS adds, on top of the
wire format: memory in the loop (on by default), the ``tars`` request field and
``X-Tars-Project`` / ``X-Tars-Memory`` headers, and a ``tars`` field in the reply
(memory ids used, where the exchange was stored, stage timings).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from tars_api.auth import require_key
from tars_api.chat import KEEPALIVE, TurnStream, admit, check_text, complete_turn, sampling
from tars_api.embeddings import create_embeddings
from tars_api.errors import ApiError
from tars_api.runtime import Runtime
from tars_api.schemas import ChatCompletionRequest, EmbeddingsRequest, TarsOptions
from tars_api.turns import TurnOutcome, TurnRequest, find_conversation
from tars_assistant.llm import ChatMessage

router = APIRouter(dependencies=[Depends(require_key)], tags=["OpenAI-compatible"])
ALIASES = ("tars", "default")
OFF = ("0", "off", "false", "no")


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def model_names(rt: Runtime, *, discovered: bool = True) -> set[str]:
    """Every name the loaded model answers to: file, stem, aliases and (blocking: a
    disk walk, cached) the name `tars models` gives it."""
    name = rt.engine.model_name
    names = {name, Path(name).stem, rt.engine.profile.name, *ALIASES}
    loaded = rt.engine.model_path
    if discovered and loaded is not None:
        names |= {m.name for m in rt.models() if _same(m.path, loaded)}
    return {n.lower() for n in names}


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


async def check_model(rt: Runtime, requested: str | None) -> str:
    wanted = (requested or "").lower()
    known = not wanted or wanted in model_names(rt, discovered=False)
    if not known and wanted not in await asyncio.to_thread(model_names, rt):
        raise ApiError(
            404,
            f"model {requested!r} is not loaded: this server runs {rt.engine.model_name} "
            "(GET /v1/models lists the models on this machine; `tars serve` loads [llm] "
            "model_path)",
            param="model",
            code="model_not_found",
        )
    return rt.engine.model_name


def _turn_request(
    rt: Runtime, body: ChatCompletionRequest, project_header: str | None, memory_header: str | None
) -> TurnRequest:
    """Blocking (the store): called in a thread."""
    opts = body.tars or TarsOptions()
    system: list[str] = []
    convo: list[ChatMessage] = []
    limit = rt.config.api.max_message_chars
    for i, m in enumerate(body.messages):
        if m.role in ("tool", "function"):
            raise ApiError(
                400,
                f"messages[{i}]: role {m.role!r} is not supported (this server calls no tools)",
                param=f"messages[{i}].role",
                code="unsupported_role",
            )
        text = m.text()
        check_text(text, limit, f"messages[{i}].content")
        if m.role in ("system", "developer"):
            system.append(text)
        else:
            convo.append(
                ChatMessage(role="user" if m.role == "user" else "assistant", content=text)
            )
    if not convo or convo[-1]["role"] != "user":
        raise ApiError(
            400, "the last message must be the user's", param="messages", code="invalid_value"
        )
    project = rt.project(opts.project or project_header)
    conversation_id = opts.conversation_id
    prior = tuple(convo[:-1])
    if conversation_id is not None:
        conv = rt.store.get_conversation(conversation_id)
        if conv is None or (opts.project is not None and conv.project_id != project.id):
            raise ApiError(
                404,
                f"no conversation {conversation_id} in project {project.name!r}",
                param="tars.conversation_id",
                code="conversation_not_found",
            )
        project = rt.store.get_project(conv.project_id) or project
    elif opts.store and prior:
        conversation_id = find_conversation(rt.store, project.id, prior)
    bias: dict[int, float] | None = None
    if body.logit_bias:
        try:
            bias = {int(k): max(-100.0, min(100.0, v)) for k, v in body.logit_bias.items()}
        except ValueError:
            raise ApiError(
                400, "logit_bias: keys must be token ids", param="logit_bias", code="invalid_value"
            ) from None
    memory_off = (memory_header or "").strip().lower() in OFF
    return TurnRequest(
        text=convo[-1]["content"],
        project_id=project.id,
        conversation_id=conversation_id,
        history=prior,
        system_prompt="\n\n".join(system) if system else None,
        memory=opts.memory and not memory_off,
        store=opts.store,
        sampling=sampling(
            body.temperature,
            body.top_p,
            body.max_completion_tokens or body.max_tokens,
            body.stop,
        ),
        logit_bias=bias,
    )


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI), with TARS's memory")
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    x_tars_project: str | None = Header(None, description="Project for memory and storage."),
    x_tars_memory: str | None = Header(None, description="off: no recall, no remembering."),
) -> Any:
    rt = runtime_of(request)
    model = await check_model(rt, body.model)
    req = await asyncio.to_thread(_turn_request, rt, body, x_tars_project, x_tars_memory)
    ticket = admit(rt)
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        outcome = await complete_turn(rt, req, ticket)
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": outcome.text},
                        "logprobs": None,
                        "finish_reason": _finish(outcome),
                    }
                ],
                "usage": usage(outcome),
                "system_fingerprint": None,
                "tars": outcome.tars_field(),
            }
        )
    turn = TurnStream(rt, req, ticket)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = _sse(turn, cid, created, model, include_usage)
    return ClosingStream(chunks, turn.close, media_type="text/event-stream", headers=SSE_HEADERS)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClosingStream(StreamingResponse):
    """A streaming response that abandons its turn however it ends, even when the
    client left before the first byte (the body iterator then never runs)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _finish(outcome: TurnOutcome) -> str:
    # OpenAI knows stop and length; a reply cut short by the server is "stop".
    return "length" if outcome.finish_reason == "length" else "stop"


def usage(outcome: TurnOutcome) -> dict[str, int]:
    p, c = outcome.prompt_tokens, outcome.completion_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _sse(
    turn: TurnStream, cid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        if include_usage and "usage" not in extra:
            body["usage"] = None
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for item in turn.events():
            if item is KEEPALIVE:
                yield ": waiting for the model\n\n"
            elif isinstance(item, str):
                yield chunk({"content": item})
            elif isinstance(item, TurnOutcome):
                tars = item.tars_field()
                if include_usage:
                    yield chunk({}, _finish(item), tars=tars)
                    tail = {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage(item),
                    }
                    yield f"data: {json.dumps(tail, separators=(',', ':'))}\n\n"
                else:
                    # Usage rides on the last chunk, so clients that never ask still see it.
                    yield chunk({}, _finish(item), usage=usage(item), tars=tars)
    except ApiError as exc:
        yield f"data: {json.dumps(exc.body())}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/v1/models", summary="The GGUF models on this machine; the loaded one marked")
async def list_models(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    found = await asyncio.to_thread(rt.models)
    loaded = rt.engine.model_path
    data: list[dict[str, Any]] = []
    for m in found:
        is_loaded = loaded is not None and _same(m.path, loaded)
        entry = {
            "id": rt.engine.model_name if is_loaded else m.name,
            "object": "model",
            "created": int(_mtime(m.path)),
            "owned_by": m.source,
            "tars": {
                "loaded": is_loaded,
                "path": str(m.path),
                "source": m.source,
                "size_bytes": m.size_bytes,
                "quantization": m.quantization,
            },
        }
        data.insert(0, entry) if is_loaded else data.append(entry)
    if loaded is not None and not any(d["tars"]["loaded"] for d in data):
        data.insert(0, _loaded_entry(rt, loaded))
    elif loaded is None:  # a model server answers: its model first, as the one in use
        where = rt.engine.where
        data.insert(
            0,
            {
                "id": rt.engine.model_name,
                "object": "model",
                "created": int(rt.started_at),
                "owned_by": where.label,
                "tars": {
                    "loaded": True,
                    "profile": rt.engine.profile.name,
                    "backend": rt.engine.profile.backend,
                    "remote": where.remote,
                },
            },
        )
    return {"object": "list", "data": data}


def _loaded_entry(rt: Runtime, path: Path) -> dict[str, Any]:
    return {
        "id": rt.engine.model_name,
        "object": "model",
        "created": int(_mtime(path)),
        "owned_by": "config",
        "tars": {"loaded": True, "path": str(path), "source": "config"},
    }


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@router.post("/v1/embeddings", summary="Embeddings from the node's model (OpenAI)")
async def embeddings(body: EmbeddingsRequest, request: Request) -> dict[str, Any]:
    return await create_embeddings(runtime_of(request), body)


__all__ = ["check_model", "model_names", "router", "usage"]

"""TARS's own endpoints: chat with stored conversations, memory, projects, health.

Store reads and writes run in worker threads (plain ``def`` routes run in FastAPI's
thread pool; async ones use ``asyncio.to_thread``): a write waits for an fsync, and
the event loop must keep streaming meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastApiPath

from memory.conversation_store import Conversation, Message
from memory.semantic import Hit
from tars_api.auth import optional_key, require_key
from tars_api.chat import admit, check_text, complete_turn, sampling
from tars_api.errors import ApiError
from tars_api.health import health_report
from tars_api.runtime import Runtime
from tars_api.schemas import SQL_INT_MAX, ChatQuery, ChatReply, RememberRequest
from tars_api.turns import TurnRequest

router = APIRouter(dependencies=[Depends(require_key)], tags=["TARS"])
public = APIRouter(tags=["TARS"])


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def conversation_dict(c: Conversation) -> dict[str, Any]:
    return dataclasses.asdict(c)


def message_dict(m: Message) -> dict[str, Any]:
    out = dataclasses.asdict(m)
    out["metrics"] = (
        None
        if m.metrics is None
        else {
            **{k: v for k, v in dataclasses.asdict(m.metrics).items() if k != "stages"},
            "stages": dict(m.metrics.stages),
        }
    )
    return out


def hit_dict(rt: Runtime, h: Hit) -> dict[str, Any]:
    project = rt.store.get_project(h.project_id) if h.project_id is not None else None
    return {
        "id": h.shown_id,
        "text": h.text,
        "kind": h.kind,
        "project": project.name if project is not None else None,
        "score": h.score,
        "similarity": h.similarity,
        "created_at": h.created_at,
        "source": h.source,
        "pinned": h.pinned,
    }


# -- chat --------------------------------------------------------------------------------


def query_request(rt: Runtime, body: ChatQuery) -> TurnRequest:
    check_text(body.message, rt.config.api.max_message_chars, "message")
    project = rt.project(body.project)
    if body.conversation_id is not None:
        conv = rt.store.get_conversation(body.conversation_id)
        if conv is None:
            raise ApiError(
                404,
                f"no conversation {body.conversation_id} (GET /conversations)",
                param="conversation_id",
                code="conversation_not_found",
            )
        if body.project is not None and conv.project_id != project.id:
            raise ApiError(
                400,
                f"conversation {conv.id} belongs to another project than {project.name!r}",
                param="project",
                code="invalid_value",
            )
        project = rt.store.get_project(conv.project_id) or project
    return TurnRequest(
        text=body.message,
        project_id=project.id,
        conversation_id=body.conversation_id,
        memory=body.memory,
        sampling=sampling(body.temperature, body.top_p, body.max_tokens, body.stop),
    )


@router.post("/chat/query", response_model=ChatReply, summary="One turn of a stored conversation")
async def chat_query(body: ChatQuery, request: Request) -> ChatReply:
    rt = runtime_of(request)
    req = await asyncio.to_thread(query_request, rt, body)
    outcome = await complete_turn(rt, req, admit(rt))
    return ChatReply(
        reply=outcome.text,
        cancelled=outcome.cancelled,
        finish_reason=outcome.finish_reason,
        project=outcome.project,
        conversation_id=outcome.conversation_id,
        message_id=outcome.message_id,
        memory_ids=list(outcome.memory_ids),
        memory_error=outcome.memory_error,
        stages={k: round(v, 3) for k, v in outcome.stages.items()},
        usage={
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
        },
    )


# -- conversations and projects ------------------------------------------------------------


@router.get("/conversations", summary="Past conversations, latest activity first")
def list_conversations(
    request: Request,
    project: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=SQL_INT_MAX),
) -> dict[str, Any]:
    rt = runtime_of(request)
    pid = rt.project(project).id if project else None
    convs = rt.store.list_conversations(limit=limit, project_id=pid, offset=offset)
    return {"data": [conversation_dict(c) for c in convs]}


@router.get("/conversations/{conversation_id}", summary="One conversation with its messages")
def get_conversation(
    request: Request, conversation_id: int = FastApiPath(ge=0, le=SQL_INT_MAX)
) -> dict[str, Any]:
    rt = runtime_of(request)
    conv = rt.store.get_conversation(conversation_id)
    if conv is None:
        raise ApiError(404, f"no conversation {conversation_id}", code="conversation_not_found")
    out = conversation_dict(conv)
    out["messages"] = [message_dict(m) for m in rt.store.messages(conv.id)]
    return out


@router.get("/projects", summary="Projects with their counts; the active one marked")
def list_projects(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    active = rt.active_project().id
    memories: dict[int, tuple[int, int]] = {}
    if rt.memory is not None:
        memories = {i.id: (i.memories, i.documents) for i in rt.memory.projects.overview()}
    data = []
    for act in rt.store.project_activity():
        p = act.project
        counts = memories.get(p.id)
        data.append(
            {
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "summary": p.summary,
                "active": p.id == active,
                "conversations": act.conversations,
                "messages": act.messages,
                "memories": counts[0] if counts else None,
                "documents": counts[1] if counts else None,
                "last_activity": act.last_activity,
            }
        )
    return {"data": data}


# -- memory --------------------------------------------------------------------------------


@router.get("/memory/search", summary="Search long-term memory (the node)")
async def memory_search(
    request: Request,
    q: str = Query(min_length=1, max_length=2000, description="What to look for."),
    project: str | None = None,
    scope: Literal["project", "all"] = "project",
    k: int = Query(10, ge=1, le=100),
) -> dict[str, Any]:
    rt = runtime_of(request)
    memory = rt.require_memory()
    found = await asyncio.to_thread(rt.project, project)
    outcome = await memory.semantic.search(q, project_id=found.id, scope=scope, k=k)
    if outcome.error:
        raise ApiError(
            503, f"memory search failed: {outcome.error}", type_="server_error", code="node"
        )
    hits = await asyncio.to_thread(lambda: [hit_dict(rt, h) for h in outcome.hits])
    return {"query": q, "project": found.name, "latency_ms": outcome.latency_ms, "data": hits}


@router.post("/memory", status_code=201, summary="Remember a fact (delivered to the node)")
def remember(body: RememberRequest, request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    memory = rt.require_memory()
    scope = body.scope or rt.config.memory.remember_scope
    project = rt.project(body.project)
    record = memory.semantic.remember(
        body.text, project_id=None if scope == "global" else project.id
    )
    return {
        "id": memory.store.short_id(record.id),
        "kind": record.kind,
        "text": record.text,
        "project": None if record.project_id is None else project.name,
        "created_at": record.created_at,
    }


@router.delete("/memory/{memory_id:path}", summary="Forget a memory")
def forget(memory_id: str, request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    memory = rt.require_memory()
    done = memory.semantic.forget([memory_id])
    if not done:
        record = memory.store.get_memory(memory.store.full_id(memory_id))
        state = "already forgotten" if record is not None else "no such memory"
        raise ApiError(404, f"memory {memory_id!r}: {state}", code="memory_not_found")
    return {"id": memory_id, "forgotten": True}


# -- health (no key needed for the summary) ------------------------------------------------


@public.get("/health", summary="Is it up? With a key: PC1, node, GPU, latency, queue")
async def health(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    detailed = optional_key(request) is not None
    return await asyncio.to_thread(health_report, rt, detailed)


__all__ = ["public", "router"]

"""The rows the conversation database hands out: plain frozen dataclasses.

Re-exported by :mod:`memory.conversation_store`, which is where callers import them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

Role = Literal["user", "assistant", "system"]
Status = Literal["complete", "cancelled", "streaming", "error"]
ROLES: tuple[Role, ...] = get_args(Role)
STATUSES: tuple[Status, ...] = get_args(Status)


@dataclass(frozen=True)
class ReplyMetrics:
    """What a reply cost. ``stages`` holds any other latency stage (``retrieval_ms``...)."""

    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    total_ms: float | None = None
    stages: Mapping[str, float] = field(default_factory=dict)

    _KNOWN: ClassVar[tuple[str, ...]] = (
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "tokens_per_s",
        "total_ms",
    )

    def to_json(self) -> str:
        """Flat JSON; values that are not finite numbers are left out."""
        data = {k: getattr(self, k) for k in self._KNOWN}
        data.update(self.stages)
        finite = {k: v for k, v in data.items() if isinstance(v, int | float) and math.isfinite(v)}
        return json.dumps(finite)

    @classmethod
    def from_json(cls, text: str) -> ReplyMetrics:
        data: dict[str, Any] = json.loads(text)
        known = {k: data.pop(k) for k in cls._KNOWN if k in data}
        stages = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
        return cls(**known, stages=stages)

    def summary(self) -> str:
        """One line for people, e.g. ``TTFT 120 ms · 45 tokens · 130.2 tok/s · 0.50 s``."""
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"TTFT {self.ttft_ms:.0f} ms")
        if self.prompt_tokens is not None:
            parts.append(f"{self.prompt_tokens} prompt tokens")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} tokens")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.total_ms is not None:
            parts.append(f"{self.total_ms / 1000:.2f} s total")
        parts.extend(f"{name} {value:.0f}" for name, value in sorted(self.stages.items()))
        return " · ".join(parts)


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    description: str
    summary: str
    summary_at: float | None
    created_at: float
    archived: bool
    model: str | None = None  # the project's own model profile; None = [llm] model


@dataclass(frozen=True)
class Conversation:
    id: int
    project_id: int
    title: str
    created_at: float
    updated_at: float  # last activity: any message written
    model: str | None  # the model of the latest reply
    message_count: int


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: Role
    text: str
    created_at: float
    completed_at: float | None
    model: str | None
    status: Status
    metrics: ReplyMetrics | None
    error: str | None

    @property
    def interrupted(self) -> bool:
        """Cut off by a failure, not by the user: cancelled, and ``error`` says by what
        (the model's process died, TARS itself stopped)."""
        return self.status == "cancelled" and bool(self.error)


@dataclass(frozen=True)
class SearchHit:
    message_id: int
    conversation_id: int
    conversation_title: str
    project_id: int
    role: Role
    snippet: str
    created_at: float
    score: float  # bm25: lower is a better match


@dataclass(frozen=True)
class StoreStats:
    projects: int
    conversations: int
    messages: int
    messages_by_role: dict[str, int]
    messages_by_status: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    mean_ttft_ms: float | None
    mean_tokens_per_s: float | None
    db_bytes: int


@dataclass(frozen=True)
class ProjectActivity:
    """A project with its counts, for the projects list."""

    project: Project
    conversations: int
    messages: int
    last_activity: float  # the latest message, or the project's creation


__all__ = [
    "ROLES",
    "STATUSES",
    "Conversation",
    "Message",
    "Project",
    "ProjectActivity",
    "ReplyMetrics",
    "Role",
    "SearchHit",
    "Status",
    "StoreStats",
]

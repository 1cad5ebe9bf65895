"""What the memory commands show: the views a front end may turn into screens, the
host protocol they need, and the text shared by commands (plain mode) and screens.
No Textual here: plain mode imports it.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from memory.memory_store import MemoryRecord
from memory.project_store import ProjectInfo
from memory.semantic import Hit
from memory.service import Memory
from tars_tui.host import CommandHost

# -- views the TUI shows as screens -------------------------------------------------


@dataclass(frozen=True)
class MemoryView:
    """The /memory browser: one project's memories (and global ones) or all."""

    project_id: int
    all_projects: bool = False
    query: str = ""


@dataclass(frozen=True)
class ProjectsView:
    """The /projects screen."""


@dataclass(frozen=True)
class IngestView:
    """/ingest with a progress bar."""

    path: Path
    project_id: int | None  # None: global


@dataclass(frozen=True)
class MessageHit:
    """A past message found by /history QUERY."""

    message_id: int
    conversation_id: int
    title: str
    snippet: str
    created_at: float
    found_by: str  # keyword | meaning | both


@dataclass(frozen=True)
class MessageHitsView:
    query: str
    hits: tuple[MessageHit, ...]


View = MemoryView | ProjectsView | IngestView | MessageHitsView


@runtime_checkable
class MemoryHost(CommandHost, Protocol):
    """What the memory commands need from a front end, beyond CommandHost."""

    @property
    def memory(self) -> Memory | None:
        """The memory layers; None when memory is off (an attribute does as well)."""
        ...

    def run_async(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``job`` in the loop the node client lives in (TUI: an async worker;
        plain mode: its LoopThread, waiting for the end). Failures are the host's
        to show."""
        ...

    def show_view(self, view: View) -> bool:
        """Show ``view`` as a screen; False when this host has none (plain mode)."""
        ...


# -- formatting shared with the screens ------------------------------------------------


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def scope_name(memory: Memory, project_id: int | None) -> str:
    if project_id is None:
        return "global"
    project = memory.conversations.get_project(project_id)
    return project.name if project is not None else f"#{project_id}"


def shorten(text: str, size: int = 90) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= size else text[: size - 1] + "…"


def memory_line(memory: Memory, record: MemoryRecord) -> str:
    pin = "📌 " if record.pinned else ""
    state = ""
    if record.forgotten_at is not None:
        state = " · forgotten"
    elif record.merged_into is not None:
        state = f" · merged into {memory.store.short_id(record.merged_into)}"
    elif record.delivered_at is None:
        state = " · waiting for the node"
    return (
        f"`{memory.store.short_id(record.id)}` {pin}{when(record.created_at)} · "
        f"{scope_name(memory, record.project_id)} · {record.kind}{state} — "
        f"{shorten(record.text)}"
    )


def memory_details(memory: Memory, record: MemoryRecord) -> str:
    """Markdown: the whole memory with where it came from."""
    lines = [
        f"**Memory** `{memory.store.short_id(record.id)}` ({record.kind})",
        f"- **Project:** {scope_name(memory, record.project_id)}",
        f"- **Date:** {when(record.created_at)}",
    ]
    if record.conversation_id is not None:
        conv = memory.conversations.get_conversation(record.conversation_id)
        title = conv.title if conv and conv.title else "untitled"
        lines.append(f"- **Source:** conversation {record.conversation_id} “{title}”")
    lines.append(f"- **Pinned:** {'yes' if record.pinned else 'no'}")
    if record.delivered_at is None and record.active:
        lines.append("- **Node:** waiting in the outbox")
    if record.merged_into:
        lines.append(f"- **Merged into:** `{memory.store.short_id(record.merged_into)}`")
    if record.forgotten_at:
        lines.append(f"- **Forgotten:** {when(record.forgotten_at)}")
    return "\n".join(lines) + "\n\n" + record.text


def hit_line(memory: Memory, hit: Hit, rank: int) -> str:
    sim = f" · {hit.similarity:.2f}" if hit.similarity is not None else ""
    where = hit.source if hit.is_document else scope_name(memory, hit.project_id)
    return f"{rank}. `{hit.shown_id}` ({hit.kind} · {where}{sim}) — {shorten(hit.text, 160)}"


def project_line(info: ProjectInfo, active: int) -> str:
    mark = "▶ " if info.id == active else ""
    archived = " · archived" if info.project.archived else ""
    return (
        f"{mark}**{info.name}**{archived} — {info.conversations} conversations · "
        f"{info.memories} memories · {info.documents} documents · last {when(info.last_activity)}"
    )


def project_details(memory: Memory, project_id: int) -> str:
    detail = memory.projects.detail(project_id)
    p = detail.info.project
    out = [f"### {p.name}" + (" (archived)" if p.archived else "")]
    if p.description:
        out.append(p.description)
    if p.summary:
        dated = f" ({when(p.summary_at)})" if p.summary_at else ""
        out.append(f"**Summary{dated}:** {p.summary}")
    else:
        out.append("*No summary yet* (`/projects summarize`).")
    if detail.conversations:
        out.append("**Conversations:**")
        out += [
            f"- {c.title or 'untitled'} · {when(c.updated_at)} · {c.message_count} messages"
            for c in detail.conversations
        ]
    if detail.documents:
        out.append("**Documents:**")
        out += [f"- {Path(d.path).name} · {d.chunks} chunks" for d in detail.documents]
    return "\n\n".join(out[:3]) + ("\n\n" + "\n".join(out[3:]) if out[3:] else "")


__all__ = [
    "IngestView",
    "MemoryHost",
    "MemoryView",
    "MessageHit",
    "MessageHitsView",
    "ProjectsView",
    "View",
    "hit_line",
    "memory_details",
    "memory_line",
    "project_details",
    "project_line",
    "scope_name",
    "shorten",
    "when",
]

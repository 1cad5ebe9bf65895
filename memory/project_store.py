"""Projects: names, descriptions, summaries, and what each one holds.

A project groups conversations, memories and documents; there is always an
active one (the session's ``project_id``; ``default`` to start). This module
adds the rules (valid and unique names, the default project stays) and the
summaries on top of the two stores; the SQL stays in
:class:`~memory.conversation_store.ConversationStore` and
:class:`~memory.memory_store.MemoryStore`.

Summaries are written by the local model from the project's latest messages
(and its previous summary), through any engine with ``stream(system, history,
should_stop=...)`` (:class:`tars_assistant.llm.LLMEngine`). That blocks: call
:meth:`ProjectStore.summarize` from a thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from memory.conversation_store import ConversationStore
from memory.memory_store import DocumentRecord, MemoryStore
from memory.migrations import DEFAULT_PROJECT_NAME
from memory.records import Conversation, Message, Project

NAME_MAX = 60
SUMMARY_SOURCE_CHARS = 6000  # the latest messages the model reads (~1.5k tokens)
SUMMARY_SYSTEM = (
    "You summarise a user's project from their notes and conversations with an assistant. "
    "Write two to four plain sentences: what the project is about, what was decided, and "
    "what is still open. No preamble, no lists."
)

Summarizer = Callable[[str, str], str]  # (system prompt, material) -> summary text


class ProjectError(ValueError):
    """A project operation that cannot be done; the message is for people."""


class StreamingEngine(Protocol):
    def stream(
        self,
        system: str,
        history: Sequence[Any],
        *,
        should_stop: Callable[[], bool] = ...,
    ) -> Iterator[str]: ...


def llm_summarizer(
    engine: StreamingEngine,
    max_tokens: int = 160,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> Summarizer:
    """A summarizer on the local model, stopped after about ``max_tokens`` pieces, or
    when ``should_stop`` says so (a chat reply needs the model: see
    :mod:`tars_assistant.model_gate`)."""

    def summarize(system: str, material: str) -> str:
        pieces: list[str] = []
        history = [{"role": "user", "content": material}]
        for piece in engine.stream(
            system, history, should_stop=lambda: len(pieces) >= max_tokens or should_stop()
        ):
            pieces.append(piece)
        return "".join(pieces).strip()

    return summarize


@dataclass(frozen=True)
class ProjectInfo:
    project: Project
    conversations: int
    messages: int
    memories: int
    pinned: int
    documents: int
    last_activity: float

    @property
    def id(self) -> int:
        return self.project.id

    @property
    def name(self) -> str:
        return self.project.name


@dataclass(frozen=True)
class ProjectDetail:
    info: ProjectInfo
    conversations: list[Conversation]
    documents: list[DocumentRecord]


class ProjectStore:
    def __init__(self, conversations: ConversationStore, memories: MemoryStore) -> None:
        self.conversations = conversations
        self.memories = memories

    # -- reading -----------------------------------------------------------------

    def overview(self, *, include_archived: bool = False) -> list[ProjectInfo]:
        """Projects with their counts, most recent activity first."""
        out = []
        for act in self.conversations.project_activity(include_archived=include_archived):
            counts = self.memories.counts(act.project.id)
            out.append(
                ProjectInfo(
                    act.project,
                    act.conversations,
                    act.messages,
                    counts.memories,
                    counts.pinned,
                    counts.documents,
                    act.last_activity,
                )
            )
        return out

    def info(self, project_id: int) -> ProjectInfo:
        for info in self.overview(include_archived=True):
            if info.id == project_id:
                return info
        raise ProjectError(f"no project {project_id}")

    def detail(self, project_id: int, *, conversations: int = 20) -> ProjectDetail:
        return ProjectDetail(
            self.info(project_id),
            self.conversations.list_conversations(limit=conversations, project_id=project_id),
            self.memories.list_documents(project_id),
        )

    def get(self, project_id: int) -> Project:
        project = self.conversations.get_project(project_id)
        if project is None:
            raise ProjectError(f"no project {project_id}")
        return project

    def find(self, name: str) -> Project:
        """A project by name (any case), or by ``#id``."""
        name = name.strip()
        if name.startswith("#") and name[1:].isdigit():
            return self.get(int(name[1:]))
        project = self.conversations.project_by_name(name)
        if project is None:
            known = ", ".join(p.name for p in self.conversations.list_projects())
            raise ProjectError(f"no project named {name!r} (projects: {known})")
        return project

    def summary_for_context(self, project_id: int) -> tuple[str, str] | None:
        """(name, summary) for the model's context; None when there is no summary."""
        project = self.conversations.get_project(project_id)
        if project is None or not project.summary.strip():
            return None
        return project.name, project.summary

    # -- changing ------------------------------------------------------------------

    def create(self, name: str, description: str = "") -> Project:
        name = self._valid_name(name)
        return self.conversations.create_project(name, description.strip())

    def rename(self, project_id: int, name: str) -> Project:
        project = self.get(project_id)
        new = self._valid_name(name, allow=project.id)
        if project.name == DEFAULT_PROJECT_NAME and new != project.name:
            raise ProjectError("the default project keeps its name")
        try:
            self.conversations.rename_project(project_id, new)
        except ValueError as exc:
            raise ProjectError(str(exc)) from None
        return self.get(project_id)

    def archive(self, project_id: int, archived: bool = True) -> Project:
        """Archived projects leave the list (their memories stay searchable with "all")."""
        project = self.get(project_id)
        if archived and project.name == DEFAULT_PROJECT_NAME:
            raise ProjectError("the default project cannot be archived")
        self.conversations.set_project_archived(project_id, archived)
        return self.get(project_id)

    def set_model(self, project_id: int, model: str | None) -> Project:
        self.get(project_id)
        self.conversations.set_project_model(project_id, model)
        return self.get(project_id)

    def describe(self, project_id: int, description: str) -> Project:
        self.get(project_id)
        self.conversations.set_project_description(project_id, description)
        return self.get(project_id)

    def _valid_name(self, name: str, allow: int | None = None) -> str:
        name = re.sub(r"\s+", " ", name).strip()
        if not name:
            raise ProjectError("a project needs a name")
        if len(name) > NAME_MAX:
            raise ProjectError(f"a project name has at most {NAME_MAX} characters")
        if name.startswith("#"):
            raise ProjectError("a project name cannot start with #")
        clash = self.conversations.project_by_name(name)
        if clash is not None and clash.id != allow:
            raise ProjectError(f"a project named {clash.name!r} exists already")
        return name

    # -- summaries -------------------------------------------------------------------

    def needing_summary(self) -> list[Project]:
        """Projects with messages newer than their summary."""
        return self.conversations.projects_needing_summary()

    def summary_material(self, project_id: int, max_chars: int = SUMMARY_SOURCE_CHARS) -> str:
        """What the model reads to summarise a project: its description, its previous
        summary, and its latest messages (oldest first, cut to ``max_chars``)."""
        project = self.get(project_id)
        head = [f"Project: {project.name}"]
        if project.description:
            head.append(f"Description: {project.description}")
        if project.summary:
            head.append(f"Summary so far: {project.summary}")
        lines: list[str] = []
        used = 0
        for message in reversed(self.conversations.project_messages(project_id)):
            line = _excerpt(message)
            if used + len(line) > max_chars:
                break
            lines.append(line)
            used += len(line) + 1
        lines.reverse()
        body = "\n".join(lines) if lines else "(no conversations yet)"
        return "\n".join(head) + "\n\nLatest messages:\n" + body + "\n\nSummarise the project."

    def summarize(self, project_id: int, summarizer: Summarizer) -> str:
        """Write and store a new summary (with today's date). Blocking."""
        summary = summarizer(SUMMARY_SYSTEM, self.summary_material(project_id)).strip()
        if not summary:
            raise ProjectError("the model wrote an empty summary; the old one is kept")
        self.conversations.set_project_summary(project_id, summary)
        return summary


def _excerpt(message: Message, max_chars: int = 600) -> str:
    who = "User" if message.role == "user" else "TARS"
    text = re.sub(r"\s+", " ", message.text).strip()
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return f"{who}: {text}"


__all__ = [
    "NAME_MAX",
    "SUMMARY_SYSTEM",
    "ProjectDetail",
    "ProjectError",
    "ProjectInfo",
    "ProjectStore",
    "StreamingEngine",
    "Summarizer",
    "llm_summarizer",
]

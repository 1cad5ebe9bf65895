"""Slash commands for long-term memory: /remember, /memory, /projects, /project, /ingest,
/search, and /history QUERY. Importing this module registers them in
:data:`tars_tui.commands.REGISTRY`.

The hosts (the chat screen, plain mode) offer a bit more than a plain
:class:`~tars_tui.commands.CommandHost`; see :class:`MemoryHost`. A host without
``memory`` (memory off) answers these commands with an explanation. Views
(``show_view``) are the TUI's screens; a host that shows none (plain mode)
gets the same information as text. No Textual here: plain mode imports it.

``/history`` wraps the registry's own: no argument and a number keep their old
meaning (list / reopen the N-th conversation); anything else is a search.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shlex
from pathlib import Path

from memory.documents import Progress
from memory.memory_store import MemoryRecord
from memory.project_store import ProjectError, ProjectInfo
from memory.retrieval import SEARCH_MODES, SearchMode
from memory.semantic import MEMORY_KINDS
from memory.service import Memory
from tars_assistant import profiles
from tars_assistant.llm import ModelError
from tars_assistant.model_gate import GateClosed, yielding_summarizer
from tars_tui.commands import registry as commands
from tars_tui.commands.registry import UsageError, command
from tars_tui.host import CommandHost
from tars_tui.memory_views import (
    IngestView,
    MemoryHost,
    MemoryView,
    MessageHit,
    MessageHitsView,
    ProjectsView,
    View,
    hit_line,
    memory_details,
    memory_line,
    project_details,
    project_line,
    scope_name,
    shorten,
    when,
)

LIST_SIZE = 20
SEARCH_SIZE = 8
HISTORY_HITS = 15


def _memory(host: CommandHost) -> tuple[MemoryHost, Memory]:
    memory = getattr(host, "memory", None)
    if memory is None:
        raise UsageError("long-term memory is off ([memory] enabled = false, or no database)")
    if not isinstance(host, MemoryHost):
        raise UsageError("this front end cannot run memory commands (no run_async/show_view)")
    return host, memory


# -- argument helpers ------------------------------------------------------------------


def _flags(args: str, known: tuple[str, ...]) -> tuple[set[str], str]:
    """Leading ``--flag``s (from ``known``) and the free text after them."""
    found: set[str] = set()
    rest = args.strip()
    while rest.startswith("--"):
        word, _, tail = rest.partition(" ")
        name = word[2:].lower()
        if name not in known:
            raise UsageError(f"unknown option {word}; known: {', '.join('--' + k for k in known)}")
        found.add(name)
        rest = tail.strip()
    return found, rest


def _words(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _project_by_name(memory: Memory, name: str) -> ProjectInfo:
    try:
        project = memory.projects.find(name)
    except ProjectError as exc:
        raise UsageError(str(exc)) from None
    return memory.projects.info(project.id)


# -- /remember ------------------------------------------------------------------------


@command(
    "remember",
    "/remember [--global | --project] TEXT",
    "Remember a fact, for the active project or (--global) for every project.",
)
def _remember(host: CommandHost, args: str) -> None:
    mhost, memory = _memory(host)
    flags, text = _flags(args, ("global", "project"))
    if not text:
        raise UsageError("what should I remember?")
    if flags == {"global", "project"}:
        raise UsageError("choose --global or --project, not both")
    scope = memory.config.remember_scope
    if flags:
        scope = "global" if "global" in flags else "project"
    project_id = None if scope == "global" else mhost.session.project_id
    conv = mhost.session.conversation
    record = memory.semantic.remember(
        text, project_id=project_id, conversation_id=conv.id if conv else None
    )
    mhost.say(
        f"Remembered `{memory.store.short_id(record.id)}` for "
        f"{scope_name(memory, project_id)}. (/memory forget to undo)"
    )


# -- /memory --------------------------------------------------------------------------

MEMORY_USAGE = (
    "/memory [all | search QUERY | show ID | forget ID... | restore ID... | pin ID | unpin ID "
    "| outbox]"
)


@command(
    "memory",
    MEMORY_USAGE,
    "Browse, search (--dense, --keyword, --hybrid, --all), forget and pin what TARS "
    "remembers (no argument: the browser).",
)
def _memory_command(host: CommandHost, args: str) -> None:
    mhost, memory = _memory(host)
    verb, _, rest = args.strip().partition(" ")
    verb, rest = verb.lower(), rest.strip()
    project_id = mhost.session.project_id
    if verb in ("", "all"):
        everything = verb == "all"
        if mhost.show_view(MemoryView(project_id, all_projects=everything)):
            return
        records = memory.store.list_memories(project_id, all_projects=everything, limit=LIST_SIZE)
        scope = "all projects" if everything else f"{scope_name(memory, project_id)} and global"
        if not records:
            mhost.say(f"No memories yet ({scope}). /remember TEXT stores one.")
            return
        lines = [f"**Memories** ({scope}, newest first):", ""]
        lines += [f"- {memory_line(memory, r)}" for r in records]
        mhost.say("\n".join(lines), "markdown")
    elif verb == "search":
        flags, query = _flags(rest, (*SEARCH_MODES, "all"))
        modes = [m for m in SEARCH_MODES if m in flags]
        if len(modes) > 1 or not query:
            raise UsageError("give at most one of --dense, --keyword, --hybrid, and a query")
        mode: SearchMode = modes[0] if modes else memory.config.recall_mode  # type: ignore[assignment]
        mhost.run_async(
            _search_memories(mhost, memory, query, mode, "all" in flags), name="memory search"
        )
    elif verb == "show":
        record = _record(memory, rest)
        mhost.say(memory_details(memory, record), "markdown")
    elif verb in ("forget", "restore"):
        ids = [memory.store.full_id(i) for i in rest.split()]
        if not ids:
            raise UsageError(f"which memory? /memory {verb} ID (ids are in /memory)")
        for memory_id in ids:
            _record(memory, memory_id)
        if verb == "forget":
            done = memory.semantic.forget(ids)
            mhost.say(f"Forgot {len(done)} (/memory restore {' '.join(rest.split())} undoes it).")
        else:
            done = memory.semantic.restore(ids)
            mhost.say(f"Restored {len(done)}.")
    elif verb in ("pin", "unpin"):
        record = _record(memory, rest)
        memory.semantic.pin(record.id, verb == "pin")
        state = "always in context now" if verb == "pin" else "no longer pinned"
        mhost.say(f"`{memory.store.short_id(record.id)}` is {state}.")
    elif verb == "outbox":
        if rest == "retry":
            mhost.say(f"{memory.store.retry_failed()} refused entries put back in line.")
        elif rest:
            raise UsageError("/memory outbox [retry]")
        mhost.say(_outbox_report(memory))
        memory.semantic.kick(force=True)
    else:
        raise UsageError(f"unknown /memory action {verb!r}")


def _record(memory: Memory, shown: str) -> MemoryRecord:
    if not shown.strip() or len(shown.split()) != 1:
        raise UsageError("give one memory id (see /memory)")
    record = memory.store.get_memory(memory.store.full_id(shown))
    if record is None:
        raise UsageError(f"no memory {shown.strip()!r}")
    return record


def _outbox_report(memory: Memory) -> str:
    pending, failed = memory.store.pending_count(), memory.store.failed_count()
    text = f"Outbox: {pending} waiting for the node, {failed} refused by it."
    last = memory.semantic.last_flush
    if last is not None and last.error:
        text += f" Last delivery stopped: {last.error}"
    return text


async def _search_memories(
    host: MemoryHost, memory: Memory, query: str, mode: SearchMode, everything: bool
) -> None:
    outcome = await memory.semantic.search(
        query,
        project_id=host.session.project_id,
        scope="all" if everything else "project",
        mode=mode,
        k=SEARCH_SIZE,
        kinds=MEMORY_KINDS,
    )
    if outcome.error:
        host.say(f"Memory search failed: {outcome.error}", "error")
        return
    if not outcome.hits:
        host.say(f"No memory matches “{query}” ({mode}).")
        return
    lines = [f"**Memories for** “{query}” ({mode}, {outcome.latency_ms:.0f} ms):", ""]
    lines += [hit_line(memory, h, i) for i, h in enumerate(outcome.hits, 1)]
    host.say("\n".join(lines), "markdown")


# -- /projects and /project -------------------------------------------------------------

PROJECTS_USAGE = (
    "/projects [new NAME [DESCRIPTION] | rename [NAME] NEW | archive [NAME] | unarchive NAME "
    "| describe TEXT | model [PROFILE | default] | show [NAME] | summarize [NAME | all] "
    "| archived]"
)


@command(
    "projects",
    PROJECTS_USAGE,
    "Your projects: list and manage them (no argument: the projects screen).",
)
def _projects(host: CommandHost, args: str) -> None:
    mhost, memory = _memory(host)
    verb, _, rest = args.strip().partition(" ")
    verb, rest = verb.lower(), rest.strip()
    projects = memory.projects
    active = mhost.session.project_id
    try:
        if verb in ("", "archived"):
            if not verb and mhost.show_view(ProjectsView()):
                return
            infos = projects.overview(include_archived=verb == "archived")
            lines = ["**Projects** (/project NAME switches):", ""]
            lines += [f"- {project_line(i, active)}" for i in infos]
            mhost.say("\n".join(lines), "markdown")
        elif verb == "new":
            words = _words(rest)
            if not words:
                raise UsageError("/projects new NAME [DESCRIPTION]")
            project = projects.create(words[0], " ".join(words[1:]))
            mhost.say(
                f"Created project “{project.name}”. /project {_quoted(project.name)} switches."
            )
        elif verb == "rename":
            words = _words(rest)
            if len(words) == 1:
                target, new = projects.get(active), words[0]
            elif len(words) == 2:
                target, new = projects.find(words[0]), words[1]
            else:
                raise UsageError('/projects rename NEW, or /projects rename "OLD" "NEW"')
            renamed = projects.rename(target.id, new)
            mhost.say(f"Renamed “{target.name}” to “{renamed.name}”.")
            mhost.reload_view()
        elif verb in ("archive", "unarchive"):
            target = projects.find(rest) if rest else projects.get(active)
            projects.archive(target.id, verb == "archive")
            mhost.say(f"Project “{target.name}” {verb}d.")
            if verb == "archive" and target.id == active:
                default = memory.conversations.default_project()
                switch_project(mhost, memory, default.id)
        elif verb == "describe":
            projects.describe(active, rest)
            mhost.say("Description saved.")
        elif verb == "model":
            _project_model(mhost, rest)
        elif verb == "show":
            target = projects.find(rest) if rest else projects.get(active)
            mhost.say(project_details(memory, target.id), "markdown")
        elif verb in ("summarize", "summarise"):
            if rest == "all":
                ids = [p.id for p in projects.needing_summary()]
                if not ids:
                    mhost.say("Every project's summary is up to date.")
                    return
            else:
                ids = [(projects.find(rest) if rest else projects.get(active)).id]
            mhost.say(f"Summarising {len(ids)} project(s) with the local model…")
            mhost.run_async(_summarize(mhost, memory, ids), name="summaries")
        else:
            raise UsageError(f"unknown /projects action {verb!r}")
    except ProjectError as exc:
        raise UsageError(str(exc)) from None


def _project_model(host: MemoryHost, name: str) -> None:
    """``/projects model [NAME | default]``: the active project's own model profile."""
    session = host.session
    project = session.store.get_project(session.project_id)
    assert project is not None
    if not name:
        own = project.model or "none: [llm] model's"
        host.say(f"Project “{project.name}” model: {own}.")
        return
    chosen = None if name == "default" else name
    if chosen is not None:
        try:
            profiles.resolve(session.config, chosen)
        except ModelError as exc:
            raise UsageError(str(exc)) from None
    session.store.set_project_model(project.id, chosen)
    host.say(f"Project “{project.name}” now uses {chosen or 'the default model'}.")
    wanted = session.wanted_model()
    if wanted is not None:
        host.switch_model(wanted)


def _quoted(name: str) -> str:
    return name if " " not in name else f'"{name}"'


async def _summarize(host: MemoryHost, memory: Memory, project_ids: list[int]) -> None:
    # Behind chat replies: a prompt sent meanwhile stops the summary, which is written
    # again once the reply is done (tars_assistant/model_gate.py).
    session = host.session
    tokens = memory.config.summary_tokens
    summarizer = yielding_summarizer(session.engine, session.model_gate, tokens)
    for project_id in project_ids:
        name = scope_name(memory, project_id)
        try:
            summary = await asyncio.to_thread(memory.projects.summarize, project_id, summarizer)
        except GateClosed:
            return  # the app is exiting
        except (ProjectError, ModelError) as exc:
            host.say(f"{name}: {exc}", "error")
            continue
        host.say(f"**{name}** — {summary}", "markdown")


@command("project", "/project [NAME]", "Switch to another project (no argument: which is active).")
def _project(host: CommandHost, args: str) -> None:
    mhost, memory = _memory(host)
    name = args.strip().strip('"')
    if not name:
        info = memory.projects.info(mhost.session.project_id)
        mhost.say(project_line(info, info.id).replace("**", "") + " (/projects lists them all)")
        return
    info = _project_by_name(memory, name)
    if info.project.archived:
        raise UsageError(f"“{info.name}” is archived: /projects unarchive {_quoted(info.name)}")
    switch_project(mhost, memory, info.id)


def switch_project(host: MemoryHost, memory: Memory, project_id: int) -> None:
    host.session.switch_project(project_id)
    host.reload_view()
    wanted = host.session.wanted_model()
    if wanted is not None:  # the project's own model (or back to the default)
        host.switch_model(wanted)
    info = memory.projects.info(project_id)
    host.say(
        f"Project “{info.name}”: {info.conversations} conversations, {info.memories} memories, "
        f"{info.documents} documents."
    )


# -- /ingest and /search -------------------------------------------------------------------


@command(
    "ingest",
    "/ingest [--global] PATH",
    "Read a file or folder (text, Markdown, code, PDF) into the active project's documents.",
)
def _ingest(host: CommandHost, args: str) -> None:
    mhost, memory = _memory(host)
    flags, raw = _flags(args, ("global",))
    if not raw:
        raise UsageError("which file or folder?")
    path = Path(raw.strip().strip("'\"")).expanduser()
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    project_id = None if "global" in flags else mhost.session.project_id
    if mhost.show_view(IngestView(path, project_id)):
        return
    mhost.run_async(_ingest_text(mhost, memory, path, project_id), name="ingest")


async def _ingest_text(host: MemoryHost, memory: Memory, path: Path, pid: int | None) -> None:
    def progress(p: Progress) -> None:
        if p.outcome != "unchanged":
            host.say(f"[{p.done}/{p.total}] {p.outcome}: {p.path}")

    report = await memory.documents.ingest(path, project_id=pid, on_progress=progress)
    host.say(f"Ingested into {scope_name(memory, pid)}: {report.summary()}")
    if report.failed:
        lines = ["**Not ingested:**", ""] + [f"- `{p.path}`: {p.reason}" for p in report.failed]
        host.say("\n".join(lines), "markdown")


@command(
    "search",
    "/search [--all] QUERY",
    "Search documents and memories (active project + global, or --all) by meaning and words.",
)
def _search(host: CommandHost, args: str) -> None:
    mhost, memory = _memory(host)
    flags, query = _flags(args, ("all",))
    if not query:
        raise UsageError("search for what?")
    mhost.run_async(_search_all(mhost, memory, query, "all" in flags), name="search")


async def _search_all(host: MemoryHost, memory: Memory, query: str, everything: bool) -> None:
    outcome = await memory.semantic.search(
        query,
        project_id=host.session.project_id,
        scope="all" if everything else "project",
        k=SEARCH_SIZE,
    )
    if outcome.error:
        host.say(f"Search failed: {outcome.error}", "error")
        return
    if not outcome.hits:
        host.say(f"Nothing found for “{query}”.")
        return
    lines = [f"**Results for** “{query}” ({outcome.latency_ms:.0f} ms):", ""]
    for rank, hit in enumerate(outcome.hits, 1):
        source = hit.source if hit.is_document else f"memory · {scope_name(memory, hit.project_id)}"
        if hit.is_document and hit.metadata.get("path"):
            source += f" — `{hit.metadata['path']}`"
        lines += [f"{rank}. **{source}**", f"   > {shorten(hit.text, 300)}", ""]
    host.say("\n".join(lines), "markdown")


# -- /history QUERY (wraps the registry's /history) -----------------------------------------

_plain_history = commands.REGISTRY["history"]


@command(
    "history",
    "/history [N | QUERY | @MESSAGE]",
    "List past conversations, reopen the N-th, or find messages by words and by meaning.",
)
def _history(host: CommandHost, args: str) -> None:
    text = args.strip()
    if not text or text.isdigit():
        _plain_history.handler(host, text)
        return
    mhost, memory = _memory(host)
    if re.fullmatch(r"@\d+", text):
        open_at_message(mhost, memory, int(text[1:]))
        return
    mhost.run_async(_find_messages(mhost, memory, text), name="history search")


def open_at_message(host: MemoryHost, memory: Memory, message_id: int) -> None:
    message = memory.conversations.get_message(message_id)
    if message is None:
        raise UsageError(f"no message @{message_id}")
    conv = host.session.open(message.conversation_id)
    host.focus_message(message_id)
    host.reload_view()
    host.say(
        f"Opened “{conv.title or 'untitled'}” at @{message_id} ({when(message.created_at)}): "
        f"{shorten(message.text, 160)}"
    )


async def find_messages(memory: Memory, query: str) -> tuple[list[MessageHit], str | None]:
    """Messages matching ``query``: keyword (FTS5, local) and meaning (the node's exchange
    memories), fused by rank. The error is the node's, if it could not be asked."""
    keyword = memory.conversations.search_messages(query, limit=HISTORY_HITS, highlight=("", ""))
    outcome = await memory.semantic.search(
        query, scope="all", kinds=("exchange",), k=HISTORY_HITS, mode="dense"
    )
    scores: dict[int, float] = {}
    found: dict[int, MessageHit] = {}
    for rank, k_hit in enumerate(keyword):
        scores[k_hit.message_id] = 1 / (10 + rank)
        found[k_hit.message_id] = MessageHit(
            k_hit.message_id,
            k_hit.conversation_id,
            k_hit.conversation_title,
            k_hit.snippet,
            k_hit.created_at,
            "keyword",
        )
    for rank, hit in enumerate(outcome.hits):
        reply_id = hit.metadata.get("message_id")
        conv_id = hit.metadata.get("conversation_id")
        if not isinstance(reply_id, int) or not isinstance(conv_id, int):
            continue
        conv = memory.conversations.get_conversation(conv_id)
        if conv is None:
            continue
        # An exchange is a user message and its reply: a keyword hit on either is the
        # same find; otherwise point at the user's message that started it.
        asked = memory.conversations.get_message(reply_id - 1)
        turn = {reply_id}
        if asked is not None and asked.conversation_id == conv_id and asked.role == "user":
            turn.add(asked.id)
        same = [m for m in found if m in turn]
        message_id = same[0] if same else min(turn)
        scores[message_id] = scores.get(message_id, 0.0) + 1 / (10 + rank)
        if same:
            found[message_id] = dataclasses.replace(found[message_id], found_by="both")
        else:
            text = asked.text if asked is not None and asked.id in turn else hit.text
            found[message_id] = MessageHit(
                message_id, conv_id, conv.title, shorten(text, 160), hit.created_at, "meaning"
            )
    ordered = sorted(found, key=lambda m: -scores[m])[:HISTORY_HITS]
    return [found[m] for m in ordered], outcome.error


async def _find_messages(host: MemoryHost, memory: Memory, query: str) -> None:
    hits, error = await find_messages(memory, query)
    if error:
        host.say(f"Searching by meaning failed ({error}); keyword matches only.", "error")
    if not hits:
        host.say(f"No message matches “{query}”.")
        return
    if host.show_view(MessageHitsView(query, tuple(hits))):
        return
    lines = [f"**Messages for** “{query}” (/history @ID opens one):", ""]
    lines += [
        f"- `@{h.message_id}` {when(h.created_at)} · {h.title or 'untitled'} · {h.found_by} — "
        f"{shorten(h.snippet, 120)}"
        for h in hits
    ]
    host.say("\n".join(lines), "markdown")


__all__ = [
    "IngestView",
    "MemoryHost",
    "MemoryView",
    "MessageHit",
    "MessageHitsView",
    "ProjectsView",
    "View",
    "find_messages",
    "hit_line",
    "memory_details",
    "memory_line",
    "open_at_message",
    "project_details",
    "project_line",
    "scope_name",
    "shorten",
    "switch_project",
    "when",
]

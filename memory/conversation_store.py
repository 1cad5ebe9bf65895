"""Conversation memory in SQLite: projects, conversations, messages and reply metrics.

:class:`ConversationStore` owns the one connection; nothing else writes SQL. The
schema and its ordered upgrade steps live in :mod:`memory.migrations`.

Durability: WAL with ``synchronous=FULL`` and a commit per call, so every call that
returned has been written (it survives kill -9 and power loss). A reply is a row
created as ``streaming`` by :meth:`begin_reply`, checkpointed about once a second,
and closed by :meth:`finish_reply`. A reply whose writer died is turned into
``cancelled`` with its last checkpointed text and a note (``Message.interrupted``)
when a store is opened (:meth:`recover_interrupted`): a crash loses at most the
text since the last checkpoint. Rows of a writer that is still alive (another ``tars`` process, or
another open store in this process) are left alone.

Threads: the connection is opened with ``check_same_thread=False`` and every public
method holds one re-entrant lock for its whole statement or transaction, and returns
plain frozen dataclasses (no cursor escapes). So one store can be shared by the
event loop and thread workers. A write waits for an fsync (a few milliseconds on an
SSD); streaming checkpoints belong in the worker that streams.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psutil

from memory import migrations
from memory.database import Database
from memory.migrations import DEFAULT_PROJECT_NAME, SchemaError
from memory.records import (
    ROLES,
    STATUSES,
    Conversation,
    Message,
    Project,
    ProjectActivity,
    ReplyMetrics,
    Role,
    SearchHit,
    Status,
    StoreStats,
)

log = logging.getLogger(__name__)
DB_FILENAME = "tars.db"
CRASH_NOTE = "TARS stopped while this reply was streaming"
TITLE_MAX = 60


class HasDataDir(Protocol):
    @property
    def data_dir(self) -> Path: ...


def default_db_path(config: HasDataDir) -> Path:
    """Where the conversations live: ``config.data_dir / "tars.db"``."""
    return config.data_dir / DB_FILENAME


def title_from_text(text: str, max_len: int = TITLE_MAX) -> str:
    """A conversation title from a user's message: its first line of words, shortened."""
    for line in text.splitlines():
        words = re.sub(r"^[\s#>*\-`]+", "", line).split()
        if words:
            title = " ".join(words)
            if len(title) <= max_len:
                return title
            cut = title[: max_len - 1]
            if " " in cut[max_len // 2 :]:
                cut = cut[: cut.rindex(" ")]
            return cut.rstrip(" ,.;:") + "…"
    return ""


# -- writer liveness, for recover_interrupted ---------------------------------

_HOST = socket.gethostname()
_PROCESS_START = psutil.Process().create_time()
_open_tokens: set[str] = set()
_token_counter = itertools.count(1)
_tokens_lock = threading.Lock()


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    try:
        host, pid_text, start_text, token = owner.split("|")
        pid, start = int(pid_text), float(start_text)
    except ValueError:
        return False
    if host != _HOST:
        return False  # not checkable from here; a database is not shared between machines
    if pid == os.getpid() and abs(start - _PROCESS_START) < 0.05:
        with _tokens_lock:
            return token in _open_tokens
    try:
        return abs(float(psutil.Process(pid).create_time()) - start) < 0.05
    except (psutil.Error, OSError):
        return False


class ConversationStore(Database):
    """The conversation database. Open with a path; close (or use ``with``) when done."""

    def __init__(self, path: Path) -> None:
        with _tokens_lock:
            token = f"{next(_token_counter)}.{id(self):x}"
            _open_tokens.add(token)
        self._owner = f"{_HOST}|{os.getpid()}|{_PROCESS_START:.3f}|{token}"
        self._token = token
        try:
            super().__init__(path)
        except BaseException:
            self._forget_token()
            raise
        # How many interrupted replies opening this store turned into 'cancelled'.
        self.recovered_on_open = self.recover_interrupted()

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            super().close()
            self._forget_token()

    def _forget_token(self) -> None:
        with _tokens_lock:
            _open_tokens.discard(self._token)

    def schema_version(self) -> int:
        with self._lock:
            return migrations.schema_version(self._conn)

    def pragmas(self) -> dict[str, int | str]:
        """The connection's settings, for tests and ``tars doctor``."""
        names = ("journal_mode", "synchronous", "foreign_keys", "user_version", "busy_timeout")
        with self._lock:
            return {n: self._conn.execute(f"PRAGMA {n}").fetchone()[0] for n in names}

    # -- projects -----------------------------------------------------------------

    def default_project(self) -> Project:
        rows = self._rows("SELECT * FROM projects WHERE name = ?", (DEFAULT_PROJECT_NAME,))
        if rows:
            return _project(rows[0])
        with self._write() as conn:  # renamed away by hand: recreate it
            conn.execute(
                "INSERT OR IGNORE INTO projects (name, created_at) VALUES (?, ?)",
                (DEFAULT_PROJECT_NAME, time.time()),
            )
        return self.default_project()

    def create_project(self, name: str, description: str = "") -> Project:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO projects (name, description, created_at) VALUES (?, ?, ?)",
                (name, description, time.time()),
            )
        project = self.get_project(_lastrowid(cursor))
        assert project is not None
        return project

    def get_project(self, project_id: int) -> Project | None:
        rows = self._rows("SELECT * FROM projects WHERE id = ?", (project_id,))
        return _project(rows[0]) if rows else None

    def list_projects(self, *, include_archived: bool = False) -> list[Project]:
        where = "" if include_archived else "WHERE archived = 0"
        return [_project(r) for r in self._rows(f"SELECT * FROM projects {where} ORDER BY id")]

    def project_by_name(self, name: str) -> Project | None:
        """The project called ``name`` (case-insensitive), archived or not."""
        rows = self._rows(
            "SELECT * FROM projects WHERE name = ? COLLATE NOCASE ORDER BY id LIMIT 1",
            (name.strip(),),
        )
        return _project(rows[0]) if rows else None

    def rename_project(self, project_id: int, name: str) -> None:
        """Raises ValueError when another project has that name, LookupError when none."""
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "UPDATE projects SET name = ? WHERE id = ?", (name.strip(), project_id)
                )
                _require(cursor, "project", project_id)
        except sqlite3.IntegrityError:
            raise ValueError(f"a project named {name.strip()!r} exists already") from None

    def set_project_archived(self, project_id: int, archived: bool = True) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE projects SET archived = ? WHERE id = ?", (int(archived), project_id)
            )
            _require(cursor, "project", project_id)

    def set_project_description(self, project_id: int, description: str) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE projects SET description = ? WHERE id = ?",
                (description.strip(), project_id),
            )
            _require(cursor, "project", project_id)

    def set_project_model(self, project_id: int, model: str | None) -> None:
        """The project's own model profile (None: the configured default)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE projects SET model = ? WHERE id = ?", (model or None, project_id)
            )
            _require(cursor, "project", project_id)

    def set_project_summary(self, project_id: int, summary: str, at: float | None = None) -> None:
        """Store a project's summary with its date (default: now)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE projects SET summary = ?, summary_at = ? WHERE id = ?",
                (summary.strip(), time.time() if at is None else at, project_id),
            )
            _require(cursor, "project", project_id)

    def project_activity(self, *, include_archived: bool = False) -> list[ProjectActivity]:
        """Every project with its conversation and message counts, latest activity first."""
        where = "" if include_archived else "WHERE p.archived = 0"
        rows = self._rows(
            "SELECT p.id, count(DISTINCT c.id) AS conversations, count(m.id) AS messages,"
            " coalesce(max(c.updated_at), p.created_at) AS last_activity"
            " FROM projects p LEFT JOIN conversations c ON c.project_id = p.id"
            f" LEFT JOIN messages m ON m.conversation_id = c.id {where}"
            " GROUP BY p.id ORDER BY last_activity DESC, p.id"
        )
        projects = {p.id: p for p in self.list_projects(include_archived=include_archived)}
        return [
            ProjectActivity(
                projects[r["id"]], r["conversations"], r["messages"], r["last_activity"]
            )
            for r in rows
            if r["id"] in projects
        ]

    def projects_needing_summary(self) -> list[Project]:
        """Unarchived projects with messages newer than their summary."""
        rows = self._rows(
            "SELECT p.* FROM projects p WHERE p.archived = 0 AND EXISTS ("
            " SELECT 1 FROM conversations c JOIN messages m ON m.conversation_id = c.id"
            " WHERE c.project_id = p.id AND m.status = 'complete'"
            " AND m.completed_at > coalesce(p.summary_at, 0)) ORDER BY p.id"
        )
        return [_project(r) for r in rows]

    def project_messages(self, project_id: int, limit: int = 200) -> list[Message]:
        """The project's latest complete messages (all its conversations), oldest first."""
        rows = self._rows(
            "SELECT * FROM (SELECT m.* FROM messages m JOIN conversations c"
            " ON c.id = m.conversation_id WHERE c.project_id = ? AND m.status = 'complete'"
            " AND m.role IN ('user', 'assistant') ORDER BY m.id DESC LIMIT ?) ORDER BY id",
            (project_id, limit),
        )
        return [_message(r) for r in rows]

    # -- conversations ------------------------------------------------------------

    def create_conversation(
        self, project_id: int | None = None, model: str | None = None, title: str = ""
    ) -> int:
        with self._write() as conn:
            return self._insert_conversation(conn, project_id, model, title)

    def _insert_conversation(
        self, conn: sqlite3.Connection, project_id: int | None, model: str | None, title: str
    ) -> int:
        project = self.default_project().id if project_id is None else project_id
        now = time.time()
        try:
            cursor = conn.execute(
                "INSERT INTO conversations (project_id, title, created_at, updated_at, model)"
                " VALUES (?, ?, ?, ?, ?)",
                (project, title.strip(), now, now, model),
            )
        except sqlite3.IntegrityError:
            raise LookupError(f"no project {project}") from None
        return _lastrowid(cursor)

    _CONVERSATION_SELECT = (
        "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
        " AS message_count FROM conversations c"
    )

    def get_conversation(self, conversation_id: int) -> Conversation | None:
        rows = self._rows(f"{self._CONVERSATION_SELECT} WHERE c.id = ?", (conversation_id,))
        return _conversation(rows[0]) if rows else None

    def list_conversations(
        self, limit: int = 50, project_id: int | None = None, offset: int = 0
    ) -> list[Conversation]:
        """Most recent activity first, with message counts."""
        where, params = (
            ("", ()) if project_id is None else ("WHERE c.project_id = ?", (project_id,))
        )
        rows = self._rows(
            f"{self._CONVERSATION_SELECT} {where}"
            " ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_conversation(r) for r in rows]

    def latest_conversation(self, project_id: int | None = None) -> Conversation | None:
        """The conversation to reopen on start."""
        found = self.list_conversations(limit=1, project_id=project_id)
        return found[0] if found else None

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (title.strip(), conversation_id)
            )
            _require(cursor, "conversation", conversation_id)

    def delete_conversation(self, conversation_id: int) -> bool:
        """Delete a conversation and its messages; False if there was none."""
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return cursor.rowcount > 0

    # -- messages ---------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: Role,
        text: str,
        *,
        model: str | None = None,
        status: Status = "complete",
        metrics: ReplyMetrics | None = None,
        error: str | None = None,
    ) -> int:
        """Store a finished message (committed before returning). The first user
        message of an untitled conversation becomes its title."""
        _check(role, ROLES, "role")
        _check(status, STATUSES, "status")
        if status == "streaming":
            raise ValueError("use begin_reply() for a reply that is still streaming")
        with self._write() as conn:
            return self._insert_message(
                conn, conversation_id, role, text, model, status, metrics, error
            )

    def _insert_message(
        self,
        conn: sqlite3.Connection,
        conversation_id: int,
        role: Role,
        text: str,
        model: str | None,
        status: Status = "complete",
        metrics: ReplyMetrics | None = None,
        error: str | None = None,
    ) -> int:
        now = time.time()
        self._touch(conn, conversation_id, now, model)
        cursor = conn.execute(
            "INSERT INTO messages (conversation_id, role, text, created_at, completed_at,"
            " model, status, metrics, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, role, text, now, now, model, status, _json(metrics), error),
        )
        if role == "user" and (title := title_from_text(text)):
            conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND title = ''",
                (title, conversation_id),
            )
        return _lastrowid(cursor)

    def begin_reply(self, conversation_id: int, model: str | None) -> int:
        """Create an empty assistant message with status 'streaming'; returns its id."""
        with self._write() as conn:
            return self._insert_reply(conn, conversation_id, model)

    def begin_turn(
        self,
        conversation_id: int | None,
        text: str,
        model: str | None,
        *,
        project_id: int | None = None,
    ) -> tuple[int, int, int]:
        """The user's message and the empty streaming reply, in one transaction (one
        fsync before the reply can be checkpointed, not two or three). With no
        ``conversation_id`` the conversation is created in it too, in ``project_id``.
        Returns (conversation id, message id, reply id)."""
        with self._write() as conn:
            if conversation_id is None:
                conversation_id = self._insert_conversation(conn, project_id, model, "")
            user_id = self._insert_message(conn, conversation_id, "user", text, model)
            return conversation_id, user_id, self._insert_reply(conn, conversation_id, model)

    def _insert_reply(
        self, conn: sqlite3.Connection, conversation_id: int, model: str | None
    ) -> int:
        now = time.time()
        self._touch(conn, conversation_id, now, model)
        cursor = conn.execute(
            "INSERT INTO messages (conversation_id, role, text, created_at, model, status,"
            " owner) VALUES (?, 'assistant', '', ?, ?, 'streaming', ?)",
            (conversation_id, now, model, self._owner),
        )
        return _lastrowid(cursor)

    def checkpoint_reply(self, message_id: int, partial_text: str) -> bool:
        """Save the text streamed so far (one small committed UPDATE; call it about once
        a second). False if the reply is no longer streaming."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE messages SET text = ? WHERE id = ? AND status = 'streaming'",
                (partial_text, message_id),
            )
        return cursor.rowcount > 0

    def finish_reply(
        self,
        message_id: int,
        text: str,
        status: Status = "complete",
        metrics: ReplyMetrics | None = None,
        error: str | None = None,
        model: str | None = None,
    ) -> None:
        """Close a reply as complete, cancelled or error, with its final text and metrics
        (and ``model``, the one that wrote it, when only now known: a model server's)."""
        _check(status, STATUSES, "status")
        if status == "streaming":
            raise ValueError("finish_reply() needs a final status, not 'streaming'")
        now = time.time()
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE messages SET text = ?, status = ?, metrics = ?, error = ?,"
                " completed_at = ?, owner = NULL, model = coalesce(?, model)"
                " WHERE id = ? RETURNING conversation_id",
                (text, status, _json(metrics), error, now, model, message_id),
            )
            row = cursor.fetchone()
            if row is None:
                raise LookupError(f"no message {message_id}")
            self._touch(conn, int(row[0]), now, None)

    def recover_interrupted(self) -> int:
        """Turn every 'streaming' reply whose writer is gone into 'cancelled', keeping its
        checkpointed text. Returns how many. Runs when the store opens."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, owner FROM messages WHERE status = 'streaming'"
            ).fetchall()
            orphans = [(int(mid),) for mid, owner in rows if not _owner_alive(owner)]
            conn.executemany(
                "UPDATE messages SET status = 'cancelled', owner = NULL,"
                " completed_at = coalesce(completed_at, created_at),"
                " error = coalesce(error, ?) WHERE id = ?",
                [(CRASH_NOTE, mid) for (mid,) in orphans],
            )
        if orphans:
            log.info("%s: %d interrupted replies kept as cancelled", self.path, len(orphans))
        return len(orphans)

    def get_message(self, message_id: int) -> Message | None:
        rows = self._rows("SELECT * FROM messages WHERE id = ?", (message_id,))
        return _message(rows[0]) if rows else None

    def messages(self, conversation_id: int, limit: int | None = None) -> list[Message]:
        """The conversation's messages, oldest first; with ``limit``, only the last ones."""
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM messages WHERE conversation_id = ?"
            " ORDER BY id DESC LIMIT ?) ORDER BY id",
            (conversation_id, -1 if limit is None else limit),
        )
        return [_message(r) for r in rows]

    def search_messages(
        self,
        query: str,
        limit: int = 20,
        project_id: int | None = None,
        highlight: tuple[str, str] = ("**", "**"),
    ) -> list[SearchHit]:
        """Keyword search (FTS5, stemmed) over finished messages, best match first.
        Every word of ``query`` must occur; punctuation is ignored."""
        words = re.findall(r"\w+", query)
        if not words:
            return []
        match = " ".join('"' + w.replace('"', "") + '"' for w in words)
        where, params = ("", ()) if project_id is None else ("AND c.project_id = ?", (project_id,))
        rows = self._rows(
            "SELECT m.id AS message_id, m.conversation_id, c.title AS conversation_title,"
            " c.project_id, m.role, m.created_at,"
            " snippet(messages_fts, 0, ?, ?, '…', 16) AS snippet, bm25(messages_fts) AS score"
            " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
            " JOIN conversations c ON c.id = m.conversation_id"
            f" WHERE messages_fts MATCH ? {where} ORDER BY score, m.id DESC LIMIT ?",
            (*highlight, match, *params, limit),
        )
        return [SearchHit(**_fields(r)) for r in rows]

    # -- reports ------------------------------------------------------------------

    def export_markdown(self, conversation_id: int) -> str:
        """The conversation as a Markdown document."""
        conversation = self.get_conversation(conversation_id)
        if conversation is None:
            raise LookupError(f"no conversation {conversation_id}")
        project = self.get_project(conversation.project_id)
        out = [f"# {conversation.title or 'Untitled conversation'}", ""]
        out.append(f"- **Project:** {project.name if project else conversation.project_id}")
        out.append(f"- **Started:** {_when(conversation.created_at)}")
        out.append(f"- **Last activity:** {_when(conversation.updated_at)}")
        if conversation.model:
            out.append(f"- **Model:** {conversation.model}")
        out.append(f"- **Messages:** {conversation.message_count}")
        for message in self.messages(conversation_id):
            heading = f"### {_ROLE_LABELS[message.role]} · {_when(message.created_at)}"
            if message.status != "complete":
                heading += f" · {_STATUS_LABELS[message.status]}"
            out += ["", "---", "", heading, "", _closed_fences(message.text) or "*(no text)*"]
            if message.error:
                label = "Interrupted" if message.interrupted else "Error"
                out += ["", f"> **{label}:** {message.error}"]
            details = message.metrics.summary() if message.metrics else ""
            if message.role == "assistant" and message.model:
                details = " · ".join(p for p in (details, message.model) if p)
            if details:
                out += ["", f"*{details}*"]
        return "\n".join(out) + "\n"

    def stats(self) -> StoreStats:
        with self._lock:
            one = self._conn.execute
            counts = one(
                "SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM conversations),"
                " (SELECT count(*) FROM messages)"
            ).fetchone()
            by_role = dict(one("SELECT role, count(*) FROM messages GROUP BY role").fetchall())
            by_status = dict(
                one("SELECT status, count(*) FROM messages GROUP BY status").fetchall()
            )
            sums = one(
                "SELECT sum(json_extract(metrics, '$.prompt_tokens')),"
                " sum(json_extract(metrics, '$.completion_tokens')),"
                " avg(json_extract(metrics, '$.ttft_ms')),"
                " avg(json_extract(metrics, '$.tokens_per_s'))"
                " FROM messages WHERE metrics IS NOT NULL"
            ).fetchone()
        db_bytes = sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )
        return StoreStats(
            projects=counts[0],
            conversations=counts[1],
            messages=counts[2],
            messages_by_role=by_role,
            messages_by_status=by_status,
            prompt_tokens=int(sums[0] or 0),
            completion_tokens=int(sums[1] or 0),
            mean_ttft_ms=sums[2],
            mean_tokens_per_s=sums[3],
            db_bytes=db_bytes,
        )

    # -- internals ----------------------------------------------------------------

    @staticmethod
    def _touch(
        conn: sqlite3.Connection, conversation_id: int, now: float, model: str | None
    ) -> None:
        cursor = conn.execute(
            "UPDATE conversations SET updated_at = max(updated_at, ?),"
            " model = coalesce(?, model) WHERE id = ?",
            (now, model, conversation_id),
        )
        _require(cursor, "conversation", conversation_id)


_ROLE_LABELS: dict[str, str] = {"user": "You", "assistant": "TARS", "system": "System"}
_STATUS_LABELS: dict[str, str] = {
    "cancelled": "*cancelled*",
    "error": "*failed*",
    "streaming": "*incomplete*",
}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _closed_fences(text: str) -> str:
    """A reply cancelled inside a code block would swallow the rest of the document."""
    text = text.rstrip()
    fences = [ln.lstrip()[:3] for ln in text.splitlines() if ln.lstrip()[:3] in ("```", "~~~")]
    return f"{text}\n{fences[-1]}" if len(fences) % 2 else text


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


def _json(metrics: ReplyMetrics | None) -> str | None:
    return None if metrics is None else metrics.to_json()


def _lastrowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _require(cursor: sqlite3.Cursor, what: str, key: int) -> None:
    if cursor.rowcount == 0:
        raise LookupError(f"no {what} {key}")


def _fields(r: sqlite3.Row) -> dict[str, Any]:
    return {k: r[k] for k in r.keys()}  # noqa: SIM118 - a Row is not a mapping


def _project(r: sqlite3.Row) -> Project:
    return Project(**{**_fields(r), "archived": bool(r["archived"])})


def _conversation(r: sqlite3.Row) -> Conversation:
    return Conversation(**_fields(r))


def _message(r: sqlite3.Row) -> Message:
    fields = _fields(r)
    del fields["owner"]
    fields["metrics"] = ReplyMetrics.from_json(r["metrics"]) if r["metrics"] else None
    return Message(**fields)


__all__ = [
    "ROLES",
    "STATUSES",
    "Conversation",
    "ConversationStore",
    "Message",
    "Project",
    "ProjectActivity",
    "ReplyMetrics",
    "Role",
    "SchemaError",
    "SearchHit",
    "Status",
    "StoreStats",
    "default_db_path",
    "title_from_text",
]

"""Long-term memory's tables on PC1: the memory ledger, the outbox and ingested documents.

:class:`MemoryStore` owns its own connection to the same ``tars.db`` that
:class:`~memory.conversation_store.ConversationStore` uses, and is the only code
that writes these tables (schema: ``memory.migrations._v3_long_term_memory``).
A second connection rather than more methods on ConversationStore: the two
classes share no transaction, each stays one concern of a readable size, and
SQLite's WAL lets both connections read at once and serialises their (short)
writes. Same durability rules: ``synchronous=FULL``, one commit per call, so a
memory accepted by :meth:`add_memory` survives kill -9 and waits in the outbox.

Threads: one re-entrant lock per store around every statement, like
ConversationStore; rows come out as frozen dataclasses.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memory.database import Database

MemoryKind = Literal["exchange", "fact"]
OutboxOp = Literal["upsert", "delete"]
MAX_MEMORY_CHARS = 8000  # the node takes 20 000; MiniLM reads the first ~256 tokens anyway


@dataclass(frozen=True)
class MemoryRecord:
    id: str
    project_id: int | None  # None: global, a fact about the user
    kind: MemoryKind
    text: str
    conversation_id: int | None
    message_id: int | None
    created_at: float
    pinned: bool
    forgotten_at: float | None
    merged_into: str | None
    merged_at: float | None
    merge_score: float | None
    delivered_at: float | None

    @property
    def active(self) -> bool:
        """Neither forgotten nor merged into another memory."""
        return self.forgotten_at is None and self.merged_into is None


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    op: OutboxOp
    item_id: str
    payload: dict[str, Any] | None  # the node item, for an upsert
    created_at: float
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    project_id: int | None
    path: str
    name: str  # the node's document name
    content_hash: str
    size: int
    chunks: int
    ingested_at: float


@dataclass(frozen=True)
class MemoryCounts:
    memories: int
    pinned: int
    documents: int


class MemoryStore(Database):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        row = self._conn.execute("SELECT value FROM memory_meta WHERE key = 'instance'").fetchone()
        # Prefixes every id and project label this database puts on the node, so two
        # databases (or two tests) can share one node without mixing.
        self.instance: str = str(row[0])

    def _memory_in(self, conn: sqlite3.Connection, memory_id: str) -> MemoryRecord:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        return _memory(
            cursor.execute("SELECT * FROM memories WHERE id = ?", (memory_id,)).fetchone()
        )

    # -- labels on the node ------------------------------------------------------

    def project_label(self, project_id: int | None) -> str:
        """The node's ``project`` value for a PC1 project (None: the global scope)."""
        return f"{self.instance}/global" if project_id is None else f"{self.instance}/p{project_id}"

    def project_from_label(self, label: str) -> int | None:
        """The inverse of :meth:`project_label` (None for global or a foreign label)."""
        prefix = f"{self.instance}/p"
        tail = label[len(prefix) :] if label.startswith(prefix) else ""
        return int(tail) if tail.isdigit() else None

    @property
    def memory_namespace(self) -> str:
        """The node namespace of this database's memories."""
        return f"{self.instance}/memory"

    @property
    def docs_namespace(self) -> str:
        """The node namespace of this database's document chunks."""
        return f"{self.instance}/docs"

    def short_id(self, item_id: str) -> str:
        """An id as people see it: without this database's prefix."""
        prefix = f"{self.instance}/"
        return item_id[len(prefix) :] if item_id.startswith(prefix) else item_id

    def full_id(self, shown: str) -> str:
        """The inverse of :meth:`short_id` (a full id is returned as is)."""
        shown = shown.strip()
        return shown if "/" in shown or ":" in shown else f"{self.instance}/{shown}"

    def new_fact_id(self) -> str:
        return f"{self.instance}/f{uuid.uuid4().hex[:10]}"

    def exchange_id(self, message_id: int) -> str:
        """Stable: the same reply always gives the same memory id."""
        return f"{self.instance}/x{message_id}"

    # -- meta --------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM memory_meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO memory_meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- memories ------------------------------------------------------------------

    def add_memory(
        self,
        memory_id: str,
        kind: MemoryKind,
        text: str,
        *,
        project_id: int | None,
        conversation_id: int | None = None,
        message_id: int | None = None,
        created_at: float | None = None,
    ) -> MemoryRecord | None:
        """Record a memory and queue its upsert, in one transaction. None if the id
        exists already (remembering the same reply twice is a no-op)."""
        text = text.strip()[:MAX_MEMORY_CHARS]
        if not text:
            raise ValueError("a memory needs some text")
        now = time.time() if created_at is None else created_at
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO memories (id, project_id, kind, text, conversation_id,"
                " message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (memory_id, project_id, kind, text, conversation_id, message_id, now),
            )
            if cursor.rowcount == 0:
                return None
            record = self._memory_in(conn, memory_id)
            self._enqueue(conn, "upsert", memory_id, self.node_item(record))
        return record

    def node_item(self, record: MemoryRecord) -> dict[str, Any]:
        """What the node stores for a memory (the same every time: upserts are idempotent)."""
        metadata: dict[str, Any] = {"project_id": record.project_id}
        if record.conversation_id is not None:
            metadata["conversation_id"] = record.conversation_id
        if record.message_id is not None:
            metadata["message_id"] = record.message_id
        return {
            "id": record.id,
            "text": record.text,
            "namespace": self.memory_namespace,
            "project": self.project_label(record.project_id),
            "kind": record.kind,
            "created_at": record.created_at,
            "metadata": metadata,
        }

    def get_memory(self, memory_id: str) -> MemoryRecord | None:
        rows = self._rows("SELECT * FROM memories WHERE id = ?", (memory_id,))
        return _memory(rows[0]) if rows else None

    def get_memories(self, ids: Sequence[str]) -> dict[str, MemoryRecord]:
        out: dict[str, MemoryRecord] = {}
        for part in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(part))
            for r in self._rows(f"SELECT * FROM memories WHERE id IN ({marks})", part):
                out[r["id"]] = _memory(r)
        return out

    def list_memories(
        self,
        project_id: int | None = None,
        *,
        all_projects: bool = False,
        include_global: bool = True,
        include_hidden: bool = False,
        limit: int = 200,
        offset: int = 0,
    ) -> list[MemoryRecord]:
        """Newest first: one project's memories (plus global ones), or every project's."""
        where: list[str] = []
        params: list[Any] = []
        if not all_projects:
            if project_id is None:
                where.append("project_id IS NULL")
            elif include_global:
                where.append("(project_id = ? OR project_id IS NULL)")
                params.append(project_id)
            else:
                where.append("project_id = ?")
                params.append(project_id)
        if not include_hidden:
            where.append("forgotten_at IS NULL AND merged_into IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._rows(
            f"SELECT * FROM memories {clause} ORDER BY created_at DESC, rowid DESC"
            " LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_memory(r) for r in rows]

    def pinned(self, project_id: int | None) -> list[MemoryRecord]:
        """Pinned, active memories of a project and the global scope, oldest first."""
        rows = self._rows(
            "SELECT * FROM memories WHERE pinned = 1 AND forgotten_at IS NULL"
            " AND merged_into IS NULL AND (project_id IS NULL OR project_id = ?)"
            " ORDER BY created_at, rowid",
            (project_id,),
        )
        return [_memory(r) for r in rows]

    def set_pinned(self, memory_id: str, pinned: bool = True) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE memories SET pinned = ? WHERE id = ?", (int(pinned), memory_id)
            )
            if cursor.rowcount == 0:
                raise LookupError(f"no memory {memory_id}")

    def forget(self, ids: Sequence[str]) -> list[str]:
        """Mark memories forgotten and queue their deletion on the node. Returns the ids
        that were active (the others are left alone)."""
        now = time.time()
        done: list[str] = []
        with self._write() as conn:
            for memory_id in dict.fromkeys(ids):
                cursor = conn.execute(
                    "UPDATE memories SET forgotten_at = ? WHERE id = ? AND forgotten_at IS NULL",
                    (now, memory_id),
                )
                if cursor.rowcount:
                    self._enqueue(conn, "delete", memory_id, None)
                    done.append(memory_id)
        return done

    def restore(self, ids: Sequence[str]) -> list[str]:
        """Undo :meth:`forget`: unmark and queue the upsert again."""
        done: list[str] = []
        with self._write() as conn:
            for memory_id in dict.fromkeys(ids):
                cursor = conn.execute(
                    "UPDATE memories SET forgotten_at = NULL WHERE id = ?"
                    " AND forgotten_at IS NOT NULL AND merged_into IS NULL",
                    (memory_id,),
                )
                if cursor.rowcount:
                    record = self._memory_in(conn, memory_id)
                    self._enqueue(conn, "upsert", memory_id, self.node_item(record))
                    done.append(memory_id)
        return done

    def merge(self, kept: str, merged: str, score: float) -> bool:
        """Record that ``merged`` is a near-duplicate of ``kept``: hide it, move its pin,
        queue its deletion on the node. False when either is no longer active."""
        now = time.time()
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, pinned FROM memories WHERE id IN (?, ?)"
                " AND forgotten_at IS NULL AND merged_into IS NULL",
                (kept, merged),
            ).fetchall()
            if len(rows) != 2 or kept == merged:
                return False
            pinned = any(int(p) for _, p in rows)
            conn.execute(
                "UPDATE memories SET merged_into = ?, merged_at = ?, merge_score = ?,"
                " pinned = 0 WHERE id = ?",
                (kept, now, score, merged),
            )
            conn.execute("UPDATE memories SET pinned = ? WHERE id = ?", (int(pinned), kept))
            self._enqueue(conn, "delete", merged, None)
        return True

    def memories_since(self, since: float, limit: int = 100_000) -> list[MemoryRecord]:
        """Active memories created at or after ``since``, oldest first (for the merge job)."""
        rows = self._rows(
            "SELECT * FROM memories WHERE created_at >= ? AND forgotten_at IS NULL"
            " AND merged_into IS NULL ORDER BY created_at, rowid LIMIT ?",
            (since, limit),
        )
        return [_memory(r) for r in rows]

    def hidden_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are forgotten or merged here (the node may not know yet)."""
        return {i for i, r in self.get_memories(ids).items() if not r.active}

    def counts(self, project_id: int | None) -> MemoryCounts:
        """Active memories, pins and documents of one project (None: global)."""
        where = "project_id IS NULL" if project_id is None else "project_id = ?"
        params = () if project_id is None else (project_id,)
        with self._lock:
            mem, pins = self._conn.execute(
                f"SELECT count(*), coalesce(sum(pinned), 0) FROM memories WHERE {where}"
                " AND forgotten_at IS NULL AND merged_into IS NULL",
                params,
            ).fetchone()
            (docs,) = self._conn.execute(
                f"SELECT count(*) FROM documents WHERE {where}", params
            ).fetchone()
        return MemoryCounts(int(mem), int(pins), int(docs))

    # -- outbox ----------------------------------------------------------------------

    def _enqueue(
        self, conn: sqlite3.Connection, op: OutboxOp, item_id: str, payload: dict[str, Any] | None
    ) -> None:
        conn.execute(
            "INSERT INTO outbox (op, item_id, payload, created_at) VALUES (?, ?, ?, ?)",
            (op, item_id, None if payload is None else json.dumps(payload), time.time()),
        )

    def pending_count(self) -> int:
        with self._lock:
            return int(
                self._conn.execute("SELECT count(*) FROM outbox WHERE failed = 0").fetchone()[0]
            )

    def failed_count(self) -> int:
        with self._lock:
            return int(
                self._conn.execute("SELECT count(*) FROM outbox WHERE failed = 1").fetchone()[0]
            )

    def outbox_head(self, limit: int) -> list[OutboxEntry]:
        """The oldest waiting entries, in the order they must reach the node."""
        rows = self._rows("SELECT * FROM outbox WHERE failed = 0 ORDER BY seq LIMIT ?", (limit,))
        return [_entry(r) for r in rows]

    def delivered(self, entries: Sequence[OutboxEntry]) -> None:
        """The node acknowledged these: drop them from the outbox (one transaction)."""
        now = time.time()
        with self._write() as conn:
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(e.seq,) for e in entries])
            conn.executemany(
                "UPDATE memories SET delivered_at = ? WHERE id = ?",
                [(now, e.item_id) for e in entries if e.op == "upsert"],
            )

    def delivery_failed(self, entries: Sequence[OutboxEntry], error: str, *, final: bool) -> None:
        """Count a failed try; ``final`` parks the entries (the node rejected them)."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, failed = ?"
                " WHERE seq = ?",
                [(error[:500], int(final), e.seq) for e in entries],
            )

    def failed_entries(self) -> list[OutboxEntry]:
        rows = self._rows("SELECT * FROM outbox WHERE failed = 1 ORDER BY seq")
        return [_entry(r) for r in rows]

    def retry_failed(self) -> int:
        """Put parked entries back in line (after a node upgrade, say)."""
        with self._write() as conn:
            return int(conn.execute("UPDATE outbox SET failed = 0 WHERE failed = 1").rowcount)

    # -- documents -----------------------------------------------------------------------

    def document(self, project_id: int | None, path: str) -> DocumentRecord | None:
        rows = self._rows(
            "SELECT * FROM documents WHERE coalesce(project_id, 0) = ? AND path = ?",
            (project_id or 0, path),
        )
        return _document(rows[0]) if rows else None

    def save_document(
        self,
        project_id: int | None,
        path: str,
        name: str,
        content_hash: str,
        size: int,
        chunks: int,
    ) -> DocumentRecord:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM documents WHERE coalesce(project_id, 0) = ? AND path = ?",
                (project_id or 0, path),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO documents (project_id, path, name, content_hash, size, chunks,"
                    " ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (project_id, path, name, content_hash, size, chunks, now),
                )
            else:
                conn.execute(
                    "UPDATE documents SET name = ?, content_hash = ?, size = ?, chunks = ?,"
                    " ingested_at = ? WHERE id = ?",
                    (name, content_hash, size, chunks, now, row[0]),
                )
        found = self.document(project_id, path)
        assert found is not None
        return found

    def list_documents(
        self, project_id: int | None = None, *, all_projects: bool = False
    ) -> list[DocumentRecord]:
        if all_projects:
            rows = self._rows("SELECT * FROM documents ORDER BY ingested_at DESC, id DESC")
        else:
            rows = self._rows(
                "SELECT * FROM documents WHERE coalesce(project_id, 0) = ?"
                " ORDER BY ingested_at DESC, id DESC",
                (project_id or 0,),
            )
        return [_document(r) for r in rows]


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _memory(r: sqlite3.Row) -> MemoryRecord:
    fields = {k: r[k] for k in r.keys()}  # noqa: SIM118 - a Row is not a mapping
    fields["pinned"] = bool(fields["pinned"])
    return MemoryRecord(**fields)


def _entry(r: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        seq=int(r["seq"]),
        op=r["op"],
        item_id=r["item_id"],
        payload=None if r["payload"] is None else json.loads(r["payload"]),
        created_at=float(r["created_at"]),
        attempts=int(r["attempts"]),
        last_error=r["last_error"],
    )


def _document(r: sqlite3.Row) -> DocumentRecord:
    return DocumentRecord(**{k: r[k] for k in r.keys()})  # noqa: SIM118


__all__ = [
    "MAX_MEMORY_CHARS",
    "DocumentRecord",
    "MemoryCounts",
    "MemoryKind",
    "MemoryRecord",
    "MemoryStore",
    "OutboxEntry",
    "OutboxOp",
]

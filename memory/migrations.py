"""The conversation database's schema, as ordered upgrade steps.

``MIGRATIONS[i]`` upgrades a database from version ``i`` to ``i + 1``; the version
lives in ``PRAGMA user_version`` (0 = empty file). Each step runs in its own
transaction together with the version bump, so a failing step leaves the database
at the previous version. Later issues append steps; never edit a released one.

The stores call :func:`migrate` when they open the file
(:class:`memory.conversation_store.ConversationStore`, :class:`memory.memory_store.MemoryStore`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

Migration = Callable[[sqlite3.Connection], None]

DEFAULT_PROJECT_NAME = "default"


class SchemaError(Exception):
    """The database cannot be used by this version of TARS."""


def _execute_all(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    # Not executescript(): it commits first, which would break the step's transaction.
    for statement in statements:
        conn.execute(statement)


def _v1_core(conn: sqlite3.Connection) -> None:
    """Projects, conversations and messages."""
    _execute_all(
        conn,
        (
            """CREATE TABLE projects (
                id          INTEGER PRIMARY KEY,
                name        TEXT NOT NULL UNIQUE,
                description TEXT NOT NULL DEFAULT '',
                summary     TEXT NOT NULL DEFAULT '',
                summary_at  REAL,
                created_at  REAL NOT NULL,
                archived    INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1))
            )""",
            """CREATE TABLE conversations (
                id         INTEGER PRIMARY KEY,
                project_id INTEGER NOT NULL REFERENCES projects(id),
                title      TEXT NOT NULL DEFAULT '',
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                model      TEXT
            )""",
            "CREATE INDEX conversations_by_activity ON conversations(updated_at DESC, id DESC)",
            "CREATE INDEX conversations_by_project ON conversations(project_id, updated_at DESC)",
            # owner: which live store is writing a 'streaming' row (see recover_interrupted).
            """CREATE TABLE messages (
                id              INTEGER PRIMARY KEY,
                conversation_id INTEGER NOT NULL
                                REFERENCES conversations(id) ON DELETE CASCADE,
                role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
                text            TEXT NOT NULL,
                created_at      REAL NOT NULL,
                completed_at    REAL,
                model           TEXT,
                status          TEXT NOT NULL DEFAULT 'complete'
                                CHECK (status IN ('complete', 'cancelled', 'streaming', 'error')),
                metrics         TEXT CHECK (metrics IS NULL OR json_valid(metrics)),
                error           TEXT,
                owner           TEXT
            )""",
            "CREATE INDEX messages_by_conversation ON messages(conversation_id, id)",
            "CREATE INDEX messages_streaming ON messages(status) WHERE status = 'streaming'",
        ),
    )
    conn.execute(
        "INSERT INTO projects (name, description, created_at) VALUES (?, ?, ?)",
        (DEFAULT_PROJECT_NAME, "Everything not filed under another project.", time.time()),
    )


def _v2_fts(conn: sqlite3.Connection) -> None:
    """Full-text search over message text: an external-content FTS5 index (no second
    copy of the text) kept in sync by the standard triggers, and filled from the rows
    already there."""
    _execute_all(
        conn,
        (
            """CREATE VIRTUAL TABLE messages_fts USING fts5(
                text, content='messages', content_rowid='id',
                tokenize='porter unicode61 remove_diacritics 2'
            )""",
            """CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
                 INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
               END""",
            """CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
                 INSERT INTO messages_fts(messages_fts, rowid, text)
                   VALUES ('delete', old.id, old.text);
               END""",
            """CREATE TRIGGER messages_fts_au AFTER UPDATE OF text ON messages BEGIN
                 INSERT INTO messages_fts(messages_fts, rowid, text)
                   VALUES ('delete', old.id, old.text);
                 INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
               END""",
            "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
        ),
    )


def _v3_long_term_memory(conn: sqlite3.Connection) -> None:
    """Long-term memory on PC1 (issue 5), owned by :class:`memory.memory_store.MemoryStore`:

    - ``memory_meta``: key/value (this database's ``instance`` id, job cursors).
    - ``memories``: the ledger of every memory sent to the node (text kept here, so
      it can be listed, pinned, restored and re-sent); ``project_id`` NULL = global.
    - ``outbox``: node writes waiting for delivery, in ``seq`` order.
    - ``documents``: ingested files with their content hash (re-ingest skips them).
    """
    _execute_all(
        conn,
        (
            "CREATE TABLE memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE memories (
                id              TEXT PRIMARY KEY,
                project_id      INTEGER REFERENCES projects(id),
                kind            TEXT NOT NULL CHECK (kind IN ('exchange', 'fact')),
                text            TEXT NOT NULL,
                conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
                message_id      INTEGER,
                created_at      REAL NOT NULL,
                pinned          INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
                forgotten_at    REAL,
                merged_into     TEXT,
                merged_at       REAL,
                merge_score     REAL,
                delivered_at    REAL
            )""",
            "CREATE INDEX memories_by_project ON memories(project_id, created_at DESC)",
            "CREATE INDEX memories_by_time ON memories(created_at DESC)",
            "CREATE INDEX memories_pinned ON memories(project_id) WHERE pinned = 1",
            """CREATE TABLE outbox (
                seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                op         TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
                item_id    TEXT NOT NULL,
                payload    TEXT CHECK (payload IS NULL OR json_valid(payload)),
                created_at REAL NOT NULL,
                attempts   INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                failed     INTEGER NOT NULL DEFAULT 0 CHECK (failed IN (0, 1))
            )""",
            "CREATE INDEX outbox_waiting ON outbox(seq) WHERE failed = 0",
            """CREATE TABLE documents (
                id           INTEGER PRIMARY KEY,
                project_id   INTEGER REFERENCES projects(id),
                path         TEXT NOT NULL,
                name         TEXT NOT NULL,
                content_hash TEXT NOT NULL,
                size         INTEGER NOT NULL,
                chunks       INTEGER NOT NULL,
                ingested_at  REAL NOT NULL
            )""",
            "CREATE UNIQUE INDEX documents_by_path ON documents(coalesce(project_id, 0), path)",
        ),
    )
    conn.execute(
        "INSERT INTO memory_meta (key, value) VALUES ('instance', lower(hex(randomblob(4))))"
    )


def _v4_project_model(conn: sqlite3.Connection) -> None:
    """A project may have its own model profile ([models.NAME])."""
    conn.execute("ALTER TABLE projects ADD COLUMN model TEXT")


MIGRATIONS: list[Migration] = [_v1_core, _v2_fts, _v3_long_term_memory, _v4_project_model]


def latest_version() -> int:
    return len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int | None = None) -> tuple[int, int]:
    """Upgrade ``conn`` (opened with ``isolation_level=None``) step by step to ``target``
    (default: the latest). Returns (version before, version after).

    Raises :class:`SchemaError` for a database written by a newer TARS.
    """
    goal = latest_version() if target is None else target
    if not 0 <= goal <= latest_version():
        raise ValueError(f"no schema version {goal} (latest is {latest_version()})")
    before = schema_version(conn)
    if before > latest_version():
        raise SchemaError(
            f"the database is at schema version {before}, newer than this TARS "
            f"understands ({latest_version()}); upgrade TARS or use another data_dir"
        )
    version = before
    while version < goal:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have upgraded meanwhile.
            version = schema_version(conn)
            if version < goal:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return before, version


__all__ = [
    "DEFAULT_PROJECT_NAME",
    "MIGRATIONS",
    "Migration",
    "SchemaError",
    "latest_version",
    "migrate",
    "schema_version",
]

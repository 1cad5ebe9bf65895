"""SQLite: the node's source of truth (ids, texts, metadata, vectors) and FTS5 keywords.

One writer connection, used only by the node's single writer thread; readers get
a connection per thread (WAL lets them read while the writer commits). Every
write is one transaction committed with ``synchronous=FULL`` before it returns,
so a change that was acknowledged survives kill -9 and power loss. Row ids come
from AUTOINCREMENT and are never reused: they are the FAISS ids.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from node_daemon.schema import Filter

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per IN (...) query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash BLOB NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_filter ON items (namespace, project, kind, created_at);
CREATE INDEX IF NOT EXISTS items_created ON items (created_at);
CREATE INDEX IF NOT EXISTS items_doc ON items (namespace, doc) WHERE doc != '';
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5 (
    text, content='items', content_rowid='rid', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS items_ai AFTER INSERT ON items BEGIN
    INSERT INTO items_fts (rowid, text) VALUES (new.rid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS items_ad AFTER DELETE ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, text) VALUES ('delete', old.rid, old.text);
END;
"""

_COLUMNS = "rid, id, namespace, project, kind, created_at, updated_at, text, metadata"
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Row:
    rid: int
    id: str
    namespace: str
    project: str
    kind: str
    created_at: float
    updated_at: float
    text: str
    metadata: str  # JSON

    @classmethod
    def from_sql(cls, r: Sequence[Any]) -> Row:
        return cls(int(r[0]), r[1], r[2], r[3], r[4], float(r[5]), float(r[6]), r[7], r[8])


@dataclass(frozen=True)
class Existing:
    rid: int
    namespace: str
    project: str
    kind: str
    doc: str
    created_at: float
    metadata: str
    content_hash: bytes
    vector: bytes


@dataclass(frozen=True)
class NewRow:
    id: str
    namespace: str
    project: str
    kind: str
    doc: str
    created_at: float
    updated_at: float
    text: str
    metadata: str
    content_hash: bytes
    vector: bytes


def where_sql(flt: Filter, alias: str = "") -> tuple[str, list[Any]]:
    p = f"{alias}." if alias else ""
    clauses: list[str] = []
    params: list[Any] = []
    if flt.namespace is not None:
        clauses.append(f"{p}namespace = ?")
        params.append(flt.namespace)
    if flt.project is not None:
        clauses.append(f"{p}project = ?")
        params.append(flt.project)
    if flt.kinds is not None:
        clauses.append(f"{p}kind IN ({','.join('?' * len(flt.kinds))})")
        params.extend(flt.kinds)
    if flt.since is not None:
        clauses.append(f"{p}created_at >= ?")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append(f"{p}created_at < ?")
        params.append(flt.until)
    return (" AND ".join(clauses) or "1"), params


# Words that match nearly everything: in a keyword query they only add noise to the
# fusion with dense results. Dropped unless the query has nothing else.
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """a an and are as at be but by can could did do does for from had has have how i if
        in into is it its me my no not of on or our so than that the their them then there
        these they this to was we were what when where which who whom why will with would
        you your""",
    )
)


def fts_query(text: str) -> str:
    """Free text -> an FTS5 query: each word quoted, any may match (BM25 ranks)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    content = [w for w in words if w not in _STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in content[:64])


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writer = self._connect(writer=True)
        self._migrate()

    def _connect(self, *, writer: bool = False) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA busy_timeout = 10000")
        if writer:  # takes effect on a new file only, so before anything creates it
            con.execute("PRAGMA auto_vacuum = INCREMENTAL")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        return con

    def _migrate(self) -> None:
        con = self._writer
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}; this tars-node knows "
                f"{SCHEMA_VERSION}. Upgrade tars-node."
            )
        if version < 1:
            con.executescript(
                f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
            )

    def _reader(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            con.execute("PRAGMA query_only = 1")
            self._local.con = con
        return con

    def close(self) -> None:
        self._writer.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction on the writer connection. When a statement or
        the COMMIT fails (a full disk...), SQLite may have rolled back already: roll
        back only what is still open, so that the first error is the one raised."""
        con = self._writer
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            raise

    # -- meta ------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._writer.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str]) -> None:
        with self._transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items()
            )

    # -- reads (any thread) ------------------------------------------------------

    def existing(self, ids: Sequence[str], *, writer: bool = False) -> dict[str, Existing]:
        con = self._writer if writer else self._reader()
        out: dict[str, Existing] = {}
        for part in _chunks(list(ids)):
            sql = (
                "SELECT id, rid, namespace, project, kind, doc, created_at, metadata,"
                f" content_hash, vector FROM items WHERE id IN ({','.join('?' * len(part))})"
            )
            for r in con.execute(sql, part):
                out[r[0]] = Existing(
                    int(r[1]), r[2], r[3], r[4], r[5], float(r[6]), r[7], bytes(r[8]), bytes(r[9])
                )
        return out

    def rows_by_rids(self, rids: Sequence[int], *, writer: bool = False) -> dict[int, Row]:
        con = self._writer if writer else self._reader()
        out: dict[int, Row] = {}
        for part in _chunks([int(r) for r in rids]):
            sql = f"SELECT {_COLUMNS} FROM items WHERE rid IN ({','.join('?' * len(part))})"
            for r in con.execute(sql, part):
                out[int(r[0])] = Row.from_sql(r)
        return out

    def rows_by_ids(self, ids: Sequence[str]) -> dict[str, Row]:
        con = self._reader()
        out: dict[str, Row] = {}
        for part in _chunks(list(ids)):
            sql = f"SELECT {_COLUMNS} FROM items WHERE id IN ({','.join('?' * len(part))})"
            for r in con.execute(sql, part):
                out[r[1]] = Row.from_sql(r)
        return out

    def vectors_by_rids(self, rids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for part in _chunks([int(r) for r in rids]):
            sql = f"SELECT rid, vector FROM items WHERE rid IN ({','.join('?' * len(part))})"
            for rid, blob in self._reader().execute(sql, part):
                out[int(rid)] = np.frombuffer(blob, dtype="<f4", count=dim)
        return out

    def vector_of(self, item_id: str) -> bytes | None:
        row = self._reader().execute("SELECT vector FROM items WHERE id = ?", (item_id,))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    def filter_rids(self, flt: Filter) -> np.ndarray:
        where, params = where_sql(flt)
        cur = self._reader().execute(f"SELECT rid FROM items WHERE {where}", params)
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def count(self, flt: Filter) -> int:
        where, params = where_sql(flt)
        return int(
            self._reader()
            .execute(f"SELECT count(*) FROM items WHERE {where}", params)
            .fetchone()[0]
        )

    def namespace_counts(self) -> dict[str, int]:
        cur = self._writer.execute("SELECT namespace, count(*) FROM items GROUP BY namespace")
        return {str(ns): int(n) for ns, n in cur}

    def keyword(self, query: str, flt: Filter, limit: int) -> list[tuple[int, float]]:
        """(rid, BM25 score; higher is better), best first."""
        match = fts_query(query)
        if not match:
            return []
        where, params = where_sql(flt, "i")
        sql = (
            "SELECT i.rid, bm25(items_fts) AS s FROM items_fts JOIN items i ON i.rid = "
            f"items_fts.rowid WHERE items_fts MATCH ? AND {where} ORDER BY s LIMIT ?"
        )
        cur = self._reader().execute(sql, [match, *params, limit])
        return [(int(rid), -float(score)) for rid, score in cur]

    def live_rids(self) -> np.ndarray:
        cur = self._writer.execute("SELECT rid FROM items ORDER BY rid")
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def iter_vectors(
        self, dim: int, rids: np.ndarray | None = None, batch: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rids, float32 matrix) in batches: all live items, or only ``rids``."""
        con = self._writer
        if rids is None:
            last = -1
            while True:
                rows = con.execute(
                    "SELECT rid, vector FROM items WHERE rid > ? ORDER BY rid LIMIT ?",
                    (last, batch),
                ).fetchall()
                if not rows:
                    return
                last = int(rows[-1][0])
                yield _matrix(rows, dim)
        else:
            for part in _chunks([int(r) for r in rids], size=_CHUNK):
                sql = f"SELECT rid, vector FROM items WHERE rid IN ({','.join('?' * len(part))})"
                rows = con.execute(sql, part).fetchall()
                if rows:
                    yield _matrix(rows, dim)

    def iter_texts(self, batch: int = 256) -> Iterator[list[tuple[int, str]]]:
        last = -1
        while True:
            rows = self._writer.execute(
                "SELECT rid, text FROM items WHERE rid > ? ORDER BY rid LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            yield [(int(r), str(t)) for r, t in rows]

    # -- writes (the writer thread only) -------------------------------------------

    def doc_rids(self, namespace: str, doc: str) -> dict[str, int]:
        cur = self._writer.execute(
            "SELECT id, rid FROM items WHERE namespace = ? AND doc = ?", (namespace, doc)
        )
        return {str(i): int(r) for i, r in cur}

    def write(self, inserts: Sequence[NewRow], delete_rids: Sequence[int]) -> list[int]:
        """Delete then insert, in one committed transaction. Returns the new rids."""
        with self._transaction() as con:
            for part in _chunks([int(r) for r in delete_rids]):
                con.execute(f"DELETE FROM items WHERE rid IN ({','.join('?' * len(part))})", part)
            rids = []
            for row in inserts:
                cur = con.execute(
                    "INSERT INTO items (id, namespace, project, kind, doc, created_at,"
                    " updated_at, text, metadata, content_hash, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING rid",
                    (
                        row.id,
                        row.namespace,
                        row.project,
                        row.kind,
                        row.doc,
                        row.created_at,
                        row.updated_at,
                        row.text,
                        row.metadata,
                        row.content_hash,
                        row.vector,
                    ),
                )
                rids.append(int(cur.fetchone()[0]))
        return rids

    def delete_where(self, flt: Filter) -> list[tuple[int, str]]:
        """Delete matching items; (rid, namespace) of each, committed."""
        where, params = where_sql(flt)
        with self._transaction() as con:
            cur = con.execute(f"DELETE FROM items WHERE {where} RETURNING rid, namespace", params)
            gone = [(int(r), str(ns)) for r, ns in cur.fetchall()]
        return gone

    def delete_ids(self, ids: Sequence[str]) -> list[tuple[int, str]]:
        gone: list[tuple[int, str]] = []
        with self._transaction() as con:
            for part in _chunks(list(ids)):
                cur = con.execute(
                    f"DELETE FROM items WHERE id IN ({','.join('?' * len(part))})"
                    " RETURNING rid, namespace",
                    part,
                )
                gone.extend((int(r), str(ns)) for r, ns in cur.fetchall())
        return gone

    def update_vectors(self, pairs: Sequence[tuple[int, bytes]]) -> None:
        with self._transaction() as con:
            con.executemany("UPDATE items SET vector = ? WHERE rid = ?", [(v, r) for r, v in pairs])

    def optimize(self) -> None:
        con = self._writer
        con.execute("INSERT INTO items_fts (items_fts) VALUES ('optimize')")
        con.execute("PRAGMA incremental_vacuum")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA optimize")


def _chunks(values: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _matrix(rows: list[tuple[Any, Any]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    rids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
    return rids, vecs.astype(np.float32, copy=False)

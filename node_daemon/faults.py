"""Storage faults: a full disk, a read-only data directory, a corrupt database.

A failing write raises whatever SQLite or the OS raise (``database or disk is
full``, ``disk I/O error``, ``[Errno 30] Read-only file system``...). The node
answers ``internal`` either way, but with a message that starts with what
happened and says what to do, so the operator (and ``tars doctor``) need not
read a traceback. SQLite reports a filesystem that turned read-only under it as
a plain I/O error, so an unclear error is checked against the directory itself
(:func:`probe`). Standard library only: ``tars doctor`` uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Final

log = logging.getLogger("tars_node.faults")

DISK_FULL: Final = "disk full"
READ_ONLY: Final = "data directory read-only"
CORRUPT: Final = "database corrupt"
IO_ERROR: Final = "disk I/O error"
KINDS: Final = (DISK_FULL, READ_ONLY, CORRUPT, IO_ERROR)

ADVICE: Final = {
    DISK_FULL: "free space on that disk: writes resume by themselves, and PC1 keeps "
    "unsent memories in its outbox until they do",
    READ_ONLY: "the disk may have failed (see dmesg), or its permissions or mount "
    "changed: fix that, remount it read-write, then restart tars-node; PC1 keeps "
    "unsent memories in its outbox",
    CORRUPT: "stop tars-node, keep a copy of items.sqlite3, then recover it with "
    "`sqlite3 items.sqlite3 .recover | sqlite3 recovered.sqlite3` and put the "
    "result in its place (or restore a backup); the FAISS index is rebuilt from it",
    IO_ERROR: "check the disk (dmesg, smartctl); restart tars-node once it is healthy",
}


class Corrupt(Exception):
    """Something read back from the database is not what the node wrote there."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def kind_of(message: str) -> str | None:
    """Which fault a node's error message reports, if any."""
    return next((k for k in KINDS if message.startswith(k + ":")), None)


def storage_fault(exc: BaseException, data_dir: Path) -> str | None:
    """``"<kind>: <what failed> (<where>); <what to do>"`` for a storage failure,
    None for any other exception."""
    kind: str | None = None
    if isinstance(exc, Corrupt):
        kind = CORRUPT
    elif isinstance(exc, sqlite3.Error):
        kind = _sqlite_kind(exc)
        if kind == IO_ERROR:
            kind = probe(data_dir) or IO_ERROR
    elif isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            kind = DISK_FULL
        elif exc.errno in _READ_ONLY_ERRNOS:
            kind = READ_ONLY
        elif exc.errno == errno.EIO:
            kind = probe(data_dir) or IO_ERROR
    if kind is None:
        return None
    return message(kind, f"{type(exc).__name__}: {exc}", data_dir)


def message(kind: str, detail: str, data_dir: Path) -> str:
    where = str(data_dir / "items.sqlite3") if kind == CORRUPT else str(data_dir)
    if kind == DISK_FULL:
        with contextlib.suppress(OSError):
            where += f", {shutil.disk_usage(data_dir).free // 2**20} MiB free"
    return f"{kind}: {detail[:300]} ({where}); {ADVICE[kind]}"


def _sqlite_kind(exc: sqlite3.Error) -> str | None:
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return DISK_FULL
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return READ_ONLY
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        "malformed" in text or "not a database" in text or "could not decode" in text
    ):
        return CORRUPT  # (the last: Python's sqlite3 reading text that is not UTF-8)
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or (
        "disk i/o error" in text or "unable to open" in text
    ):
        return IO_ERROR
    return None


def probe(data_dir: Path) -> str | None:
    """Write, sync and remove a small file in ``data_dir``: DISK_FULL or READ_ONLY
    when that fails so, None when it works (or fails otherwise)."""
    path = data_dir / f".tars-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            return DISK_FULL
        if exc.errno in _READ_ONLY_ERRNOS:
            return READ_ONLY
        return None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def integrity_problem(db: Path, timeout_s: float = 2.0) -> str | None:
    """What SQLite's ``quick_check`` finds wrong with ``db`` (first problem), or None
    when it finds nothing or cannot tell (missing, locked). Reads only; it takes
    time in proportion to the file, so the node runs it only after an error it
    cannot explain, to tell a corrupt file from a bug."""
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout_s)
        try:
            row = con.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}" if _sqlite_kind(exc) == CORRUPT else None
    return None if row is not None and row[0] == "ok" else f"quick_check: {row[0] if row else '?'}"


def check_data_dir(data_dir: Path, *, min_free_mib: int = 64) -> str | None:
    """What is wrong with a node's data directory as found on disk, or None: for
    `tars doctor`, which may run while the node is down. Reads the database only."""
    if not data_dir.is_dir():
        return None
    kind = probe(data_dir)
    if kind is not None:
        return message(kind, "a test write failed", data_dir)
    free = shutil.disk_usage(data_dir).free // 2**20
    if free < min_free_mib:
        return message(DISK_FULL, f"only {free} MiB left", data_dir)
    problem = integrity_problem(data_dir / "items.sqlite3")
    return None if problem is None else message(CORRUPT, problem, data_dir)


class FaultState:
    """The node's storage fault, if any: set by a read or write that hit one, shown by
    `health`, cleared once the directory takes a real write again (a write that
    changed nothing proves nothing) — never for a corrupt file, which stays so."""

    CHECK_EVERY_S: Final = 60.0  # quick_check reads the whole file: not on every error

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.db = data_dir / "items.sqlite3"
        self.current: str | None = None
        self._checked_ok_at = -self.CHECK_EVERY_S

    @property
    def corrupt(self) -> bool:
        return self.current is not None and kind_of(self.current) == CORRUPT

    def record(self, exc: BaseException) -> str | None:
        """The fault ``exc`` is (now the current one), or None when it is none."""
        fault = storage_fault(exc, self.data_dir)
        if fault is not None:
            self.set(fault, exc)
        return fault

    def set(self, fault: str, exc: BaseException | None = None) -> None:
        if self.current is None or kind_of(fault) != kind_of(self.current):
            log.error("storage fault", extra={"error": fault}, exc_info=exc)
        self.current = fault

    def wrote(self) -> None:
        """A write went through: clear a full or read-only fault if the disk agrees."""
        if self.current is not None and not self.corrupt and probe(self.data_dir) is None:
            log.info("writes work again", extra={"was": self.current})
            self.current = None

    def check_due(self) -> bool:
        return time.monotonic() - self._checked_ok_at >= self.CHECK_EVERY_S

    def check(self, exc: BaseException) -> str | None:
        """After an error nothing explains (blocking: a thread's job): a fault if
        SQLite finds the file damaged, else None (a bug)."""
        problem = integrity_problem(self.db)
        if problem is None:
            self._checked_ok_at = time.monotonic()
            return None
        fault = message(CORRUPT, f"{problem}; on {type(exc).__name__}: {exc}", self.data_dir)
        self.set(fault, exc)
        return fault


__all__ = [
    "ADVICE",
    "CORRUPT",
    "DISK_FULL",
    "IO_ERROR",
    "KINDS",
    "READ_ONLY",
    "Corrupt",
    "FaultState",
    "check_data_dir",
    "integrity_problem",
    "kind_of",
    "message",
    "probe",
    "storage_fault",
]

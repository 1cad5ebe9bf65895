"""Documents: PC1 reads files (text, Markdown, source code, PDF through pypdf) and the
node chunks, embeds and indexes them (its ``ingest`` op).

A re-ingest compares each file's content hash with the one recorded at the last
ingest and skips unchanged files without even parsing them. A file that cannot
be read (binary, not UTF-8, a PDF without a text layer, too big, no permission)
is reported with the reason and the rest go on; if the node goes away, the
files not yet sent are reported as such.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from memory.memory_store import MemoryStore
from memory.semantic import DOCUMENT_KIND, NodeSource
from node_daemon.client import NodeError, NodeUnavailable
from tars_core.settings.memory import MemoryConfig

log = logging.getLogger(__name__)

SKIPPED_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
     ".ruff_cache", ".pytest_cache", ".tox", "dist", "build", ".idea", ".vscode"}
)  # fmt: skip
SNIFF_BYTES = 8192
NAME_MAX = 180  # the node allows 192 characters for a document name


class UnreadableFile(Exception):
    """The file's text cannot be had; the message says why, for people."""


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    path: str
    outcome: str  # added | updated | unchanged | failed


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    error: str | None = None  # the node failed: the files after it were not sent

    @property
    def total(self) -> int:
        return len(self.added) + len(self.updated) + len(self.unchanged) + len(self.failed)

    def summary(self) -> str:
        """One line for people."""
        text = (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.failed)} unreadable "
            f"({self.chunks} chunks, {self.seconds:.1f} s)"
        )
        return f"{text}; stopped: {self.error}" if self.error else text


def collect_files(target: Path) -> tuple[list[Path], list[Problem]]:
    """``target`` itself, or every file under it (hidden and tool folders skipped),
    sorted. A missing path is a problem, not an exception."""
    target = target.expanduser()
    if target.is_file():
        return [target.resolve()], []
    if not target.is_dir():
        return [], [Problem(str(target), "no such file or folder")]
    found: list[Path] = []
    problems: list[Problem] = []

    def walk_error(exc: OSError) -> None:
        problems.append(Problem(str(exc.filename), exc.strerror or str(exc)))

    for root, dirs, files in os.walk(target, onerror=walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(files):
            if not name.startswith("."):
                found.append((Path(root) / name).resolve())
    return found, problems


def file_text(path: Path, data: bytes, suffixes: Iterable[str]) -> str:
    """The text of a file's bytes, or :class:`UnreadableFile`."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        text = pdf_text(data)
    else:
        if b"\x00" in data[:SNIFF_BYTES]:
            raise UnreadableFile("a binary file, not text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            known = suffix in {s.lower() for s in suffixes}
            raise UnreadableFile(
                "not UTF-8 text" if known else f"not a text file ({suffix or 'no extension'})"
            ) from None
    if not text.strip():
        raise UnreadableFile("no text in it")
    return text


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader  # the only user of pypdf: imported when a PDF comes

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableFile("an encrypted PDF")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except UnreadableFile:
        raise
    except Exception as exc:  # pypdf raises many kinds for broken files
        raise UnreadableFile(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise UnreadableFile("a PDF without a text layer (scanned?)")
    return text


def read_document(path: Path, max_bytes: int, suffixes: Iterable[str]) -> tuple[str, str]:
    """(sha256 of the bytes, text). Blocking: PDFs take a while."""
    data, _ = read_bytes(path, max_bytes)
    return hashlib.sha256(data).hexdigest(), file_text(path, data, suffixes)


def read_bytes(path: Path, max_bytes: int) -> tuple[bytes, float]:
    """(the file's bytes, its modification time), or :class:`UnreadableFile`."""
    try:
        st = path.stat()
        if st.st_size > max_bytes:
            mib = st.st_size / 2**20
            raise UnreadableFile(f"too large ({mib:.1f} MiB; see [memory] ingest_max_mb)")
        return path.read_bytes(), st.st_mtime
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from None


class DocumentIngest:
    def __init__(self, store: MemoryStore, node: NodeSource, config: MemoryConfig) -> None:
        self.store = store
        self.node = node
        self.config = config

    def document_name(self, project_id: int | None, path: str) -> str:
        """The node's name for a file: stable per (project, path), short enough."""
        scope = "global" if project_id is None else f"p{project_id}"
        name = f"{scope}:{path}"
        if len(name) > NAME_MAX:
            digest = hashlib.sha1(path.encode()).hexdigest()[:10]
            name = f"{scope}:…{path[-(NAME_MAX - len(scope) - 14) :]}#{digest}"
        return name

    async def ingest(
        self,
        target: Path,
        *,
        project_id: int | None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> IngestReport:
        """Ingest a file or a folder into a project (None: global). Never raises for
        unreadable files or the node: see the report."""
        t0 = time.perf_counter()
        report = IngestReport()
        files, problems = await asyncio.to_thread(collect_files, target)
        report.failed.extend(problems)
        total = len(files)
        max_bytes = int(self.config.ingest_max_mb * 2**20)
        for done, path in enumerate(files, 1):
            outcome = await self._one(path, project_id, max_bytes, report)
            if on_progress is not None:
                on_progress(Progress(done, total, str(path), outcome))
            if report.error is not None:
                for rest in files[done:]:
                    report.failed.append(Problem(str(rest), "not sent: the node is unreachable"))
                break
        report.seconds = time.perf_counter() - t0
        return report

    async def _one(
        self, path: Path, project_id: int | None, max_bytes: int, report: IngestReport
    ) -> str:
        key = str(path)
        known = self.store.document(project_id, key)
        try:
            data, mtime = await asyncio.to_thread(read_bytes, path, max_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if known is not None and known.content_hash == digest:
                report.unchanged.append(key)
                return "unchanged"
            text = await asyncio.to_thread(file_text, path, data, self.config.ingest_suffixes)
        except UnreadableFile as exc:
            report.failed.append(Problem(key, str(exc)))
            return "failed"
        client = self.node()
        if client is None:
            report.error = "the node is not connected"
            report.failed.append(Problem(key, "not sent: the node is not connected"))
            return "failed"
        name = self.document_name(project_id, key)
        try:
            result = await client.ingest(
                name,
                text,
                namespace=self.store.docs_namespace,
                project=self.store.project_label(project_id),
                kind=DOCUMENT_KIND,
                metadata={"path": key, "title": path.name, "project_id": project_id},
                created_at=mtime,
            )
        except NodeUnavailable as exc:
            report.error = str(exc)
            report.failed.append(Problem(key, f"not sent: {exc}"))
            return "failed"
        except NodeError as exc:
            report.failed.append(Problem(key, f"the node refused it: {exc.message}"))
            return "failed"
        self.store.save_document(project_id, key, name, digest, len(data), int(result["chunks"]))
        report.chunks += int(result["chunks"])
        if known is None:
            report.added.append(key)
            return "added"
        report.updated.append(key)
        return "updated"


__all__ = [
    "DocumentIngest",
    "IngestReport",
    "Problem",
    "Progress",
    "UnreadableFile",
    "collect_files",
    "file_text",
    "pdf_text",
    "read_document",
]

"""Document text -> overlapping chunks, split where Markdown and prose break naturally.

A chunk is a slice of the original text, at most ``chunk_chars`` long. It ends at
the best break found in its second half: before a heading, then a blank line, a
line end, a sentence end, a space; only a text with no break at all is cut
mid-word. The next chunk starts up to ``overlap`` characters earlier, on a word
boundary, so a sentence that straddles a break is found from either side, except
at a heading: a new section starts clean. Each chunk remembers the Markdown
heading it starts under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
# Break candidates, best first; the position recorded is where the next chunk may begin.
_BREAKS = (
    re.compile(r"\n(?=#{1,6}[ \t])"),  # before a heading
    re.compile(r"\n[ \t]*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"(?<=[.!?])[\"')\]]?\s+"),  # sentence
    re.compile(r"\s+"),  # word
)
_SENTENCE_START = re.compile(r"(?<=[.!?])\s+(?=\S)|\n\s*(?=\S)")
TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".rst", ".text", ".org"})


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str
    heading: str


def chunk_text(text: str, *, chunk_chars: int = 800, overlap: int = 150) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``chunk_chars`` sharing up to ``overlap``."""
    if chunk_chars < 20:
        raise ValueError("chunk_chars must be at least 20")
    if not 0 <= overlap <= chunk_chars // 2:
        raise ValueError("overlap must be between 0 and half of chunk_chars")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    headings = [(m.start(), m.group(2).strip()) for m in _HEADING.finditer(text)]
    fences = _fenced_ranges(text)
    headings = [(pos, title) for pos, title in headings if not _inside(pos, fences)]
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    n = len(text)
    while start < n:
        limit = start + chunk_chars
        end = n if limit >= n else _best_break(text, start, limit, fences)
        piece = text[start:end].rstrip()
        if piece:
            chunks.append(
                Chunk(len(chunks), start, start + len(piece), piece, _heading_at(headings, start))
            )
        if end >= n:
            break
        after = _skip_space(text, end)
        if _HEADING.match(text, after) and not _inside(after, fences):
            start = after  # a new section starts clean: no overlap across headings
        else:
            start = _skip_space(text, _overlap_start(text, start, end, overlap))
    return chunks


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    marks = [m.start() for m in _FENCE.finditer(text)]
    return [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)]


def _inside(pos: int, ranges: list[tuple[int, int]]) -> bool:
    return any(a < pos < b for a, b in ranges)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _best_break(text: str, start: int, limit: int, fences: list[tuple[int, int]]) -> int:
    """The end of the chunk starting at ``start``: the best break in its second half."""
    lo = start + (limit - start) // 2
    window = text[lo:limit]
    for pattern in _BREAKS:
        found = [m for m in pattern.finditer(window) if not _inside(lo + m.start(), fences)]
        if not found and pattern.pattern == r"\s+":
            found = list(pattern.finditer(window))  # inside a huge code block: any space
        if found:
            return lo + found[-1].end()
    return limit  # no whitespace at all: cut


def _overlap_start(text: str, start: int, end: int, overlap: int) -> int:
    """Where the next chunk begins: at most ``overlap`` before ``end``, on a word start."""
    if overlap <= 0:
        return end
    pos = max(end - overlap, start + 1)
    # prefer a sentence start inside the overlap, else the next word start
    m = _SENTENCE_START.search(text, pos, end)
    if m is not None and m.end() < end:
        return m.end()
    while pos < end and (text[pos].isspace() or not text[pos - 1].isspace()):
        pos += 1
    return pos


def _heading_at(headings: list[tuple[int, str]], pos: int) -> str:
    title = ""
    for at, name in headings:
        if at > pos:
            break
        title = name
    return title


def read_document(path: str | Path) -> str:
    """The text of a Markdown/plain-text file or a PDF (text layer, via pypdf)."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader

        reader = PdfReader(str(file))
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)
    if suffix in TEXT_SUFFIXES or not suffix:
        return file.read_text(encoding="utf-8", errors="replace")
    raise ValueError(f"{file.name}: only Markdown, plain text and PDF can be ingested")

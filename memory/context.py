"""Fitting recalled context into a token budget.

The context the model gets before a reply is, in this order: the active project's
summary, the pinned memories, then the retrieved memories and passages, best
first. Each entry is one line; a long one is shortened to what is left; the whole
text never counts more than the budget with the counter given (the engine's own
tokenizer in the app, :func:`approx_tokens` where there is none).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TokenCounter = Callable[[str], int]

HEADER = "Long-term memory (notes from earlier; use them only where they help):"
ELLIPSIS = "…"
MIN_ENTRY_TOKENS = 12  # shorter than this, a shortened entry says nothing useful


def approx_tokens(text: str) -> int:
    """An upper-bound guess without a tokenizer: a BPE token covers ~4 bytes of English
    text, so a third of the UTF-8 bytes overcounts safely."""
    return (len(text.encode("utf-8")) + 2) // 3


def context_budget(context_tokens: int, n_ctx: int, max_tokens: int) -> int:
    """The budget for recalled context: the configured size, but never more than half
    of the prompt's share of the window (the engine keeps ``max_tokens`` for the
    reply, at most half the window)."""
    prompt_room = n_ctx - min(max_tokens, n_ctx // 2)
    return max(0, min(context_tokens, prompt_room // 2))


@dataclass(frozen=True)
class Entry:
    """One line of context: ``id`` is what the transcript shows as remembered."""

    id: str
    text: str
    label: str = ""  # e.g. "pinned", "2024-05-01", "notes.md § Setup"


@dataclass(frozen=True)
class FittedContext:
    text: str
    used_ids: tuple[str, ...]
    tokens: int
    summary_used: bool
    shortened: int  # entries cut to fit


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def shorten(text: str, max_tokens: int, count: TokenCounter) -> str:
    """The longest prefix of ``text`` (cut at a word, with an ellipsis) within ``max_tokens``."""
    if count(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix length that fits
        mid = (lo + hi + 1) // 2
        if count(text[:mid].rstrip() + ELLIPSIS) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if " " in cut[len(cut) // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return (cut.rstrip(" ,.;:") + ELLIPSIS) if cut.strip() else ""


def fit_context(
    entries: Sequence[Entry],
    budget: int,
    count: TokenCounter,
    *,
    summary: tuple[str, str] | None = None,
) -> FittedContext:
    """Lay out ``summary`` (project name, text) and ``entries`` (best first) within
    ``budget`` tokens. Entries that do not fit are left out; the best ones come first."""
    if budget <= 0 or (not entries and not (summary and summary[1].strip())):
        return FittedContext("", (), 0, False, 0)
    lines = [HEADER]
    used: list[str] = []
    shortened = 0
    summary_used = False

    def total(extra: str | None = None) -> int:
        return count("\n".join([*lines, extra] if extra is not None else lines))

    if total() > budget:
        return FittedContext("", (), 0, False, 0)
    if summary and summary[1].strip():
        name, text = summary
        line = f'Project "{name}": {one_line(text)}'
        room = budget // 2 - total() - 1
        short = shorten(line, room, count) if room >= MIN_ENTRY_TOKENS else ""
        if short:
            lines.append(short)
            summary_used = True
            shortened += short != line
    for entry in entries:
        prefix = f"- [{entry.label}] " if entry.label else "- "
        line = prefix + one_line(entry.text)
        if total(line) <= budget:
            lines.append(line)
            used.append(entry.id)
            continue
        room = budget - total() - 1  # the newline before it
        if room < MIN_ENTRY_TOKENS:
            continue  # a shorter entry further down may still fit
        short = shorten(line, room, count)
        if short and len(short) > len(prefix) + 1 and total(short) <= budget:
            lines.append(short)
            used.append(entry.id)
            shortened += 1
    if len(lines) == 1:
        return FittedContext("", (), 0, False, 0)
    text = "\n".join(lines)
    return FittedContext(text, tuple(used), count(text), summary_used, shortened)


def date_label(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


__all__ = [
    "HEADER",
    "Entry",
    "FittedContext",
    "TokenCounter",
    "approx_tokens",
    "context_budget",
    "date_label",
    "fit_context",
    "one_line",
    "shorten",
]

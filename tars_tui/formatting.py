"""Text shared by the TUI and plain mode (no Textual imports)."""

from __future__ import annotations

import datetime as dt

from memory.conversation_store import Conversation, ReplyMetrics


def metrics_line(metrics: ReplyMetrics | None, *, cancelled: bool = False) -> str:
    parts = []
    if cancelled:
        parts.append("⏹ cancelled")
    if metrics is not None:
        if metrics.ttft_ms is not None:
            parts.append(f"TTFT {metrics.ttft_ms:.0f} ms")
        if metrics.tokens_per_s:
            parts.append(f"{metrics.tokens_per_s:.0f} tok/s")
        if metrics.prompt_tokens is not None and metrics.completion_tokens is not None:
            parts.append(f"{metrics.prompt_tokens}+{metrics.completion_tokens} tokens")
    return " · ".join(parts)


def describe_conversation(conv: Conversation) -> str:
    when = dt.datetime.fromtimestamp(conv.updated_at).strftime("%Y-%m-%d %H:%M")
    return f"{conv.title or 'untitled'} · {when} · {conv.message_count} messages"

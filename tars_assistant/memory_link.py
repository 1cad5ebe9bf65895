"""Long-term memory, opened the same way by every front-end (TUI, plain mode, API)."""

from __future__ import annotations

from collections.abc import Callable

from memory.context import TokenCounter, context_budget
from memory.conversation_store import ConversationStore
from memory.service import Memory
from tars_assistant.node_link import NodeLink
from tars_core.config import Config


def open_memory(
    config: Config,
    store: ConversationStore,
    link: NodeLink,
    *,
    count_tokens: TokenCounter,
    on_pending: Callable[[int], None] | None = None,
) -> Memory | None:
    """Memory over the node ``link`` reaches, with the recall budget the model's window
    leaves; None when memory or the node is off in the config."""
    if not (config.memory.enabled and link.enabled):
        return None
    return Memory.open(
        config.memory,
        store,
        lambda: link.client,
        count_tokens=count_tokens,
        budget_tokens=context_budget(
            config.memory.context_tokens, config.llm.n_ctx, config.llm.max_tokens
        ),
        on_pending=on_pending,
    )

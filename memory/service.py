"""The memory layers wired together: one object for the app, plain mode, commands and jobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memory.context import TokenCounter, approx_tokens
from memory.conversation_store import ConversationStore
from memory.documents import DocumentIngest
from memory.memory_store import MemoryStore
from memory.project_store import ProjectStore
from memory.semantic import NodeSource, SemanticMemory
from tars_core.settings.memory import MemoryConfig


@dataclass
class Memory:
    """Conversations (SQLite), projects, semantic memory (node + outbox) and documents.

    ``node`` returns the current node client (None while there is none): the app
    passes ``lambda: link.client`` so a restarted node is picked up.
    """

    config: MemoryConfig
    conversations: ConversationStore
    store: MemoryStore
    semantic: SemanticMemory
    projects: ProjectStore
    documents: DocumentIngest

    @classmethod
    def open(
        cls,
        config: MemoryConfig,
        conversations: ConversationStore,
        node: NodeSource,
        *,
        count_tokens: TokenCounter = approx_tokens,
        budget_tokens: int | None = None,
        on_pending: Callable[[int], None] | None = None,
    ) -> Memory:
        """Open the memory tables in the conversation store's database file."""
        store = MemoryStore(conversations.path)
        projects = ProjectStore(conversations, store)
        semantic = SemanticMemory(
            store,
            node,
            config,
            count_tokens=count_tokens,
            budget_tokens=budget_tokens,
            summary_of=projects.summary_for_context,
            on_pending=on_pending,
        )
        return cls(
            config, conversations, store, semantic, projects, DocumentIngest(store, node, config)
        )

    def close(self) -> None:
        """Close the memory tables (the conversation store is its owner's to close)."""
        self.store.close()


__all__ = ["Memory"]

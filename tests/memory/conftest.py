"""Real components for the memory tests: one embedded node (a real `tars-node` child
process on a random loopback port, real MiniLM) shared by the session, the real
bundled SmolLM2, real SQLite files.

Tests sharing the node stay apart by construction: every database gets its own
random instance id, which prefixes the ids, project labels and namespaces it
puts on the node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from memory.conversation_store import Conversation, ConversationStore
from memory.service import Memory
from node_daemon.client import NodeClient
from node_daemon.local import LocalNode
from tars_assistant.llm import LLMEngine
from tars_assistant.session import ChatSession
from tars_core.config import Config, load_config
from tars_core.settings.memory import MemoryConfig
from tars_tui.commands import Style
from tars_tui.commands.memory import View


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """The embedded node, started once. Its environment is made here, before any
    test's own isolation: no TARS_* overrides, XDG dirs of its own, an empty config."""
    root = tmp_path_factory.mktemp("memory-node")
    config = root / "node.toml"
    config.write_text("", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        for var in [v for v in os.environ if v.startswith("TARS_")]:
            mp.delenv(var)
        for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                         ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):  # fmt: skip
            (root / sub).mkdir()
            mp.setenv(var, str(root / sub))
        local = LocalNode(root / "node", config_path=config)
        local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
async def client(node: LocalNode) -> AsyncIterator[NodeClient]:
    if not node.alive():  # a test that stopped it failed before starting it again
        await asyncio.to_thread(node.start)
    c = NodeClient(node.endpoint, timeout_s=3.0, retries=2)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = load_config(env={})
    return dataclasses.replace(
        base,
        llm=dataclasses.replace(base.llm, n_ctx=1024, max_tokens=40, seed=1, temperature=0.0),
        storage=dataclasses.replace(base.storage, data_dir=str(tmp_path / "data")),
    )


@pytest.fixture(scope="session")
def engine() -> Iterator[LLMEngine]:
    """The bundled SmolLM2, loaded once (short replies keep the tests quick)."""
    base = load_config(env={})
    cfg = dataclasses.replace(base.llm, n_ctx=1024, max_tokens=40, seed=1, temperature=0.0)
    llm = LLMEngine(cfg)
    llm.load()
    try:
        yield llm
    finally:
        llm.close()


@pytest.fixture
def conversations(config: Config) -> Iterator[ConversationStore]:
    store = ConversationStore(config.data_dir / "tars.db")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def mem_config() -> MemoryConfig:
    return MemoryConfig()


@pytest.fixture
def memory(
    conversations: ConversationStore, client: NodeClient, mem_config: MemoryConfig
) -> Iterator[Memory]:
    mem = Memory.open(mem_config, conversations, lambda: client)
    try:
        yield mem
    finally:
        mem.close()


@pytest.fixture
def session(config: Config, engine: LLMEngine, conversations: ConversationStore) -> ChatSession:
    return ChatSession(config, engine, conversations)


class Host:
    """A front end for the memory commands, as plain mode is one: notes are recorded,
    async jobs run in the test's loop (``await host.settle()``), views are declined
    unless ``screens`` is set."""

    def __init__(self, session: ChatSession, memory: Memory | None, screens: bool = False) -> None:
        self.session = session
        self.memory = memory
        self.screens = screens
        self.said: list[tuple[str, str]] = []
        self.views: list[View] = []
        self.jobs: list[asyncio.Task[None]] = []
        self.reloads = 0
        self.chosen: list[Conversation] | None = None

    def say(self, text: str, style: Style = "info") -> None:
        self.said.append((style, text))

    def clear_view(self) -> None:
        pass

    def reload_view(self) -> None:
        self.reloads += 1

    def focus_message(self, message_id: int) -> None:
        self.focused = message_id

    def choose_conversation(self, conversations: list[Conversation]) -> None:
        self.chosen = conversations

    def switch_model(self, target: Path | str) -> None:
        pass

    def in_background(self, job: Callable[[], str]) -> None:
        self.say(job(), "markdown")

    def quit(self) -> None:
        pass

    def run_async(self, job: Coroutine[Any, Any, None], name: str) -> None:
        self.jobs.append(asyncio.ensure_future(job))

    def show_view(self, view: View) -> bool:
        self.views.append(view)
        return self.screens

    async def settle(self) -> None:
        while self.jobs:
            job = self.jobs.pop(0)
            await job

    def text(self) -> str:
        return "\n".join(text for _, text in self.said)

    def last(self) -> str:
        return self.said[-1][1] if self.said else ""

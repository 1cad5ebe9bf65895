"""Semantic memory end to end: real node, real SmolLM2, real SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from memory.context import context_budget
from memory.conversation_store import ConversationStore
from memory.loop import LoopThread
from memory.service import Memory
from node_daemon.client import NodeClient
from node_daemon.local import LocalNode
from tars_assistant.llm import LLMEngine
from tars_assistant.session import ChatSession
from tars_core.settings.memory import MemoryConfig

pytestmark = pytest.mark.slow


class StreamSpy:
    """Records the system prompt of every reply, then lets the real engine answer."""

    def __init__(self, engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.systems: list[str] = []
        real = engine.stream

        def stream(system: str, history: Sequence[Any], **kw: Any) -> Iterator[str]:
            self.systems.append(system)
            return real(system, history, **kw)

        monkeypatch.setattr(engine, "stream", stream)


def turn(session: ChatSession, memory: Memory, text: str, context: str = "") -> int:
    """One real turn, remembered as the chat screen does after a complete reply."""
    result = session.run_turn(text, context=context)
    assert not result.cancelled
    assert session.conversation is not None
    if result.text.strip():
        memory.semantic.remember_exchange(
            text,
            result.text,
            project_id=session.project_id,
            conversation_id=session.conversation.id,
            message_id=result.message_id,
        )
    return result.message_id


async def test_a_fact_is_recalled_in_its_project_and_not_in_another_unless_global(
    memory: Memory, session: ChatSession, engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    projects = memory.projects
    garden = projects.create("garden")
    work = projects.create("work")
    session.switch_project(garden.id)
    reply_id = turn(session, memory, "My sister Beatrix lives in Porto and grows lemons there.")
    global_fact = memory.semantic.remember(
        "I am allergic to penicillin.", project_id=None
    )  # /remember --global
    report = await memory.semantic.flush()
    assert report.error is None and report.pending == 0
    exchange_id = memory.store.exchange_id(reply_id)
    assert list(report.sent) == [exchange_id, global_fact.id]

    # A new conversation of the same project: the fact is recalled and given to the model.
    session.new_conversation()
    question = "Which city is my sibling based in?"
    recall = await memory.semantic.recall(question, garden.id)
    assert recall.error is None
    assert exchange_id in recall.used_ids
    assert "Porto" in recall.context_text
    assert recall.latency_ms > 0 and recall.stages == {"retrieval_ms": recall.latency_ms}
    assert memory.store.short_id(exchange_id) in recall.summary_line()
    spy = StreamSpy(engine, monkeypatch)
    result = session.run_turn(question, context=recall.context_text, stages=recall.stages)
    assert "Porto" in spy.systems[-1]
    assert result.metrics is not None and result.metrics.stages["retrieval_ms"] > 0
    assert session.latency.values("retrieval_ms")

    # Another project: not that fact; the global one everywhere.
    session.switch_project(work.id)
    elsewhere = await memory.semantic.recall(question, work.id)
    assert exchange_id not in {m.id for m in elsewhere.memories}
    assert "Porto" not in elsewhere.context_text
    medicine = await memory.semantic.recall("Which medicine should I never be given?", work.id)
    assert global_fact.id in medicine.used_ids
    assert "penicillin" in medicine.context_text


async def test_nothing_is_remembered_for_a_cancelled_or_empty_reply(
    memory: Memory, session: ChatSession
) -> None:
    result = session.run_turn("Tell me a long story about boats.", should_stop=lambda: True)
    assert result.cancelled
    # The chat screen only calls remember_exchange for complete replies; an empty one
    # is refused here too.
    assert session.conversation is not None
    none = memory.semantic.remember_exchange(
        "hello", "   ", project_id=1, conversation_id=session.conversation.id, message_id=99
    )
    assert none is None and memory.semantic.pending_count() == 0


async def test_outbox_waits_while_the_node_is_down_then_delivers_in_order_exactly_once(
    node: LocalNode,
    conversations: ConversationStore,
    client: NodeClient,
    mem_config: MemoryConfig,
) -> None:
    # Short timeouts: the node is down for part of this test.
    quick = NodeClient(node.endpoint, timeout_s=0.5, retries=1)
    memory = Memory.open(mem_config, conversations, lambda: quick)
    conv = conversations.create_conversation()
    await asyncio.to_thread(node.stop)
    try:
        expected = []
        for i in range(3):
            conversations.add_message(conv, "user", f"question {i} about the tide tables")
            mid = conversations.add_message(conv, "assistant", f"answer {i}: high tide at {i}pm")
            record = memory.semantic.remember_exchange(
                f"question {i} about the tide tables",
                f"answer {i}: high tide at {i}pm",
                project_id=1,
                conversation_id=conv,
                message_id=mid,
            )
            assert record is not None
            expected.append(record.id)
            fact = memory.semantic.remember(f"fact number {i}: the boat is blue", project_id=None)
            expected.append(fact.id)
        assert memory.semantic.pending_count() == 6

        down = await memory.semantic.flush()
        assert down.sent == () and down.pending == 6 and down.error
        t0 = time.perf_counter()
        recall = await memory.semantic.recall("when is high tide?", 1)
        assert recall.error is not None and recall.context_text == ""
        assert time.perf_counter() - t0 < mem_config.recall_timeout_s + 1.0

        # Durable: a restarted TARS finds them waiting.
        memory.close()
        memory = Memory.open(mem_config, conversations, lambda: quick)
        assert memory.semantic.pending_count() == 6
    finally:
        await asyncio.to_thread(node.start)  # same port: the client reconnects

    up = await memory.semantic.flush()
    assert up.error is None and up.pending == 0
    assert list(up.sent) == expected  # in order, each once
    again = await memory.semantic.flush()
    assert again.sent == ()
    got = await client.get(expected)
    assert got["missing"] == [] and [it["id"] for it in got["items"]] == expected
    assert await client.count(namespace=memory.store.memory_namespace) == 6
    memory.close()
    quick.close()


async def test_the_delivery_loop_delivers_when_kicked(memory: Memory) -> None:
    task = asyncio.create_task(memory.semantic.run_delivery(idle_s=60.0))
    try:
        record = memory.semantic.remember(
            "The spare key is under the blue flowerpot.", project_id=1
        )
        for _ in range(200):
            if memory.semantic.pending_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert memory.semantic.pending_count() == 0
        assert memory.store.get_memory(record.id).delivered_at is not None  # type: ignore[union-attr]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_context_never_exceeds_the_budget_or_n_ctx(
    memory: Memory,
    session: ChatSession,
    engine: LLMEngine,
    conversations: ConversationStore,
) -> None:
    project = memory.projects.create("boats")
    conversations.set_project_summary(project.id, "A long summary of the boat project. " * 80)
    for i in range(25):
        text = f"Boat fact {i}: the hull of boat number {i} was painted " + "deep red " * 40
        memory.semantic.remember(text, project_id=project.id)
    memory.semantic.pin(memory.store.list_memories(project.id, limit=1)[0].id)
    assert (await memory.semantic.flush()).pending == 0

    n_ctx, max_tokens = engine.cfg.n_ctx, engine.cfg.max_tokens
    for budget in (0, 40, 150, context_budget(10_000, n_ctx, max_tokens)):
        memory.semantic.count_tokens = engine.count_tokens
        recall = await memory.semantic.recall(
            "what colour is the boat hull?", project.id, budget_tokens=budget, k=20
        )
        assert recall.context_tokens <= budget
        assert engine.count_tokens(recall.context_text) <= budget
        if budget >= 150:
            assert recall.used_ids and recall.summary_used
    assert context_budget(10_000, n_ctx, max_tokens) <= (n_ctx - max_tokens) // 2

    # The biggest context the app allows, with a long conversation: the prompt and
    # the reply still fit the window.
    session.switch_project(project.id)
    budget = context_budget(10_000, n_ctx, max_tokens)
    for i in range(2):
        recall = await memory.semantic.recall(
            f"tell me about boat {i}", project.id, budget_tokens=budget
        )
        result = session.run_turn(
            f"Tell me everything about boat {i}. " + "Please be detailed. " * 30,
            context=recall.context_text,
            stages=recall.stages,
        )
        assert result.metrics is not None
        assert result.metrics.prompt_tokens is not None
        assert result.metrics.completion_tokens is not None
        assert result.metrics.prompt_tokens + result.metrics.completion_tokens <= n_ctx


def test_plain_mode_drives_memory_through_a_loop_thread(
    node: LocalNode, conversations: ConversationStore, mem_config: MemoryConfig
) -> None:
    """No running loop (plain mode, CLIs): one LoopThread owns the node client."""
    if not node.alive():
        node.start()
    with LoopThread() as loop:
        client = NodeClient(node.endpoint, timeout_s=3.0)
        memory = Memory.open(mem_config, conversations, lambda: client)
        delivery = loop.submit(memory.semantic.run_delivery(idle_s=60.0))
        fact = memory.semantic.remember("My cat is called Miso.", project_id=1)  # main thread
        deadline = time.monotonic() + 20
        while memory.semantic.pending_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert memory.semantic.pending_count() == 0
        recall = loop.run(memory.semantic.recall("What is my pet's name?", 1), timeout=10)
        assert fact.id in recall.used_ids
        delivery.cancel()

        async def close() -> None:
            client.close()

        loop.run(close(), timeout=5)
        memory.close()

"""Project summaries by the real model, and the maintenance jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from memory.conversation_store import ConversationStore
from memory.jobs import run_jobs
from memory.project_store import llm_summarizer
from memory.service import Memory
from node_daemon.local import LocalNode
from tars_assistant.jobs import jobs_main
from tars_assistant.llm import LLMEngine
from tars_assistant.session import ChatSession
from tars_core.config import Config
from tars_tui import commands

from .conftest import Host

pytestmark = pytest.mark.slow


def chat(conversations: ConversationStore, project_id: int, turns: list[tuple[str, str]]) -> int:
    conv = conversations.create_conversation(project_id)
    for user, reply in turns:
        conversations.add_message(conv, "user", user)
        conversations.add_message(conv, "assistant", reply)
    return conv


async def test_summaries_are_written_by_the_model_stored_dated_and_shown(
    memory: Memory, session: ChatSession, conversations: ConversationStore
) -> None:
    garden = memory.projects.create("garden", "The back garden makeover")
    session.switch_project(garden.id)
    session.run_turn("I want to plant a copper beech hedge along the back fence.")
    session.run_turn("We also decided to build two raised beds from larch sleepers.")
    assert [p.id for p in memory.projects.needing_summary()] == [garden.id]

    host = Host(session, memory)
    before = time.time()
    commands.dispatch(host, "/projects summarize")
    await host.settle()
    project = memory.projects.get(garden.id)
    assert project.summary and project.summary_at is not None and project.summary_at >= before
    assert host.last() == f"**garden** — {project.summary}"
    assert memory.projects.needing_summary() == []

    commands.dispatch(host, "/projects show garden")
    shown = host.last()
    assert "### garden" in shown and project.summary in shown and "**Summary (" in shown
    assert "The back garden makeover" in shown and "**Conversations:**" in shown

    # The model sees the active project's summary with the recalled memories.
    recall = await memory.semantic.recall("what should I plant?", garden.id)
    assert recall.summary_used and 'Project "garden":' in recall.context_text
    assert "project summary" in recall.summary_line()


async def test_jobs_flush_merge_compact_and_summarise(
    memory: Memory, conversations: ConversationStore, engine: LLMEngine
) -> None:
    older = memory.semantic.remember(
        "The wifi password for the guest room is hunter2.", project_id=1
    )
    memory.semantic.pin(older.id)
    await asyncio.sleep(0.01)
    newer = memory.semantic.remember(
        "The wifi password for the guest room is hunter2!", project_id=1
    )
    other = memory.semantic.remember("The boiler is serviced every October.", project_id=1)
    elsewhere = memory.projects.create("cabin")
    twin = memory.semantic.remember(  # the same text in another scope is not a duplicate
        "The wifi password for the guest room is hunter2.", project_id=elsewhere.id
    )
    chat(conversations, 1, [("Remind me: the boiler service is in October.", "Noted.")])

    lines: list[str] = []
    reports = await run_jobs(
        memory,
        make_summarizer=lambda: llm_summarizer(engine, 60),
        on_report=lambda r: lines.append(r.line()),
    )
    assert [(r.name, r.ok) for r in reports] == [
        ("flush", True),
        ("merge", True),
        ("compact", True),
        ("summaries", True),
    ], lines
    assert "4 delivered" in reports[0].detail
    assert "1 merged" in reports[1].detail

    merged = memory.store.get_memory(older.id)
    assert merged is not None and merged.merged_into == newer.id
    assert merged.merge_score is not None and merged.merge_score >= memory.config.merge_threshold
    kept = memory.store.get_memory(newer.id)
    assert kept is not None and kept.pinned and kept.active  # the pin moved to the kept one
    assert memory.store.get_memory(other.id).active  # type: ignore[union-attr]
    assert memory.store.get_memory(twin.id).active  # type: ignore[union-attr]
    client = memory.semantic.node()
    assert client is not None
    assert (await client.get([older.id, newer.id]))["missing"] == [older.id]
    assert memory.projects.get(1).summary

    again = await run_jobs(memory, make_summarizer=lambda: llm_summarizer(engine, 60))
    assert all(r.ok for r in again)
    assert again[1].detail.startswith("0 new memories compared")
    assert again[3].detail == "no project has new conversations"


async def test_a_failing_job_does_not_stop_the_others(memory: Memory) -> None:
    memory.semantic.remember("something to deliver", project_id=1)
    memory.semantic.node = lambda: None  # the node is gone
    reports = await run_jobs(memory, make_summarizer=None)
    assert [(r.name, r.ok) for r in reports] == [
        ("flush", False),
        ("merge", False),
        ("compact", False),
        ("summaries", True),
    ]
    assert "1 still waiting" in reports[0].detail
    assert "not connected" in reports[2].detail


def test_tars_jobs_run_prints_a_line_per_job(config: Config, node: LocalNode) -> None:
    if not node.alive():
        node.start()
    cfg = dataclasses.replace(config, node=dataclasses.replace(config.node, endpoint=node.endpoint))
    with ConversationStore(cfg.data_dir / "tars.db") as store:
        chat(store, 1, [("We are planning a trip to Lisbon in May.", "Lovely!")])
    out: list[str] = []
    assert jobs_main(cfg, out=out.append) == 0, out
    assert [line.split()[0] for line in out] == ["flush", "merge", "compact", "summaries"]
    assert all(" ok " in line for line in out)
    with ConversationStore(cfg.data_dir / "tars.db") as store:
        assert store.get_project(1).summary  # type: ignore[union-attr]

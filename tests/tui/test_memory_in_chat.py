"""Long-term memory in the chat screen: recall before a reply, remember after it,
and what happens while the node cannot be reached. Real daemon, model, SQLite."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from tars_core.config import Config
from tars_tui.app import TarsApp, make_app
from tars_tui.widgets.transcript import AssistantMessage, Note, Remembered

from .conftest import type_text, wait_until

SIZE = (120, 40)


def with_node(config: Config, endpoint: str) -> Config:
    return dataclasses.replace(
        config, node=dataclasses.replace(config.node, endpoint=endpoint, timeout_s=0.5, retries=1)
    )


def notes(app: TarsApp) -> list[str]:
    assert app.chat is not None
    return [str(n.render()) for n in app.chat.query(Note)]


def status(app: TarsApp) -> str:
    assert app.chat is not None
    return str(app.chat.query_one("#status").render())


@pytest.mark.slow
async def test_a_remembered_fact_is_recalled_and_exchanges_are_remembered(
    config: Config,
) -> None:
    app = make_app(with_node(config, "auto"))
    async with app.run_test(size=SIZE) as pilot:
        assert app.memory is not None and app.chat is not None
        await wait_until(
            pilot,
            lambda: app.node.state == "local" and app.engine.is_ready,
            timeout=120,
            what="the node and the model",
        )
        await type_text(pilot, "/remember My sister Aurelia lives in Lisbon.")
        await pilot.press("enter")
        semantic = app.memory.semantic
        await wait_until(
            pilot,
            lambda: semantic.pending_count() == 0,
            timeout=30,
            what="the fact to reach the node",
        )

        app.chat.send("Where does my sister live?")
        await wait_until(pilot, lambda: not app.chat.generating, what="the reply")  # type: ignore[union-attr]
        remembered = list(app.chat.query(Remembered))
        assert remembered, "the reply shows what it remembered"
        assert "remembered" in str(remembered[-1].title)
        assert "Aurelia" in remembered[-1].query_one("MarkdownNote").source  # type: ignore[attr-defined]
        # Retrieval is its own latency stage, stored with the reply.
        assert app.session.latency.last("retrieval_ms") is not None
        conv = app.session.conversation
        assert conv is not None
        reply = app.store.messages(conv.id)[-1]
        assert reply.metrics is not None and "retrieval_ms" in reply.metrics.stages
        # The exchange itself became a memory of the active project, delivered.
        await wait_until(
            pilot,
            lambda: semantic.pending_count() == 0,
            timeout=30,
            what="the exchange to reach the node",
        )
        records = app.memory.store.list_memories(app.session.project_id)
        assert sorted(m.kind for m in records) == ["exchange", "fact"]
        # /history @ID reopens a conversation at that message, highlighted in view.
        question = app.store.messages(conv.id)[-2]
        app.chat.run_command("/new")
        await pilot.pause()
        app.chat.run_command(f"/history @{question.id}")
        await wait_until(
            pilot,
            lambda: bool(app.chat.query(".-found")),  # type: ignore[union-attr]
            what="the found message",
        )
        found = app.chat.query_one(".-found")
        assert "Where does my sister live?" in str(found.render())
        assert app.session.conversation is not None and app.session.conversation.id == conv.id
        exchange = next(m for m in records if m.kind == "exchange")
        assert "Where does my sister live?" in exchange.text
        assert exchange.conversation_id == conv.id and exchange.delivered_at is not None


async def test_unreachable_node_reply_still_comes_and_memories_wait(config: Config) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(with_node(config, f"tcp://127.0.0.1:{port}"))
    async with app.run_test(size=SIZE) as pilot:
        assert app.memory is not None and app.chat is not None
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        app.chat.send("Hello, who are you?")
        await wait_until(pilot, lambda: not app.chat.generating, timeout=60, what="the reply")  # type: ignore[union-attr]
        assert list(app.chat.query(AssistantMessage))[-1].text.strip()
        assert any("Long-term memory is unavailable" in n for n in notes(app))
        # The exchange waits in the durable outbox, and the status line says so.
        assert app.memory.semantic.pending_count() == 1
        await wait_until(
            pilot,
            lambda: "1 memories waiting for the node" in status(app),
            what="the outbox count in the status line",
        )

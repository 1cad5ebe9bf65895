"""`/projects summarize` never makes a chat reply wait: the summary stops for the reply
and is written after it. Real app, real SmolLM2 in its child process, real SQLite."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from collections.abc import Iterator

import pytest

from memory.migrations import DEFAULT_PROJECT_NAME
from tars_assistant.llm_process import ProcessEngine
from tars_core.config import Config
from tars_tui.app import make_app
from tars_tui.messages import ReplyChunk, ReplyFinished
from tars_tui.widgets.transcript import MarkdownNote

from .conftest import wait_until
from .test_chat_app import SIZE, chat


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port nothing answers on: memory is on, the node is down (the
    summary needs no node, and the reply goes on without memory)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield sock.getsockname()[1]


async def test_a_prompt_sent_during_a_summary_is_answered_first(
    config: Config, silent_port: int
) -> None:
    config = dataclasses.replace(
        config,
        node=dataclasses.replace(
            config.node, endpoint=f"tcp://127.0.0.1:{silent_port}", timeout_s=0.3, retries=1
        ),
    )
    app = make_app(config)
    store = app.store
    project = store.default_project()
    conv = store.create_conversation(project_id=project.id)
    store.add_message(conv, "user", "We are building a garden shed from pine wood.")
    store.add_message(conv, "assistant", "Pine is light and cheap; treat it against rot.")
    assert app.memory is not None

    events: list[tuple[str, str]] = []  # (what, the project's summary at that moment)

    def hook(message: object) -> None:  # runs where the message is posted
        if isinstance(message, ReplyChunk | ReplyFinished):
            summary = store.get_project(project.id).summary  # type: ignore[union-attr]
            events.append((type(message).__name__, summary))

    gate = app.session.model_gate
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        engine = app.engine.current  # behind the model router
        assert isinstance(engine, ProcessEngine)
        await wait_until(pilot, lambda: engine.is_ready, what="model load")
        screen = chat(app)
        pid = engine.child_pid
        assert pid is not None
        # Fault injection: the model stalls, so the summary is surely still being
        # written when the prompt arrives, however fast the machine.
        os.kill(pid, signal.SIGSTOP)
        try:
            screen.run_command("/projects summarize")
            await wait_until(
                pilot, lambda: gate.background_running, what="the summary to take the model"
            )
            screen.send("What is pine wood?")
            assert gate.claimed  # from the moment it is sent
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_until(pilot, lambda: not screen.generating, what="the reply")
        await wait_until(
            pilot,
            lambda: bool(store.get_project(project.id).summary),  # type: ignore[union-attr]
            what="the summary to be written after the reply",
        )
        await pilot.pause()
        notes = [n.source for n in screen.query(MarkdownNote)]
        written = store.get_project(project.id)

    names = [name for name, _ in events]
    assert names[0] == "ReplyChunk" and names[-1] == "ReplyFinished"
    # The reply streamed and finished while the summary was still unwritten.
    assert all(summary == "" for _, summary in events), events
    assert gate.preemptions == 1  # stopped once for the reply, then run again
    assert written is not None and written.name == DEFAULT_PROJECT_NAME
    assert written.summary.strip()
    assert f"**{DEFAULT_PROJECT_NAME}** — {written.summary}" in notes

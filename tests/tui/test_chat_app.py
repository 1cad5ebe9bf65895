"""Pilot tests: the real app, the real model, real SQLite."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from textual.widgets import OptionList

from memory.conversation_store import DEFAULT_PROJECT_NAME, ConversationStore
from tars_assistant import model_memory
from tars_assistant.llm_process import ProcessEngine
from tars_core.config import Config
from tars_tui.app import TarsApp, make_app
from tars_tui.messages import ReplyChunk
from tars_tui.screens.chat import ChatScreen, StatusLine
from tars_tui.screens.history import HistoryScreen
from tars_tui.widgets.prompt import CompletionList, PromptInput
from tars_tui.widgets.transcript import (
    AssistantMessage,
    MarkdownNote,
    Note,
    UserMessage,
)

from .conftest import type_text, wait_until

SIZE = (120, 40)


def chat(app: TarsApp) -> ChatScreen:
    assert app.chat is not None
    return app.chat


def notes(app: TarsApp) -> list[str]:
    return [str(n.render()) for n in chat(app).query(Note)]


async def send(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    """Type short inputs key by key; paste long ones (paths), as a user would."""
    if len(text) <= 24:
        await type_text(pilot, text)
    else:
        pilot.app.screen.query_one(PromptInput).insert(text)
        await pilot.pause()
    await pilot.press("enter")


async def settle(pilot, app: TarsApp) -> None:  # type: ignore[no-untyped-def]
    await wait_until(pilot, lambda: not chat(app).generating, what="the reply to finish")
    await pilot.pause()


async def test_question_streams_a_reply_that_is_stored(config: Config) -> None:
    messages: list[object] = []
    app = make_app(config)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        await send(pilot, "What is a cat?")
        await settle(pilot, app)
        screen = chat(app)
        users = list(screen.query(UserMessage))
        replies = list(screen.query(AssistantMessage))
        assert [str(u.render()) for u in users] == ["What is a cat?"]
        assert len(replies) == 1 and replies[0].text.strip()
        # A chunk bubbles from the screen to the app: the hook sees it at each.
        chunks = list({id(m): m for m in messages if isinstance(m, ReplyChunk)}.values())
        assert chunks, "tokens arrive as batched chunks"
        assert "TTFT" in str(replies[0].meta.render())
        stored = app.store.messages(app.session.conversation.id)  # type: ignore[union-attr]
        assert [(m.role, m.status) for m in stored] == [
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        assert stored[1].text == replies[0].text
        assert stored[1].metrics is not None and stored[1].metrics.completion_tokens
        # Repaints are batched: far fewer chunks than tokens for a fast model.
        assert len(chunks) <= stored[1].metrics.completion_tokens
        assert app.session.latency.last("ttft_ms") == stored[1].metrics.ttft_ms


async def test_escape_cancels_mid_reply_and_keeps_the_text(config: Config) -> None:
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, max_tokens=400))
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        await send(pilot, "Write a long story about the sea.")
        screen = chat(app)
        await wait_until(
            pilot,
            lambda: screen._reply is not None and len(screen._reply.text) > 5,
            what="the first tokens",
        )
        await pilot.press("escape")
        await settle(pilot, app)
        reply = list(screen.query(AssistantMessage))[-1]
        assert reply.has_class("-cancelled")
        assert "cancelled" in str(reply.meta.render())
        stored = app.store.messages(app.session.conversation.id)[-1]  # type: ignore[union-attr]
        assert stored.status == "cancelled"
        assert stored.text == reply.text and stored.text
        assert stored.metrics is not None and stored.metrics.completion_tokens < 400


async def test_prompt_sent_while_the_model_loads_waits_then_answers(config: Config) -> None:
    release = threading.Event()

    class SlowLoadingEngine(ProcessEngine):
        """Fault injection: model loading that takes as long as the test wants."""

        def load(self, path: Path | None = None) -> Path:
            release.wait(30)
            return super().load(path)

    app = make_app(config, engine=SlowLoadingEngine(config.llm))
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        assert not app.engine.is_ready  # the first frame came before the model
        assert "loading" in str(screen.query_one(StatusLine).render())
        await send(pilot, "Hello there")
        await pilot.pause(0.3)
        assert screen.generating and not app.engine.is_ready
        assert "waiting for the model" in str(screen.query_one(StatusLine).render())
        release.set()
        await settle(pilot, app)
        reply = list(screen.query(AssistantMessage))[-1]
        assert reply.text.strip() and not reply.has_class("-error")


async def test_slash_commands_new_history_export_unknown(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        await send(pilot, "First conversation")
        await settle(pilot, app)
        first_id = app.session.conversation.id  # type: ignore[union-attr]

        await send(pilot, "/export out/chat.md")
        await pilot.pause()
        exported = (tmp_path / "out" / "chat.md").read_text()
        assert "First conversation" in exported
        assert any("Exported to" in n for n in notes(app))

        await send(pilot, "/new")
        await pilot.pause()
        assert app.session.conversation is None
        assert not list(chat(app).query(UserMessage))
        await send(pilot, "Second conversation")
        await settle(pilot, app)
        assert app.session.conversation.id != first_id  # type: ignore[union-attr]

        await send(pilot, "/history")
        await pilot.pause()
        assert isinstance(app.screen, HistoryScreen)
        options = app.screen.query_one(OptionList)
        assert options.option_count == 2
        await pilot.press("down", "enter")  # the older one
        await pilot.pause()
        assert app.session.conversation.id == first_id  # type: ignore[union-attr]
        await wait_until(
            pilot,
            lambda: (
                [str(u.render()) for u in chat(app).query(UserMessage)] == ["First conversation"]
            ),
            what="the reopened transcript",
        )

        await send(pilot, "/history 1")
        await pilot.pause()
        assert app.session.conversation.id != first_id  # type: ignore[union-attr]

        await send(pilot, "/frobnicate now")
        await send(pilot, "/history 99")
        await pilot.pause()
        texts = notes(app)
        assert any(t.startswith("Unknown command /frobnicate") for t in texts)
        assert any("Usage: /history" in t for t in texts)


async def test_model_with_a_bad_path_answers_with_usage(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake.gguf").write_text("not a model")
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        before = app.engine.model_path
        await send(pilot, f"/model {tmp_path / 'missing.gguf'}")
        await send(pilot, f"/model {tmp_path / 'fake.gguf'}")
        await pilot.pause()
        texts = notes(app)
        assert any("model file not found" in t and "Usage: /model" in t for t in texts)
        assert any("not a GGUF model file" in t for t in texts)
        assert app.engine.model_path == before
        await send(pilot, "/model")
        await pilot.pause()
        listing = list(chat(app).query(MarkdownNote))[-1]
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in listing.source
        assert f"needs at n_ctx {config.llm.n_ctx}" in listing.source and "MiB" in listing.source
        # A machine with 64 MiB free: switching is refused up front, saying what is missing.
        tight = model_memory.FreeMemory(ram_bytes=64 * 2**20, vram_bytes=None)
        monkeypatch.setattr(model_memory, "free_memory", lambda: tight)
        await send(pilot, f"/model {before}")
        await pilot.pause()
        assert any("Usage: /model" in t and "MiB missing" in t for t in notes(app))
        assert app.engine.model_path == before and app.engine.is_ready


async def test_help_lists_the_registry_and_completion_offers_commands(config: Config) -> None:
    from tars_tui.commands import REGISTRY

    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "/hi")
        completions = chat(app).query_one(CompletionList)
        assert completions.has_class("-open") and completions.option_count == 1
        await pilot.press("tab")
        assert chat(app).query_one(PromptInput).text == "/history "
        chat(app).query_one(PromptInput).clear()
        await send(pilot, "/help")
        await pilot.pause()
        table = list(chat(app).query(MarkdownNote))[-1].source
        for name in REGISTRY:
            assert f"/{name}" in table


async def test_prompt_history_on_up_and_down(config: Config) -> None:
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "/stats")
        await send(pilot, "/help")
        prompt = chat(app).query_one(PromptInput)
        await type_text(pilot, "draft")
        await pilot.press("up")
        assert prompt.text == "/help"
        await pilot.press("up")
        assert prompt.text == "/stats"
        await pilot.press("down", "down")
        assert prompt.text == "draft"


async def test_restart_reopens_the_last_conversation(config: Config) -> None:
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        await send(pilot, "Remember this turn")
        await settle(pilot, app)
        reply_text = list(chat(app).query(AssistantMessage))[-1].text

    again = make_app(config)
    async with again.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot,
            lambda: bool(list(chat(again).query(AssistantMessage))),
            what="the reopened conversation",
        )
        assert [str(u.render()) for u in chat(again).query(UserMessage)] == ["Remember this turn"]
        assert list(chat(again).query(AssistantMessage))[-1].text == reply_text
        # The header names the model, the project and the conversation.
        assert chat(again).sub_title == (
            f"SmolLM2-135M-Instruct.Q4_1.gguf · {DEFAULT_PROJECT_NAME} · Remember this turn"
        )


async def test_interrupted_reply_is_shown_as_cancelled_after_restart(config: Config) -> None:
    """A reply left 'streaming' by a crash (see the store's kill -9 test) reopens cancelled."""
    db = config.data_dir / "tars.db"
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from memory.conversation_store import ConversationStore\n"
        f"s = ConversationStore(Path({str(db)!r}))\n"
        "c = s.create_conversation(model='m')\n"
        "s.add_message(c, 'user', 'tell me a story', model='m')\n"
        "r = s.begin_reply(c, 'm')\n"
        "s.checkpoint_reply(r, 'Once upon a time')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    assert proc.returncode == -9
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot,
            lambda: bool(list(chat(app).query(AssistantMessage))),
            what="the reopened conversation",
        )
        reply = list(chat(app).query(AssistantMessage))[-1]
        assert reply.text == "Once upon a time" and reply.has_class("-cancelled")


async def test_store_is_closed_on_exit(config: Config) -> None:
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+q")
    # The file is released: another store opens it and sees a consistent schema.
    with ConversationStore(config.data_dir / "tars.db") as store:
        assert store.schema_version() >= 1


async def test_code_blocks_are_highlighted_and_copyable(config: Config) -> None:
    store = ConversationStore(config.data_dir / "tars.db")
    conv = store.create_conversation(model="m")
    store.add_message(conv, "user", "Reverse a string in Python", model="m")
    store.add_message(conv, "assistant", "Use a slice:\n\n```python\ns[::-1]\n```\n", model="m")
    app = make_app(config, store=store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot, lambda: bool(list(chat(app).query(AssistantMessage))), what="the conversation"
        )
        from tars_tui.widgets.transcript import CopyableFence

        fence = chat(app).query_one(CopyableFence)
        assert fence.lexer == "python"
        await pilot.press("f3")
        assert app.clipboard == "s[::-1]"
        app.copy_to_clipboard("")
        await pilot.click(CopyableFence)
        assert app.clipboard == "s[::-1]"

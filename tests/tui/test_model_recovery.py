"""The model's process dies (a real kill -9 of the real child): the TUI says so, loads
the model again by itself, keeps the reply that was streaming marked interrupted, and
answers the next prompt. Real app, real SmolLM2, real SQLite."""

from __future__ import annotations

import dataclasses
import os
import signal

from tars_assistant.llm_process import ProcessEngine
from tars_core.config import Config
from tars_tui.app import TarsApp, make_app
from tars_tui.messages import ModelDied, ModelLoaded, ReplyInterrupted
from tars_tui.widgets.transcript import AssistantMessage

from .conftest import wait_until
from .test_chat_app import SIZE, chat, notes, send, settle


def engine_of(app: TarsApp) -> ProcessEngine:
    assert isinstance(app.engine.current, ProcessEngine)  # behind the model router
    return app.engine.current


async def test_kill_9_mid_reply_keeps_it_interrupted_reloads_and_answers_next(
    config: Config,
) -> None:
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, max_tokens=400))
    messages: list[object] = []
    app = make_app(config)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        engine = engine_of(app)
        await wait_until(pilot, lambda: engine.is_ready, what="model load")
        first_pid = engine.child_pid
        assert first_pid is not None
        await send(pilot, "Write a long story about the sea.")
        screen = chat(app)
        await wait_until(
            pilot,
            lambda: screen._reply is not None and len(screen._reply.text) > 5,
            what="the first tokens",
        )
        os.kill(first_pid, signal.SIGKILL)

        # Nobody touches anything: the app notices, says so and reloads.
        await wait_until(
            pilot,
            lambda: any(isinstance(m, ModelLoaded) and m.reloaded for m in messages),
            what="the model to be reloaded",
        )
        await wait_until(pilot, lambda: not screen.generating, what="the turn to end")
        assert engine.is_ready and engine.child_pid not in (None, first_pid)
        kinds = [type(m) for m in messages if isinstance(m, ModelDied | ModelLoaded)]
        assert kinds[-2:] == [ModelDied, ModelLoaded]  # said, then reloaded
        assert sum(isinstance(m, ModelDied) for m in messages) == 1
        said = notes(app)
        assert any("The model process died (killed by SIGKILL); reloading" in n for n in said), said
        assert any(n.startswith("Model ") and " reloaded in " in n for n in said), said

        # The reply that was streaming: kept, shown and stored as interrupted.
        assert any(isinstance(m, ReplyInterrupted) for m in messages)
        reply = list(screen.query(AssistantMessage))[-1]
        assert reply.has_class("-cancelled") and not reply.has_class("-error")
        meta = str(reply.meta.render())
        assert "interrupted: the model process died (killed by SIGKILL)" in meta
        conv = app.session.conversation
        assert conv is not None
        stored = app.store.messages(conv.id)[-1]
        assert stored.status == "cancelled" and stored.interrupted
        assert stored.error == "the model process died (killed by SIGKILL)"
        assert stored.text and stored.text == reply.text

        # The next prompt is answered by the new process, after the kept reply.
        await send(pilot, "What is a cat?")
        await settle(pilot, app)
        after = app.store.messages(conv.id)
        assert [(m.role, m.status) for m in after[-2:]] == [
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        assert after[-1].text.strip()
        assert after[-3].id == stored.id  # the interrupted reply stays in the history
        assert any(m["content"] == stored.text for m in app.session.history())

        # Reopened, it still reads as interrupted.
        screen.reload_view()
        await pilot.pause()
        await wait_until(
            pilot,
            lambda: len(list(screen.query(AssistantMessage))) == 2,
            what="the transcript to render again",
        )
        again = screen.query(AssistantMessage).first()
        assert "interrupted: the model process died" in str(again.meta.render())


async def test_a_model_process_killed_while_idle_is_reloaded_before_the_next_prompt(
    config: Config,
) -> None:
    messages: list[object] = []
    app = make_app(config)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        engine = engine_of(app)
        await wait_until(pilot, lambda: engine.is_ready, what="model load")
        first_pid = engine.child_pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await wait_until(
            pilot,
            lambda: any(isinstance(m, ModelLoaded) and m.reloaded for m in messages),
            what="the model to be reloaded",
        )
        assert engine.child_pid not in (None, first_pid)
        assert any("The model process died (killed by SIGKILL)" in n for n in notes(app))
        await send(pilot, "What is a cat?")
        await settle(pilot, app)
        reply = list(chat(app).query(AssistantMessage))[-1]
        assert reply.text.strip() and not reply.has_class("-error")
        assert not reply.has_class("-cancelled")

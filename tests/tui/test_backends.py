"""The TUI on a model server (llama.cpp's own, on loopback): chat, stream, Esc, memory
recall and storage, /model listing and switching, and the fallback taking over."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from tars_assistant.http_engine import OpenAIEngine
from tars_assistant.llm_process import ProcessEngine
from tars_core.config import Config, ModelProfile
from tars_tui.app import TarsApp, make_app
from tars_tui.widgets.panels import LatencyPanel
from tars_tui.widgets.transcript import AssistantMessage, MarkdownNote, Note, Remembered
from tests.backends.conftest import LlamaServer, free_port

from .conftest import type_text, wait_until

pytestmark = pytest.mark.slow
SIZE = (120, 40)
SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"


def on_server(config: Config, url: str, *, fallback: bool = False, node: str = "off") -> Config:
    srv = ModelProfile(name="srv", backend="openai", base_url=url, timeout_s=5.0, llm=config.llm)
    here = ModelProfile(name="here", backend="llama.cpp", llm=config.llm)
    llm = dataclasses.replace(
        config.llm, model="srv", fallback="here" if fallback else "", ollama_url=""
    )
    return dataclasses.replace(
        config,
        llm=llm,
        models={"srv": srv, "here": here},
        node=dataclasses.replace(config.node, endpoint=node, timeout_s=0.5, retries=1),
    )


def texts(app: TarsApp, kind: type[Note] | type[MarkdownNote]) -> list[str]:
    assert app.chat is not None
    if kind is MarkdownNote:
        return [n.source for n in app.chat.query(MarkdownNote)]  # type: ignore[attr-defined]
    return [str(n.render()) for n in app.chat.query(kind)]


async def ask(pilot, app: TarsApp, text: str) -> AssistantMessage:  # type: ignore[no-untyped-def]
    assert app.chat is not None
    app.chat.send(text)
    await wait_until(pilot, lambda: not app.chat.generating, what="the reply")  # type: ignore[union-attr]
    await pilot.pause()
    return list(app.chat.query(AssistantMessage))[-1]


async def test_chat_on_a_model_server_recalls_memory_and_stores_the_exchange(
    config: Config, llama_server: LlamaServer
) -> None:
    app = make_app(on_server(config, llama_server.v1, node="auto"))
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None and app.memory is not None
        assert isinstance(app.engine.current, OpenAIEngine)
        await wait_until(
            pilot,
            lambda: app.node.state == "local" and app.engine.is_ready,
            timeout=120,
            what="the node and the model server",
        )
        assert SMOLLM in app.chat.sub_title and "⇄" not in app.chat.sub_title  # loopback
        await type_text(pilot, "/remember My sister Aurelia lives in Lisbon.")
        await pilot.press("enter")
        semantic = app.memory.semantic
        await wait_until(pilot, lambda: semantic.pending_count() == 0, timeout=30, what="the fact")
        reply = await ask(pilot, app, "Where does my sister live?")
        assert reply.text.strip() and not reply.has_class("-error")
        remembered = list(app.chat.query(Remembered))
        assert remembered and "Aurelia" in remembered[-1].query_one(MarkdownNote).source  # type: ignore[attr-defined]
        conv = app.session.conversation
        assert conv is not None
        stored = app.store.messages(conv.id)[-1]
        assert stored.text == reply.text and stored.model == SMOLLM
        assert stored.metrics is not None and "retrieval_ms" in stored.metrics.stages
        assert "network_ms" in stored.metrics.stages  # llama-server says its prompt time
        rows = str(app.chat.query_one(LatencyPanel).query_one("#latency-rows").render())
        assert "network" in rows and "TTFT" in rows  # the latency panel shows it apart
        app.chat.run_command("/stats")
        await pilot.pause()
        assert any(SMOLLM in t and "network_ms" in t for t in texts(app, MarkdownNote))
        await wait_until(pilot, lambda: semantic.pending_count() == 0, timeout=30, what="exchange")
        kinds = sorted(m.kind for m in app.memory.store.list_memories(app.session.project_id))
        assert kinds == ["exchange", "fact"]


async def test_escape_closes_the_stream_and_the_server_stops(
    config: Config, llama_server: LlamaServer
) -> None:
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, max_tokens=400))
    app = make_app(on_server(config, llama_server.v1))
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        await wait_until(pilot, lambda: app.engine.is_ready, what="the model server")
        app.chat.send("Write a very long story about the sea.")
        screen = app.chat
        await wait_until(
            pilot,
            lambda: screen._reply is not None and len(screen._reply.text) > 5,
            what="the first tokens",
        )
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.generating, what="the cancel")
        deadline = time.monotonic() + 3
        while llama_server.busy():
            assert time.monotonic() < deadline, "the server kept generating"
            await pilot.pause(0.05)
        reply = list(screen.query(AssistantMessage))[-1]
        assert reply.has_class("-cancelled")
        stored = app.store.messages(app.session.conversation.id)[-1]  # type: ignore[union-attr]
        assert stored.status == "cancelled" and stored.text == reply.text


async def test_model_lists_profiles_and_switches_between_server_and_local(
    config: Config, llama_server: LlamaServer
) -> None:
    app = make_app(on_server(config, llama_server.v1))
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        await wait_until(pilot, lambda: app.engine.is_ready, what="the model server")
        await type_text(pilot, "/model")
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: any("Model profiles" in t for t in texts(app, MarkdownNote)),
            what="the listing (made off the UI thread)",
        )
        listing = next(t for t in texts(app, MarkdownNote) if "Model profiles" in t)
        assert "`srv`" in listing and "answers" in listing and "`here`" in listing
        assert "this machine (127.0.0.1:" in listing
        await type_text(pilot, "/model here")
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: isinstance(app.engine.current, ProcessEngine) and app.engine.is_ready,
            what="the switch to llama.cpp here",
        )
        reply = await ask(pilot, app, "Hello!")
        assert reply.text.strip()
        await type_text(pilot, "/model nope")
        await pilot.press("enter")
        await pilot.pause()
        assert any("no model profile 'nope'" in t for t in texts(app, Note))


async def test_the_fallback_answers_when_the_server_is_down(config: Config) -> None:
    app = make_app(on_server(config, f"http://127.0.0.1:{free_port()}/v1", fallback=True))
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        await wait_until(pilot, lambda: bool(texts(app, Note)), what="the load note")
        assert any("refused" in t for t in texts(app, Note))  # said at start, type anyway
        before = len(list(app.chat.query(AssistantMessage)))
        reply = await ask(pilot, app, "Hello?")
        replies = list(app.chat.query(AssistantMessage))
        assert len(replies) == before + 2  # the failed one, kept and marked; the fallback's
        failed = replies[-2]
        assert failed.has_class("-cancelled") and "fallback" in str(failed.meta.render())
        assert reply.text.strip() and not reply.has_class("-error")
        conv = app.session.conversation
        assert conv is not None
        models = [m.model for m in app.store.messages(conv.id) if m.role == "assistant"]
        assert models[-1] == SMOLLM


async def test_a_project_keeps_its_own_model(config: Config, llama_server: LlamaServer) -> None:
    # Projects live in SQLite; a node nobody runs is enough for the memory commands.
    app = make_app(on_server(config, llama_server.v1, node=f"tcp://127.0.0.1:{free_port()}"))
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None
        await wait_until(pilot, lambda: app.engine.is_ready, what="the model server")

        async def command(text: str) -> None:
            app.chat.query_one("PromptInput").insert(text)  # type: ignore[union-attr, attr-defined]
            await pilot.press("enter")
            await pilot.pause()

        def on(kind: type) -> bool:
            return isinstance(app.engine.current, kind) and app.engine.is_ready

        await command("/projects new work")
        await command("/project work")
        assert isinstance(app.engine.current, OpenAIEngine)  # no model of its own: [llm]'s
        await command("/projects model here")
        await wait_until(pilot, lambda: on(ProcessEngine), what="the project's model")
        await command("/project default")
        await wait_until(pilot, lambda: on(OpenAIEngine), what="back to [llm] model")
        await command("/project work")
        await wait_until(pilot, lambda: on(ProcessEngine), what="the project's model again")
        project = app.store.project_by_name("work")
        assert project is not None and project.model == "here"  # kept in SQLite
        await command("/projects model nope")
        assert any("no model profile 'nope'" in t for t in texts(app, Note))


def test_plain_mode_chats_on_a_model_server_and_switches(
    config: Config, llama_server: LlamaServer
) -> None:
    import io

    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from rich.console import Console

    from memory.conversation_store import ConversationStore
    from tars_tui.plain import run_plain

    config = on_server(config, llama_server.v1)
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("Say hello\r/model\r/model here\rSay hi again\r/quit\r")
        code = run_plain(
            config, console=Console(file=out, width=160), prompt_input=pipe,
            prompt_output=DummyOutput(),
        )  # fmt: skip
    text = out.getvalue()
    assert code == 0, text
    assert "Model profiles" in text and "srv" in text and "answers" in text
    assert f"Model {SMOLLM} loaded" in text  # the switch to llama.cpp here
    with ConversationStore(config.data_dir / "tars.db") as store:
        conv = store.latest_conversation()
        assert conv is not None
        replies = [m for m in store.messages(conv.id) if m.role == "assistant"]
    assert [m.status for m in replies] == ["complete", "complete"]
    assert all(m.text for m in replies)


@pytest.mark.audio
async def test_voice_in_and_spoken_replies_on_a_model_server(
    config: Config, llama_server: LlamaServer, tmp_path: Path
) -> None:
    from tars_assistant.voice import synth
    from tars_tui.widgets.transcript import UserMessage

    if synth.missing_tools():
        pytest.skip(f"needs {', '.join(synth.missing_tools())} (make installs them)")
    sentence = "Please remind me to water the garden tomorrow morning"
    clip = synth.compose(synth.speak(sentence, voice="en-us", speed=150), sentence, lead_s=0.6)
    mic = synth.write_wav(tmp_path / "utterance.wav", clip.samples)
    out = tmp_path / "reply.wav"
    config = on_server(config, llama_server.v1)
    config = dataclasses.replace(
        config,
        voice=dataclasses.replace(config.voice, input_device=f"file:{mic}", auto_send=True),
        tts=dataclasses.replace(config.tts, enabled=True, output_device=f"file:{out}"),
    )
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        assert screen is not None
        await wait_until(
            pilot,
            lambda: (
                app.voice is not None and app.engine.is_ready and screen.speech.speaker is not None
            ),
            timeout=120,
            what="voice, the model server and the speaker",
        )
        await pilot.press("ctrl+space")  # push to talk: the file plays as the microphone
        await wait_until(
            pilot,
            lambda: any("garden" in str(u.render()).lower() for u in screen.query(UserMessage)),
            timeout=60,
            what="the spoken prompt, sent",
        )
        await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
        reply = list(screen.query(AssistantMessage))[-1]
        assert reply.text.strip()
        speaker = screen.speech.speaker
        assert speaker is not None
        await wait_until(pilot, lambda: not speaker.busy, timeout=60, what="the reply spoken")
        assert out.is_file() and out.stat().st_size > 44 + 16000  # real audio, not a header
        stored = app.store.messages(app.session.conversation.id)[-1]  # type: ignore[union-attr]
        assert stored.model == SMOLLM and stored.text == reply.text

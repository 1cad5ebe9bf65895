"""Push-to-talk in the TUI: real webrtcvad and tiny.en, an espeak-ng recording
played in real time as the microphone (``input_device = "file:PATH"``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tars_assistant.voice import synth
from tars_core.config import Config
from tars_tui.app import TarsApp, make_app
from tars_tui.voice.widgets import VoicePrompt
from tars_tui.widgets.prompt import PromptInput
from tars_tui.widgets.transcript import AssistantMessage, Note, UserMessage

from .conftest import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.audio,
    pytest.mark.skipif(
        bool(synth.missing_tools()),
        reason=f"needs {', '.join(synth.missing_tools())} (make installs them)",
    ),
]
SIZE = (120, 40)
SENTENCE = "Please remind me to water the garden tomorrow morning"


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("speech")
    clip = synth.compose(
        synth.speak(SENTENCE, voice="en-us", speed=150),
        SENTENCE,
        lead_s=0.6,
        trail_s=1.5,
        noise_dbfs=-55,
    )
    return synth.write_wav(folder / "utterance.wav", clip.samples)


def voice_config(config: Config, device: str, **changes: object) -> Config:
    return dataclasses.replace(
        config, voice=dataclasses.replace(config.voice, input_device=device, **changes)
    )


def prompt(app: TarsApp) -> PromptInput:
    assert app.chat is not None
    return app.chat.query_one(PromptInput)


def voice_panel(app: TarsApp) -> VoicePrompt:
    assert app.chat is not None
    return app.chat.query_one(VoicePrompt)


async def test_partials_then_final_text_lands_in_the_prompt(
    config: Config, speech_file: Path
) -> None:
    app = make_app(voice_config(config, f"file:{speech_file}"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.voice is not None, what="voice to be available")
        await pilot.press("ctrl+space")
        panel = voice_panel(app)
        assert panel.is_open and not prompt(app).display
        partials: list[tuple[str, str]] = []

        def partial_seen() -> bool:
            if panel.committed or panel.tentative:
                partials.append((panel.committed, panel.tentative))
            return not panel.is_open or bool(partials)

        await wait_until(pilot, partial_seen, timeout=30, what="a partial transcript")
        assert partials, "a partial appeared while the speech was still playing"
        await wait_until(pilot, lambda: not panel.is_open, timeout=30, what="the final text")
        text = prompt(app).text.lower()
        assert prompt(app).display
        # tiny.en on espeak is good, not perfect (WER is measured in tests/voice).
        heard = [
            w for w in ("please", "remind", "water", "garden", "tomorrow", "morning") if w in text
        ]
        assert len(heard) >= 5, text
        assert app.session.latency.last("stt_ms") is not None
        assert not list(app.chat.query(UserMessage))  # type: ignore[union-attr]  # review first


async def test_escape_discards_the_utterance(config: Config, speech_file: Path) -> None:
    app = make_app(voice_config(config, f"file:{speech_file}"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.voice is not None, what="voice to be available")
        await pilot.press("f5")  # the fallback key
        panel = voice_panel(app)
        await wait_until(
            pilot,
            lambda: bool(panel.committed or panel.tentative),
            timeout=30,
            what="a partial transcript",
        )
        await pilot.press("escape")
        assert not panel.is_open and prompt(app).display
        await pilot.pause(2.5)  # long enough for the recording to have ended
        assert prompt(app).text == ""
        assert app.voice is not None and not app.voice.active


async def test_auto_send_sends_the_final_text(config: Config, speech_file: Path) -> None:
    app = make_app(voice_config(config, f"file:{speech_file}", auto_send=True))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot, lambda: app.voice is not None and app.engine.is_ready, what="voice and model"
        )
        await pilot.press("ctrl+space")
        assert app.chat is not None
        await wait_until(
            pilot,
            lambda: bool(list(app.chat.query(UserMessage))),
            timeout=40,  # type: ignore[union-attr]
            what="the transcript to be sent",
        )
        sent = str(app.chat.query(UserMessage).first().render()).lower()
        assert "garden" in sent
        await wait_until(pilot, lambda: not app.chat.generating, what="the reply")  # type: ignore[union-attr]
        assert list(app.chat.query(AssistantMessage))[-1].text.strip()


async def test_missing_microphone_disables_voice_and_chat_still_works(config: Config) -> None:
    app = make_app(voice_config(config, "no-such-microphone-xyz"))
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat is not None

        def notes() -> list[str]:
            return [str(n.render()) for n in app.chat.query(Note)]  # type: ignore[union-attr]

        await wait_until(
            pilot,
            lambda: any(n.startswith("Voice is off:") for n in notes()),
            what="the voice message",
        )
        assert app.voice is None and app.voice_error
        await pilot.press("ctrl+space")
        assert any(n.startswith("Voice is unavailable:") for n in notes())
        assert not voice_panel(app).is_open
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        app.chat.send("Hello")
        await wait_until(pilot, lambda: not app.chat.generating, what="the reply")  # type: ignore[union-attr]
        assert list(app.chat.query(AssistantMessage))[-1].text.strip()

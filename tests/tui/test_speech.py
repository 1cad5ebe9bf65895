"""Spoken replies in the TUI: barge-in, hands-free conversation, the echo guard, hold-to-talk,
and a machine without speakers. Real model, real Piper voice, real tiny.en and webrtcvad,
espeak-ng speech as the user; a paced WAV file or a loopback sink as the speakers."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tars_assistant.speech.events import SpeechUnavailable
from tars_assistant.speech.sinks import list_output_devices
from tars_assistant.voice import synth
from tars_assistant.voice.capture import FRAME_SAMPLES, SAMPLE_RATE
from tars_assistant.voice.echo import GuardedSource
from tars_assistant.voice.vad import VadGate
from tars_core.config import Config
from tars_tui.app import TarsApp, make_app
from tars_tui.messages import KeyReleased, KeyReleasesReported
from tars_tui.screens.chat import ChatScreen
from tars_tui.voice.widgets import FLOOR_DB, SpeechBar, VoicePrompt
from tars_tui.widgets.panels import LatencyPanel
from tars_tui.widgets.prompt import PromptInput
from tars_tui.widgets.transcript import AssistantMessage, Note, UserMessage

from .conftest import wait_until
from .speech_support import ROOM_DBFS, LoopbackSink, ScriptedMicrophone

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
LINES = ("What is the capital of France?", "Name a big city in Germany.", "Stop listening.")


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = synth.compose(
        synth.speak(SENTENCE, voice="en-us", speed=150), SENTENCE, lead_s=0.6, trail_s=1.5
    )
    return synth.write_wav(tmp_path_factory.mktemp("speech") / "utterance.wav", clip.samples)


@pytest.fixture(scope="module")
def lines() -> list[np.ndarray]:
    return [synth.speak(text, voice="en-us", speed=150) for text in LINES]


def setup(config: Config, *, mic: str, max_tokens: int = 40, **tts: Any) -> Config:
    return dataclasses.replace(
        config,
        llm=dataclasses.replace(config.llm, max_tokens=max_tokens),
        voice=dataclasses.replace(config.voice, input_device=mic),
        tts=dataclasses.replace(config.tts, **tts),
    )


def chat(app: TarsApp) -> ChatScreen:
    assert app.chat is not None
    return app.chat


def notes(app: TarsApp) -> list[str]:
    return [str(n.render()) for n in chat(app).query(Note)]


def users(app: TarsApp) -> list[str]:
    return [str(u.render()).lower() for u in chat(app).query(UserMessage)]


async def test_push_to_talk_while_speaking_stops_it_within_100_ms(
    config: Config, speech_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reply.wav"
    cfg = setup(
        config, mic=f"file:{speech_file}", max_tokens=80, enabled=True, output_device=f"file:{out}"
    )
    app = make_app(cfg)
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        await wait_until(
            pilot,
            lambda: (
                app.voice is not None and app.engine.is_ready and screen.speech.speaker is not None
            ),
            timeout=120,
            what="voice, model and speaker",
        )
        speaker = screen.speech.speaker
        assert speaker is not None
        sink = speaker.sink
        screen.send("Tell me a long story about a brave little dragon.")
        bar = screen.query_one(SpeechBar)
        await wait_until(
            pilot, lambda: bar.speaking and bar.dbfs > FLOOR_DB, timeout=120, what="TARS speaking"
        )
        assert "speaking" in str(bar.render())
        pressed = time.monotonic()
        await pilot.press("ctrl+space")
        assert sink.stopped_at is not None and sink.stopped_at >= pressed
        assert sink.stopped_at - pressed <= 0.100, (
            f"stopped after {sink.stopped_at - pressed:.3f} s"
        )
        assert screen.query_one(VoicePrompt).is_open  # and listening
        written = sink.written
        await wait_until(pilot, lambda: not bar.speaking, what="the indicator to go")
        await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
        assert sink.written == written  # the rest of the reply, still generated, is not said
        await wait_until(
            pilot, lambda: not screen.query_one(VoicePrompt).is_open, timeout=60, what="the final"
        )
        assert "garden" in screen.query_one(PromptInput).text.lower()
        assert out.is_file() and out.stat().st_size > 44  # what was said, a valid WAV
        # The latency panel has the speech stages of that (stopped) reply.
        assert app.session.latency.last("tts_sentence_ms") is not None
        assert app.session.latency.last("tts_audio_ms") is not None
        rows = str(screen.query_one(LatencyPanel).query_one("#latency-rows").render())
        assert "tok→sentence" in rows and "speech RTF" in rows

        # /speak off: the next reply is silent; F4 turns speech back on.
        screen.query_one(PromptInput).load_text("")
        screen.run_command("/speak off")
        assert "Spoken replies off." in notes(app)
        screen.send("Say hello.")
        await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
        await pilot.pause(0.5)
        assert sink.written == written and not speaker.busy
        await pilot.press("f4")
        assert notes(app)[-1] == "Spoken replies on."


async def test_escape_and_a_new_prompt_stop_speech(config: Config, tmp_path: Path) -> None:
    sink = LoopbackSink()
    app = make_app(setup(config, mic="file:/nonexistent.wav", max_tokens=80))
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        screen.speech.sink_factory = lambda: sink
        screen.run_command("/speak")  # alone, it switches: on
        await wait_until(
            pilot,
            lambda: app.engine.is_ready and screen.speech.speaker is not None,
            timeout=120,
            what="model and speaker",
        )
        speaker = screen.speech.speaker
        assert speaker is not None
        for stop in ("escape", "new prompt"):
            screen.send("Tell me a long story about a brave little dragon.")
            await wait_until(pilot, lambda: speaker.speaking, timeout=120, what="TARS speaking")
            await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
            assert speaker.speaking  # the reply is written; its speech goes on
            before = len(sink.stops)
            if stop == "escape":
                await pilot.press("escape")
            else:
                screen.send("Thanks.")
            assert len(sink.stops) == before + 1 and not speaker.speaking
            await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
            speaker.stop()


async def test_hands_free_two_turns_then_stop_with_the_microphone_gated(
    config: Config, lines: list[np.ndarray]
) -> None:
    sink = LoopbackSink()
    mic = ScriptedMicrophone(lines, echo=sink)  # TARS's voice comes back into the mic
    app = make_app(setup(config, mic="file:/nonexistent.wav", max_tokens=24))
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        screen.speech.sink_factory = lambda: sink
        await wait_until(
            pilot, lambda: app.voice is not None and app.engine.is_ready, what="voice and model"
        )
        assert app.voice is not None
        app.voice.source_factory = mic
        screen.run_command("/talk")  # from here on, no key is pressed
        assert screen.talk.loop.active
        await wait_until(
            pilot, lambda: not screen.talk.loop.active, timeout=240, what="two turns and a stop"
        )
        assert screen.talk.loop.turns == 2 and mic.spoken == 3
        said = users(app)
        assert len(said) == 2 and "france" in said[0] and "germany" in said[1], said
        replies = list(screen.query(AssistantMessage))
        assert len(replies) == 2 and all(r.text.strip() for r in replies)
        assert any("you said stop" in n for n in notes(app))
        # Both replies were spoken, and the microphone was shut while they played.
        assert len(sink.plays) == 2 and all(end - start > 0.3 for start, end in sink.plays)
        assert not sink.stops
        for opened, *closed in mic.sessions:
            for start, end in sink.plays:
                assert closed and (closed[0] <= start or opened >= end), (mic.sessions, sink.plays)
        assert len(app.session.latency.values("tts_rtf")) == 2
        assert len(app.session.latency.values("talk_turn_ms")) == 2  # you -> TARS, per turn


async def test_voice_barge_in_mode_does_not_hear_its_own_playback(
    config: Config, lines: list[np.ndarray]
) -> None:
    sink = LoopbackSink()
    # One question, then "stop listening" once TARS is quiet; its reply echoes back at -6 dB.
    mic = ScriptedMicrophone([lines[0], lines[2]], echo=sink, echo_gain_db=-6.0)
    cfg = setup(config, mic="file:/nonexistent.wav", max_tokens=40, barge_in="voice")
    app = make_app(cfg)
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        screen.speech.sink_factory = lambda: sink
        await wait_until(
            pilot, lambda: app.voice is not None and app.engine.is_ready, what="voice and model"
        )
        assert app.voice is not None
        app.voice.source_factory = mic
        screen.run_command("/talk")
        await wait_until(pilot, lambda: not screen.talk.loop.active, timeout=240, what="the stop")
        assert len(users(app)) == 1 and "france" in users(app)[0]
        assert any("you said stop" in n for n in notes(app))
        assert len(sink.plays) == 1 and not sink.stops  # spoken to the end, not barged into
        guarded = app.voice.source_factory
        assert isinstance(guarded, GuardedSource)
        # The microphone was open during the reply and the guard turned the echo down.
        [(start, end)] = sink.plays
        assert any(o < end and (not c or c[0] > start) for o, *c in mic.sessions)
        assert sum(g.rejected for g in guarded.guards) > (end - start) / 0.03 * 0.5
        # ... an echo that, unguarded, opens the gate: the guard is what kept it out.
        echo = sink.played(start + 0.06, round((end - start) * SAMPLE_RATE)) * 0.5
        room = synth.noise(len(echo) / SAMPLE_RATE, ROOM_DBFS, "pink")
        heard = synth.mix(echo.astype(np.int16), room)
        gate = VadGate(cfg.voice)
        frames = range(0, len(heard) - FRAME_SAMPLES, FRAME_SAMPLES)
        assert any(gate.push(heard[i : i + FRAME_SAMPLES]).started for i in frames)


async def test_hold_to_talk_release_finishes_and_a_tap_latches(
    config: Config, speech_file: Path
) -> None:
    app = make_app(setup(config, mic=f"file:{speech_file}"))
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        await wait_until(pilot, lambda: app.voice is not None, what="voice")
        assert app.voice is not None and not app.hold_to_talk
        app.post_message(KeyReleasesReported(True, 27))  # what the driver says in kitty
        await wait_until(pilot, lambda: app.hold_to_talk, what="hold-to-talk")
        panel = screen.query_one(VoicePrompt)
        # A tap: listening goes on (like the toggle). Pressed and released in one go
        # here: through the pilot, a loaded machine could stretch a tap into a hold.
        screen.action_voice()
        app.on_key_released(KeyReleased("ctrl+space"))
        await pilot.pause(0.2)
        assert app.voice.active and panel.is_open
        assert "release ctrl+space" in str(panel.border_subtitle)
        await pilot.press("escape")
        voice = app.voice
        await wait_until(pilot, lambda: not voice.active, what="the discarded session")
        # A hold: letting go while speaking finishes with what was heard so far.
        await pilot.press("ctrl+space")
        await wait_until(
            pilot, lambda: bool(panel.committed or panel.tentative), timeout=30, what="a partial"
        )
        app.post_message(KeyReleased("ctrl+space"))
        await wait_until(pilot, lambda: not panel.is_open, timeout=30, what="the final")
        text = screen.query_one(PromptInput).text.lower()
        assert "please" in text or "remind" in text, text


async def test_without_speakers_speech_is_off_and_chat_and_voice_work(
    config: Config, speech_file: Path
) -> None:
    try:
        if list_output_devices():
            pytest.skip("this machine has an audio output device")
    except SpeechUnavailable:
        pass  # no PortAudio at all: no output device either
    app = make_app(setup(config, mic=f"file:{speech_file}", enabled=True, output_device=""))
    async with app.run_test(size=SIZE) as pilot:
        screen = chat(app)
        await wait_until(
            pilot,
            lambda: any(n.startswith("Speech is off:") for n in notes(app)),
            what="the speech message",
        )
        message = next(n for n in notes(app) if n.startswith("Speech is off:"))
        assert "output_device" in message and "Everything else works" in message
        assert screen.speech.speaker is None and screen.speech.error
        screen.run_command("/speak on")
        assert notes(app)[-1].startswith("Speech is unavailable:")
        await wait_until(
            pilot, lambda: app.engine.is_ready and app.voice is not None, what="model and voice"
        )
        screen.send("Hello")
        await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
        assert list(screen.query(AssistantMessage))[-1].text.strip()
        await pilot.press("ctrl+space")
        await wait_until(
            pilot, lambda: not screen.query_one(VoicePrompt).is_open, timeout=40, what="the final"
        )
        assert "garden" in screen.query_one(PromptInput).text.lower()

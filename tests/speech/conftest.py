"""Speech fixtures: the bundled Piper voice and the bundled tiny.en, each loaded once."""

from __future__ import annotations

import importlib.util

import pytest

from tars_assistant.speech.events import SpeechUnavailable
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.voice.stt import WhisperEngine
from tars_core.settings.tts import TTSConfig
from tars_core.settings.voice import VoiceConfig


@pytest.fixture(scope="session")
def piper() -> PiperEngine:
    """The bundled en_US-joe-medium, loaded once for every test that speaks."""
    if importlib.util.find_spec("piper") is None:
        pytest.skip("needs piper-tts: pip install 'tars[tts]'")
    engine = PiperEngine(TTSConfig())
    try:
        engine.load()
    except SpeechUnavailable as exc:
        pytest.skip(str(exc))
    return engine


@pytest.fixture(scope="session")
def whisper() -> WhisperEngine:
    engine = WhisperEngine(VoiceConfig())
    engine.load()
    return engine

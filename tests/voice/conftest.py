"""Voice fixtures: speech made once per session with espeak-ng and sox, and the bundled
tiny.en loaded once per session."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import Frame
from tars_assistant.voice.stt import WhisperEngine
from tars_core.settings.voice import VoiceConfig
from tests.voice.support import SENTENCES, SpokenClip


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = synth.missing_tools()
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} to make speech (apt-get install espeak-ng sox)")
    return tmp_path_factory.mktemp("voice-audio")


@pytest.fixture(scope="session")
def speak(audio_dir: Path) -> Callable[..., Frame]:
    """espeak-ng + sox speech, cached for the session."""

    def make(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> Frame:
        return synth.speak(text, voice=voice, speed=speed, pitch=pitch, cache_dir=audio_dir)

    return make


@pytest.fixture(scope="session")
def corpus(audio_dir: Path, speak: Callable[..., Frame]) -> list[SpokenClip]:
    """The sentences with silence before and after, written as WAV (even) and FLAC (odd)."""
    clips = []
    for i, (text, voice, speed, pitch, noise) in enumerate(SENTENCES):
        clip = synth.compose(
            speak(text, voice, speed, pitch),
            text,
            lead_s=0.6 + 0.2 * (i % 3),
            trail_s=1.2,
            noise_dbfs=noise,
            seed=i,
        )
        wav = synth.write_wav(audio_dir / f"clip{i}.wav", clip.samples)
        path = wav if i % 2 == 0 else synth.convert(wav, audio_dir / f"clip{i}.flac")
        clips.append(SpokenClip(clip, path, voice, speed))
    return clips


@pytest.fixture(scope="session")
def engine() -> WhisperEngine:
    """The bundled tiny.en, loaded once for every test that decodes."""
    engine = WhisperEngine(VoiceConfig())
    engine.load()
    return engine


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """What importing sounddevice does on a machine without libportaudio."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


@pytest.fixture
def no_portaudio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])

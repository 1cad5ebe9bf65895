"""Audio sources: files of several formats, real-time pacing, and the microphone's
failures (PortAudio and the device are simulated only to inject faults)."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import (
    FRAME_SAMPLES,
    ArraySource,
    AudioFileError,
    FileSource,
    Frame,
    MicrophoneSource,
    VoiceUnavailable,
    frame_dbfs,
    list_input_devices,
)
from tars_assistant.voice.commands import devices_report, voice_problems
from tars_core.settings.voice import VoiceConfig


def write_mp3(path: Path, samples: Frame, rate: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=rate, layout="mono")
        stream.bit_rate = 128_000
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.audio
def test_file_source_decodes_wav_flac_and_mp3_at_any_rate(
    audio_dir: Path, speak: Callable[..., Frame]
) -> None:
    speech = np.concatenate((np.zeros(8000, np.int16), speak("Good morning to you all.")))
    wav16 = synth.write_wav(audio_dir / "fmt16.wav", speech)
    wav44 = synth.convert(wav16, audio_dir / "fmt44.wav", "rate", "44100")
    files = [
        wav16,
        wav44,
        synth.convert(wav16, audio_dir / "fmt48-stereo.flac", "rate", "48000", "channels", "2"),
        write_mp3(audio_dir / "fmt44.mp3", synth.read_wav(wav44), 44100),
    ]
    for path in files:
        with FileSource(path) as source:
            frames = list(source.frames())
        assert all(f.dtype == np.int16 and len(f) == FRAME_SAMPLES for f in frames), path
        audio = np.concatenate(frames)
        # same length (the MP3 encoder adds up to ~0.1 s of padding) and about the same level
        assert abs(len(audio) - len(speech)) < 0.12 * 16000, path
        assert abs(frame_dbfs(audio) - frame_dbfs(speech)) < 1.5, path
        # and the same signal: the envelope follows the original
        env = [frame_dbfs(f) for f in frames[: len(speech) // FRAME_SAMPLES]]
        ref = [frame_dbfs(speech[i : i + FRAME_SAMPLES]) for i in range(0, len(env) * 480, 480)]
        assert np.corrcoef(env, ref)[0, 1] > 0.8, path


def test_missing_and_undecodable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        FileSource(tmp_path / "nope.wav").open()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(AudioFileError, match="cannot decode"):
        FileSource(junk).open()


def test_realtime_source_paces_frames_like_a_microphone() -> None:
    source = ArraySource(np.zeros(20 * FRAME_SAMPLES, np.int16), realtime=True)
    arrivals = []
    with source:
        for _ in source.frames():
            arrivals.append(time.monotonic())
    assert source.started_at is not None
    assert len(arrivals) == 20
    # Paced like a microphone (0.6 s of audio takes ~0.6 s), with room for a busy machine.
    assert arrivals[-1] - source.started_at == pytest.approx(0.6, abs=0.15)
    assert arrivals[0] - source.started_at == pytest.approx(0.03, abs=0.1)


def test_fast_source_does_not_wait_and_pads_the_last_frame() -> None:
    # 101 frames: 3 s if it paced itself like a microphone.
    source = ArraySource(np.ones(100 * FRAME_SAMPLES + 100, np.int16))
    started = time.monotonic()
    frames = list(source.frames())
    assert time.monotonic() - started < 1.0
    assert len(frames) == 101 and frames[-1][100:].sum() == 0


# -- the microphone: PortAudio and devices simulated to inject faults ---------------


def test_no_portaudio_says_what_to_install(no_portaudio: None) -> None:
    with pytest.raises(VoiceUnavailable, match="libportaudio2"):
        MicrophoneSource("").open()
    with pytest.raises(VoiceUnavailable, match="libportaudio2"):
        list_input_devices()
    problems = voice_problems(VoiceConfig())
    assert any("libportaudio2" in p for p in problems)


class FakePortAudio(types.ModuleType):
    """A sounddevice stand-in: a device list, and input streams that play ``audio``
    at ``rate`` through the callback (or fail, or stall)."""

    class PortAudioError(Exception):
        pass

    def __init__(
        self,
        devices: list[dict[str, Any]],
        *,
        audio: Frame | None = None,
        fail_open: bool = False,
        stall: bool = False,
    ):
        super().__init__("sounddevice")
        self.devices = devices
        self.audio = audio
        self.fail_open = fail_open
        self.stall = stall
        inputs = [d["index"] for d in devices if d["max_input_channels"] > 0]
        self.default = types.SimpleNamespace(device=[inputs[0] if inputs else -1, -1])
        self.opened: list[int] = []

    def query_devices(self, device: int | None = None, kind: str | None = None) -> Any:
        if device is None and kind is None:
            return self.devices
        index = device if device is not None else self.default.device[0]
        return next(d for d in self.devices if d["index"] == index)

    def query_hostapis(self) -> list[dict[str, str]]:
        return [{"name": "ALSA"}]

    def InputStream(self, **kw: Any) -> Any:
        module = self
        if module.fail_open:
            raise self.PortAudioError("Error opening InputStream: Device unavailable [-9985]")
        rate = kw["samplerate"]
        native = module.query_devices(kw["device"], "input")["default_samplerate"]
        if rate != native:  # like a raw hw device: only its own rate
            raise self.PortAudioError("Invalid sample rate [-9997]")
        module.opened.append(int(rate))

        class Stream:
            def __init__(self) -> None:
                self.running = True

            def start(self) -> None:
                threading.Thread(target=self.play, daemon=True).start()

            def play(self) -> None:
                audio = module.audio if module.audio is not None else np.zeros(0, np.int16)
                block = kw["blocksize"]
                for i in range(0, len(audio) - block + 1, block):
                    if not self.running or module.stall:
                        return
                    kw["callback"](audio[i : i + block].reshape(-1, 1), block, None, None)

            def stop(self) -> None:
                self.running = False

            def close(self) -> None:
                self.running = False

        return Stream()


def device(index: int, name: str, inputs: int = 1, rate: float = 48000.0) -> dict[str, Any]:
    return {
        "index": index,
        "name": name,
        "max_input_channels": inputs,
        "default_samplerate": rate,
        "hostapi": 0,
    }


def use(monkeypatch: pytest.MonkeyPatch, fake: FakePortAudio) -> FakePortAudio:
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    return fake


def test_no_input_device_says_what_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, FakePortAudio([device(0, "HDMI output", inputs=0)]))
    with pytest.raises(VoiceUnavailable, match="no microphone found"):
        MicrophoneSource("").open()
    assert list_input_devices() == []
    assert "no input devices" in devices_report()


def test_unknown_or_wrong_device_names_point_at_tars_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(monkeypatch, FakePortAudio([device(0, "HDMI", inputs=0), device(1, "USB Mic")]))
    with pytest.raises(VoiceUnavailable, match=r"no microphone matches 'blue yeti'.*tars devices"):
        MicrophoneSource("blue yeti").open()
    with pytest.raises(VoiceUnavailable, match="device 0 is not a microphone"):
        MicrophoneSource("0").open()
    report = devices_report()
    assert "USB Mic" in report and "HDMI" not in report and "*   1" in report


def test_device_error_on_open_is_voice_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, FakePortAudio([device(3, "USB Mic")], fail_open=True))
    with pytest.raises(VoiceUnavailable, match=r"cannot open microphone 'USB Mic'.*Device unav"):
        MicrophoneSource("usb").open()


def test_microphone_at_48k_delivers_16k_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    t = np.arange(48000) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    fake = use(monkeypatch, FakePortAudio([device(2, "USB Mic")], audio=tone))
    source = MicrophoneSource("USB", stall_timeout_s=0.5)
    frames = []
    with pytest.raises(VoiceUnavailable, match="stopped delivering audio"), source:
        for frame in source.frames():  # one second of audio, then the device goes quiet
            frames.append(frame)
    assert fake.opened == [48000]  # 16 kHz refused, opened at the device's own rate
    audio = np.concatenate(frames)
    assert all(len(f) == FRAME_SAMPLES for f in frames)
    assert abs(len(audio) - 16000) <= 2 * FRAME_SAMPLES  # less what the filter still holds
    crossings = np.sum(np.diff(np.signbit(audio[100:-100]).astype(int)) != 0)
    seconds = (len(audio) - 200) / 16000
    assert crossings / 2 / seconds == pytest.approx(440, rel=0.03)


def test_microphone_closed_by_the_caller_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, FakePortAudio([device(0, "Mic", rate=16000.0)], stall=True))
    source = MicrophoneSource("", stall_timeout_s=5.0)
    source.open()
    threading.Timer(0.2, source.close).start()
    started = time.monotonic()
    assert list(source.frames()) == []
    assert time.monotonic() - started < 1.0

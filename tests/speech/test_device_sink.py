"""The speaker sink's logic against a stand-in PortAudio (this machine has no sound
card): buffering, an immediate stop, a device at a foreign rate, names and indexes."""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any

import numpy as np
import pytest

from tars_assistant.speech.events import SpeechFinished, SpeechUnavailable
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.speech.sinks import DeviceSink, list_output_devices
from tars_assistant.speech.speaker import Speaker
from tars_core.settings.tts import TTSConfig
from tests.speech.support import EventLog


class FakeStream:
    """An output stream that pulls audio through the callback in real time."""

    latency = 0.02

    def __init__(self, owner: FakePortAudio, samplerate: float, callback: Any, **_: Any):
        if owner.refuse_rate and samplerate != owner.native:
            raise owner.PortAudioError("Invalid sample rate")
        owner.opened.append(int(samplerate))
        owner.streams.append(self)
        self.rate, self.callback, self.owner = int(samplerate), callback, owner
        self.active = False
        self.aborted_at: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        frames = round(self.rate * 0.01)
        out = np.zeros((frames, 1), dtype=np.int16)
        while self.active:
            self.callback(out, frames, None, None)
            if self.active and out.any():
                self.owner.played.append((time.monotonic(), out[:, 0].copy()))
            time.sleep(frames / self.rate)

    def abort(self) -> None:
        self.active = False
        self.aborted_at = self.aborted_at or time.monotonic()  # the first abort

    def close(self) -> None:
        self.active = False


class FakePortAudio(types.ModuleType):
    class PortAudioError(Exception):
        pass

    def __init__(self, devices: list[dict[str, Any]], *, native: int = 48000, refuse: bool = False):
        super().__init__("sounddevice")
        self.devices, self.native, self.refuse_rate = devices, native, refuse
        outputs = [d["index"] for d in devices if d["max_output_channels"] > 0]
        self.default = types.SimpleNamespace(device=[-1, outputs[0] if outputs else -1])
        self.opened: list[int] = []
        self.streams: list[FakeStream] = []
        self.played: list[tuple[float, np.ndarray]] = []

    def query_devices(self, device: Any = None, kind: str | None = None) -> Any:
        if kind is None:
            return self.devices
        index = self.default.device[1] if device is None else device
        info = next(d for d in self.devices if d["index"] == index)
        return {**info, "default_samplerate": float(self.native)}

    def OutputStream(self, **kwargs: Any) -> FakeStream:  # sounddevice's name
        return FakeStream(self, **kwargs)


def device(index: int, name: str, outputs: int = 2) -> dict[str, Any]:
    return {"index": index, "name": name, "max_output_channels": outputs, "max_input_channels": 0}


def use(monkeypatch: pytest.MonkeyPatch, fake: FakePortAudio) -> FakePortAudio:
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    return fake


def test_devices_are_picked_by_name_or_index(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, FakePortAudio([device(0, "Mic", outputs=0), device(3, "USB Headset")]))
    assert list_output_devices() == [(3, "USB Headset", True)]
    assert DeviceSink("headset").device == 3 and DeviceSink("3").device == 3
    with pytest.raises(SpeechUnavailable, match=r"no audio output matches 'hdmi'.*3: USB"):
        DeviceSink("hdmi")
    with pytest.raises(SpeechUnavailable, match="device 0 is not an audio output"):
        DeviceSink("0")
    use(monkeypatch, FakePortAudio([device(0, "Mic", outputs=0)]))
    with pytest.raises(SpeechUnavailable, match="no audio output device"):
        DeviceSink("")


@pytest.mark.slow
def test_stop_silences_the_device_within_100_ms(
    monkeypatch: pytest.MonkeyPatch, piper: PiperEngine
) -> None:
    fake = use(monkeypatch, FakePortAudio([device(1, "Speakers")], refuse=True))
    log = EventLog()
    sink = DeviceSink("")
    speaker = Speaker(TTSConfig(), sink, engine=piper, on_event=log, on_level=log.level)
    try:
        speaker.say("This is played on a device at its own rate. It goes on for a while.")
        assert log.started.wait(30)
        time.sleep(0.5)
        pressed = time.monotonic()
        speaker.stop()
        time.sleep(0.2)
    finally:
        speaker.close()
    assert fake.opened == [48000]  # 22050 refused: opened at the device rate, resampled
    last_sound = max(t for t, _ in fake.played)
    assert last_sound - pressed < 0.1
    stream = fake.streams[0]
    assert stream.aborted_at is not None and stream.aborted_at - pressed < 0.1
    heard = np.concatenate([block for _, block in fake.played])
    assert 0.3 < len(heard) / 48000 < 1.0  # what played before the stop, at 48 kHz
    assert len(log.levels) > 5


@pytest.mark.slow
def test_a_reply_plays_to_the_end_then_drains(
    monkeypatch: pytest.MonkeyPatch, piper: PiperEngine
) -> None:
    fake = use(monkeypatch, FakePortAudio([device(1, "Speakers")], native=22050))
    log = EventLog()
    speaker = Speaker(TTSConfig(), DeviceSink(""), engine=piper, on_event=log)
    try:
        started = time.monotonic()
        speaker.say("Short and sweet.")
        assert speaker.wait(30)
        took = time.monotonic() - started
    finally:
        speaker.close()
    assert fake.opened == [22050]
    heard = np.concatenate([block for _, block in fake.played])
    (done,) = log.of(SpeechFinished)
    assert isinstance(done, SpeechFinished)
    # Every sound block was played (the silent pause after the sentence is not recorded).
    assert len(heard) / 22050 == pytest.approx(done.metrics.audio_s, abs=0.05)
    assert took >= done.metrics.audio_s  # wait() returned once the speakers were done

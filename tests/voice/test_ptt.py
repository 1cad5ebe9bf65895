"""Push-to-talk sessions in real time, with a file playing the part of the microphone."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import Frame, MicrophoneSource, VoiceUnavailable
from tars_assistant.voice.events import (
    ErrorEvent,
    FinalEvent,
    LevelEvent,
    PartialEvent,
    StateEvent,
    VoiceState,
)
from tars_assistant.voice.ptt import PushToTalk
from tars_assistant.voice.stt import Decoded, WhisperEngine
from tars_core.settings.voice import VoiceConfig
from tests.voice.support import CountingSource, Recorder, SpokenClip, silence

pytestmark = [pytest.mark.slow, pytest.mark.audio]


class ThreadNotingEngine(WhisperEngine):
    """The real engine, noting which threads load and decode."""

    def __init__(self, shared: WhisperEngine):
        super().__init__(shared.config)
        self._shared = shared
        self.threads: set[str] = set()

    def model(self) -> Any:
        self.threads.add(threading.current_thread().name)
        return self._shared.model()

    def decode(self, audio: npt.ArrayLike, *, final: bool, prefix: str = "") -> Decoded:
        self.threads.add(threading.current_thread().name)
        return self._shared.decode(audio, final=final, prefix=prefix)


def states(record: Recorder) -> list[VoiceState]:
    return [e.state for e in record.of(StateEvent)]


def test_a_session_in_real_time(corpus: list[SpokenClip], engine: WhisperEngine) -> None:
    clip = corpus[0].clip
    source = CountingSource(clip.samples, realtime=True)
    record = Recorder(source)
    noting = ThreadNotingEngine(engine)
    ptt = PushToTalk(VoiceConfig(), record, source_factory=lambda: source, engine=noting)
    assert ptt.start()
    assert not ptt.start()  # one session at a time
    assert ptt.wait(30) and not ptt.active

    # Whisper ran on the voice threads only, never on the caller's
    assert noting.threads and threading.current_thread().name not in noting.threads
    kinds = record.kinds()
    assert kinds[0] == "StateEvent" and kinds[-2:] == ["FinalEvent", "StateEvent"]
    assert states(record) == [
        VoiceState.LISTENING,
        VoiceState.HEARING,
        VoiceState.TRANSCRIBING,
        VoiceState.IDLE,
    ]
    assert source.started_at is not None
    speech_end = source.started_at + clip.speech_end_s
    partials = [(e, at) for e, _, at in record.events if isinstance(e, PartialEvent)]
    assert len(partials) >= 2 and partials[0][1] < speech_end - 0.5
    committed = [e.committed.split() for e, _ in partials]
    for before, after in itertools.pairwise(committed):
        assert after[: len(before)] == before

    final = record.of(FinalEvent)[0]
    assert synth.word_errors(clip.text, final.text)[0] <= 2, final.text
    timings = final.timings
    assert timings is not None and timings.reason == "hangover"
    assert 0 <= timings.end_to_final_s < 2.0
    assert timings.partial_interval_s is not None and 0.3 < timings.partial_interval_s < 2.0
    assert timings.compute_s >= timings.final_compute_s > 0

    levels = record.of(LevelEvent)
    assert len(levels) > clip.speech_end_s * 10  # ~16 a second
    assert any(lv.voiced for lv in levels) and min(lv.dbfs for lv in levels) < -90


def test_stop_during_speech_finishes_what_was_heard(
    corpus: list[SpokenClip], engine: WhisperEngine
) -> None:
    clip = corpus[2].clip
    record = Recorder()
    source = CountingSource(clip.samples, realtime=True)
    ptt = PushToTalk(VoiceConfig(), record, source_factory=lambda: source, engine=engine)
    ptt.start()
    time.sleep(clip.speech_start_s + 1.5)
    ptt.stop()
    assert ptt.wait(10)
    final = record.of(FinalEvent)[0]
    assert final.timings is not None and final.timings.reason == "stopped"
    assert 0 < len(final.text.split()) < len(clip.text.split())
    assert source.delivered * 0.03 < clip.speech_end_s  # the microphone was let go at once
    assert states(record)[-1] == VoiceState.IDLE


def test_cancel_discards_and_a_new_session_can_start_at_once(
    corpus: list[SpokenClip], engine: WhisperEngine
) -> None:
    clip = corpus[1].clip
    record = Recorder()
    first = CountingSource(clip.samples, realtime=True)
    sources = iter([first, CountingSource(np.concatenate((clip.samples[:16000], silence(0.5))))])
    ptt = PushToTalk(VoiceConfig(), record, source_factory=lambda: next(sources), engine=engine)
    ptt.start()
    time.sleep(clip.speech_start_s + 1.2)
    ptt.cancel()
    # IDLE is reported at once, from the caller's thread, and nothing comes after it
    assert record.of(StateEvent)[-1].state == VoiceState.IDLE
    count = len(record.events)
    assert not ptt.active
    assert ptt.start()  # a new session (fast file) while the old one winds down
    assert ptt.wait(15)
    later = [e for e, _, _ in record.events[count:]]
    assert next(e.state for e in later if isinstance(e, StateEvent)) == VoiceState.LISTENING
    assert len([e for e in record.events if isinstance(e[0], FinalEvent)]) == 1
    assert isinstance(later[-1], StateEvent) and later[-1].state == VoiceState.IDLE


def test_stop_before_any_speech_gives_an_empty_final(engine: WhisperEngine) -> None:
    record = Recorder()
    source = CountingSource(silence(10.0), realtime=True)
    ptt = PushToTalk(VoiceConfig(), record, source_factory=lambda: source, engine=engine)
    ptt.start()
    time.sleep(0.3)
    ptt.stop()
    assert ptt.wait(5)
    assert record.of(FinalEvent) == [FinalEvent("", None)]
    assert states(record) == [VoiceState.LISTENING, VoiceState.IDLE]


def test_no_speech_timeout_ends_a_silent_session(engine: WhisperEngine) -> None:
    record = Recorder()
    config = dataclasses.replace(VoiceConfig(), no_speech_timeout_s=0.6)
    source = CountingSource(synth.white_noise(10.0, -50.0), realtime=True)
    ptt = PushToTalk(config, record, source_factory=lambda: source, engine=engine)
    started = time.monotonic()
    ptt.start()
    assert ptt.wait(5)
    assert time.monotonic() - started < 1.5
    assert record.of(FinalEvent) == [FinalEvent("", None)]


def test_no_portaudio_disables_voice_with_the_message(no_portaudio: None) -> None:
    record = Recorder()
    ptt = PushToTalk(VoiceConfig(), record)  # the default source: the microphone
    ptt.start()
    assert ptt.wait(5)
    errors = record.of(ErrorEvent)
    assert len(errors) == 1 and errors[0].unavailable and "libportaudio2" in errors[0].message
    assert states(record) == [VoiceState.IDLE] and record.of(FinalEvent) == []


class BrokenMicrophone(MicrophoneSource):
    """A device that fails to open, as PortAudio reports it."""

    def open(self) -> None:
        raise VoiceUnavailable("cannot open microphone 'USB': Device unavailable [-9985]")


def test_a_device_error_is_reported_and_the_next_press_tries_again(
    corpus: list[SpokenClip], engine: WhisperEngine
) -> None:
    record = Recorder()
    sources = iter([BrokenMicrophone("USB"), CountingSource(corpus[4].clip.samples)])
    ptt = PushToTalk(VoiceConfig(), record, source_factory=lambda: next(sources), engine=engine)
    ptt.start()
    assert ptt.wait(5)
    error = record.of(ErrorEvent)
    assert len(error) == 1 and error[0].unavailable and "Device unavailable" in error[0].message
    assert states(record) == [VoiceState.IDLE]
    ptt.start()
    assert ptt.wait(15)
    assert synth.word_errors(corpus[4].clip.text, record.of(FinalEvent)[0].text)[0] <= 2


def test_a_missing_model_is_reported_not_raised(tmp_path: Path) -> None:
    config = dataclasses.replace(VoiceConfig(), model=str(tmp_path / "no-model"))
    record = Recorder()
    source = CountingSource(np.zeros(16000 * 20, np.int16), realtime=True)
    ptt = PushToTalk(config, record, source_factory=lambda: source)
    ptt.preload().join(10)
    assert ptt.start()
    assert ptt.wait(10)
    errors = record.of(ErrorEvent)
    assert len(errors) == 2 and all(e.unavailable and "no-model" in e.message for e in errors)
    assert states(record)[-1] == VoiceState.IDLE and record.of(FinalEvent) == []


def test_a_file_can_play_the_microphone(
    audio_dir: Path, speak: Callable[..., Frame], engine: WhisperEngine
) -> None:
    text = "Good morning to you."
    path = synth.write_wav(
        audio_dir / "as-mic.wav", np.concatenate((silence(0.3), speak(text), silence(1.0)))
    )
    config = dataclasses.replace(VoiceConfig(), input_device=f"file:{path}")
    record = Recorder()
    ptt = PushToTalk(config, record, engine=engine)
    started = time.monotonic()
    ptt.start()
    assert ptt.wait(10)
    assert time.monotonic() - started > 1.0  # played in real time
    assert synth.word_errors(text, record.of(FinalEvent)[0].text)[0] <= 1

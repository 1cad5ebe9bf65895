"""The VAD gate on synthetic speech, silence and noise (real webrtcvad, no Whisper)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import FRAME_S, FRAME_SAMPLES, Frame
from tars_assistant.voice.vad import GateStep, VadGate
from tars_core.settings.voice import VoiceConfig
from tests.voice.support import SpokenClip, silence

pytestmark = pytest.mark.audio


@dataclass
class Span:
    start_s: float  # audio time of the first frame the utterance carries (pre-roll included)
    started_at_s: float  # audio time when the gate decided speech had started
    end_s: float  # audio time when the gate decided it had ended
    reason: str
    frames: int


def run_gate(samples: Frame, config: VoiceConfig | None = None) -> tuple[list[Span], bool]:
    """Utterances the gate finds, and whether one is still open at the end."""
    gate = VadGate(config or VoiceConfig())
    spans: list[Span] = []
    frames = 0
    for i in range(len(samples) // FRAME_SAMPLES):
        step: GateStep = gate.push(samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        now = (i + 1) * FRAME_S
        if step.started:
            frames = len(step.audio)
            spans.append(Span(now - frames * FRAME_S, now, -1.0, "", 0))
        elif step.audio:
            frames += 1
        if step.ended:
            spans[-1].end_s, spans[-1].reason, spans[-1].frames = now, step.reason, frames
    return spans, gate.in_speech


COLOURS = ["white", "pink", "brown", "hum"]


@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("dbfs", [-60.0, -40.0])
@pytest.mark.parametrize("lead_s", [0.0, 1.0], ids=["from-start", "after-silence"])
def test_steady_noise_is_not_speech(colour: str, dbfs: float, lead_s: float) -> None:
    noise = np.concatenate((silence(lead_s), synth.noise(5.0, dbfs, colour, seed=7)))
    spans, open_ = run_gate(noise)
    assert spans == [] and not open_


def test_digital_silence_is_not_speech() -> None:
    spans, open_ = run_gate(silence(5.0))
    assert spans == [] and not open_


def test_each_sentence_is_one_utterance_covering_the_speech(corpus: list[SpokenClip]) -> None:
    config = VoiceConfig()
    for item in corpus:
        clip = item.clip
        spans, open_ = run_gate(clip.samples, config)
        assert len(spans) == 1 and not open_, (item.voice, spans)
        span = spans[0]
        assert span.reason == "hangover"
        # started promptly, with the pre-roll reaching back before the first syllable
        assert span.started_at_s - clip.speech_start_s < 0.25
        assert span.start_s <= clip.speech_start_s
        # ended after the speech, within the hangover (+ one frame of rounding)
        assert clip.speech_end_s - 0.3 < span.end_s - config.hangover_ms / 1000
        assert span.end_s <= clip.speech_end_s + config.hangover_ms / 1000 + FRAME_S


@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("noise_dbfs", [-60.0, -40.0])
def test_speech_followed_by_noise_ends_within_hangover(
    speak: Callable[..., Frame], noise_dbfs: float, colour: str
) -> None:
    config = VoiceConfig()
    speech = speak("Turn off the lights in the kitchen please.", "en-gb", 170)
    noise = synth.noise(4.0, noise_dbfs, colour, seed=3)
    samples = np.concatenate((silence(1.0), speech, noise))
    speech_end_s = 1.0 + len(speech) / 16000
    spans, open_ = run_gate(samples, config)
    assert len(spans) == 1 and not open_  # and the noise after it starts nothing
    assert spans[0].end_s <= speech_end_s + (config.hangover_ms + 300) / 1000
    if (colour, noise_dbfs) == ("white", -40.0):  # webrtcvad alone calls this noise speech
        gate = VadGate(config)
        first_noise = round(speech_end_s * 16000 / FRAME_SAMPLES) + 1
        flags = [
            gate.is_speech(samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
            for i in range(len(samples) // FRAME_SAMPLES)
        ]
        assert np.mean(flags[first_noise:]) > 0.5


@pytest.mark.parametrize("colour", COLOURS)
def test_speech_in_steady_noise_is_found(speak: Callable[..., Frame], colour: str) -> None:
    speech = speak("What is the weather going to be like in London?", "en-us", 150)
    clip = synth.compose(speech, "", lead_s=2.0, trail_s=2.0)
    samples = synth.mix(clip.samples, synth.noise(clip.duration_s, -40.0, colour, seed=5))
    spans, open_ = run_gate(samples)
    assert len(spans) == 1 and not open_
    assert spans[0].start_s <= clip.speech_start_s < spans[0].end_s
    assert spans[0].started_at_s < clip.speech_start_s + 0.3  # the first word is not lost
    assert spans[0].end_s <= clip.speech_end_s + 0.6 + 0.3


def test_two_sentences_apart_are_two_utterances(speak: Callable[..., Frame]) -> None:
    a = speak("Good morning.", "en-us", 160)
    b = speak("Read my messages.", "en-gb", 160)
    spans, _ = run_gate(np.concatenate((silence(0.5), a, silence(1.5), b, silence(1.0))))
    assert len(spans) == 2


def test_preroll_and_hangover_follow_the_config(speak: Callable[..., Frame]) -> None:
    speech = speak("Please remind me to call the dentist tomorrow morning.", "en-gb", 160)
    samples = np.concatenate((silence(1.0), speech, silence(3.0)))
    short, _ = run_gate(samples, VoiceConfig(preroll_ms=0, hangover_ms=300))
    long, _ = run_gate(samples, VoiceConfig(preroll_ms=600, hangover_ms=1200))
    assert long[0].start_s < short[0].start_s - 0.5
    assert long[0].end_s - short[0].end_s == pytest.approx(0.9, abs=0.07)


def test_max_utterance_length_cuts_long_speech(speak: Callable[..., Frame]) -> None:
    speech = speak("Can you explain how the memory index works on the second machine?")
    config = dataclasses.replace(VoiceConfig(), max_utterance_s=1.5)
    spans, _ = run_gate(np.concatenate((silence(0.5), speech, silence(2.0))), config)
    assert spans[0].reason == "max_length"
    assert spans[0].frames == round(1.5 / FRAME_S)


def test_finish_ends_an_open_utterance(speak: Callable[..., Frame]) -> None:
    gate = VadGate(VoiceConfig())
    samples = np.concatenate((silence(0.5), speak("Hello there, how are you today?")))
    for i in range(len(samples) // FRAME_SAMPLES):
        gate.push(samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
    assert gate.in_speech
    step = gate.finish("stopped")
    assert step is not None and step.ended and step.reason == "stopped"
    assert step.speech_frames > 0 and not gate.in_speech
    assert gate.finish() is None


def test_frames_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match="480"):
        VadGate(VoiceConfig()).push(np.zeros(160, dtype=np.int16))

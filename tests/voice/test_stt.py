"""Whisper behind WhisperEngine: the real tiny.en, and the hallucination guard."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import Frame, VoiceUnavailable
from tars_assistant.voice.stt import Hypothesis, WhisperEngine, guard, near_silent
from tars_core.settings.voice import VoiceConfig
from tests.voice.support import silence

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "make",
    [
        lambda: silence(5.0),
        lambda: synth.white_noise(5.0, -60.0, seed=1),
        lambda: synth.white_noise(5.0, -40.0, seed=2),
    ],
    ids=["silence", "noise-60dBFS", "noise-40dBFS"],
)
def test_silence_and_noise_decode_to_nothing(
    engine: WhisperEngine, make: Callable[[], Frame]
) -> None:
    # no VAD gate here: Whisper itself sees the audio, and says "You" to silence
    for final in (True, False):
        assert engine.decode(make(), final=final).text == ""


@pytest.mark.audio
def test_partial_and_final_decodes_read_speech(
    engine: WhisperEngine, speak: Callable[..., Frame]
) -> None:
    text = "Please remind me to call the dentist tomorrow morning."
    audio = np.concatenate((silence(0.3), speak(text, "en-gb", 160), silence(0.3)))
    final = engine.decode(audio, final=True)
    partial = engine.decode(audio, final=False)
    assert synth.word_errors(text, final.text)[0] <= 1
    assert synth.word_errors(text, partial.text)[0] <= 2
    assert final.audio_s == pytest.approx(len(audio) / 16000)
    assert partial.compute_s > 0 and final.compute_s > 0
    # a forced prefix is kept at the start of the hypothesis
    primed = engine.decode(audio[: 2 * 16000], final=False, prefix="Please remind")
    assert primed.text.startswith("Please remind")


def test_guard_drops_what_whisper_says_to_silence() -> None:
    quiet = silence(2.0).astype(np.float32)
    loud = synth.white_noise(2.0, -20.0).astype(np.float32) / 32768
    loud[: 16000 // 2] *= 0.01  # a loud stretch after a quiet one, like speech after a pause

    def seg(text: str, no_speech: float = 0.1) -> Hypothesis:
        return Hypothesis(text, no_speech, -0.5)

    kept, dropped = guard([seg(" You"), seg(" Thank you.")], quiet, 0.6)
    assert kept == [] and dropped == ["You", "Thank you."]
    assert guard([seg(" Thank you.")], loud, 0.6) == (["Thank you."], [])
    assert guard([seg(" Thank you.", no_speech=0.4)], loud, 0.6)[0] == []
    assert guard([seg(" Open the door.", no_speech=0.7)], loud, 0.6)[0] == []
    assert guard([seg(" [BLANK_AUDIO]"), seg(" ..."), seg(" you you you")], quiet, 0.6)[0] == []
    assert guard([seg(" Hello [music] there.")], loud, 0.6)[0] == ["Hello there."]
    assert near_silent(quiet) and not near_silent(loud)
    assert near_silent(synth.white_noise(2.0, -20.0).astype(np.float32) / 32768)


def test_a_bad_model_setting_is_voice_unavailable(tmp_path: Path) -> None:
    empty = tmp_path / "model"
    empty.mkdir()
    for model in (str(tmp_path / "missing" / "dir"), str(empty), "no-such-model-name"):
        engine = WhisperEngine(dataclasses.replace(VoiceConfig(), model=model))
        with pytest.raises(VoiceUnavailable, match="model"):
            engine.load()


def test_prompt_and_hotwords_reach_the_decoder(engine: WhisperEngine) -> None:
    config = dataclasses.replace(VoiceConfig(), initial_prompt="TARS, Alice.", hotwords="FAISS")
    primed = WhisperEngine(config)
    primed._model = engine.model()  # share the loaded model
    final = primed._options(final=True, prefix="", audio_s=3.0)
    partial = primed._options(final=False, prefix="Open the", audio_s=3.0)
    assert final["initial_prompt"] == "TARS, Alice." and final["hotwords"] == "FAISS"
    assert final["beam_size"] == config.beam_size and partial["beam_size"] == 1
    # faster-whisper drops hotwords next to a prefix, so they join the prompt instead
    assert partial["hotwords"] is None and partial["initial_prompt"] == "TARS, Alice. FAISS"
    assert primed.decode(silence(1.0), final=False).text == ""

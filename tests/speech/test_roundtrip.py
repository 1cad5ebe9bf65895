"""TARS speaks to a WAV file, the bundled Whisper transcribes it: the words survive."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from tars_assistant.speech.commands import speak_text
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.speech.sinks import WavFileSink
from tars_assistant.voice import synth
from tars_assistant.voice.capture import load_audio
from tars_assistant.voice.stt import WhisperEngine
from tars_core.settings.tts import TTSConfig
from tests.speech.support import spoken_form

pytestmark = pytest.mark.slow

# Numbers, names and punctuation, as an assistant would say them.
REPLIES = (
    "Good morning, Sarah! Your meeting with Dr. Patel starts at 10:30.",
    "The train to Edinburgh leaves from platform 9 at 6 o'clock.",
    "I found 3 restaurants near you; the closest one is 2 miles away.",
    "Maria and John will arrive on Friday, March 14th.",
    "Your battery is at 85%, so you have about 4 hours left.",
    "Please call Michael back before noon!",
    "The temperature in London will reach 21 degrees tomorrow.",
    "Is the package from Amazon arriving today, or next week?",
    "Your flight to Tokyo departs in 45 minutes from gate 12.",
    "Remind me to buy milk, eggs, and bread after work.",
)


def test_spoken_form_treats_digits_and_words_alike() -> None:
    assert spoken_form("At 10:30, 85% and the 14th!") == spoken_form(
        "at ten thirty eighty-five percent and the fourteenth"
    )
    assert spoken_form("1,250 apples") == "one thousand two hundred fifty apples"


def test_whisper_understands_what_tars_says(
    tmp_path: Path, piper: PiperEngine, whisper: WhisperEngine
) -> None:
    pairs = []
    for i, reply in enumerate(REPLIES):
        path = tmp_path / f"reply{i}.wav"
        metrics = speak_text(reply, TTSConfig(), WavFileSink(path), engine=piper)
        with wave.open(str(path), "rb") as wav:
            assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
            assert wav.getframerate() == piper.sample_rate == 22050
            assert wav.getnframes() / 22050 == pytest.approx(metrics.audio_s, abs=1.0)
        assert metrics.sentences >= 1 and metrics.rtf is not None
        heard = whisper.decode(load_audio(path), final=True).text
        pairs.append((spoken_form(reply), spoken_form(heard)))
    wer = synth.word_error_rate(pairs)
    report = "\n".join(f"  said {r!r}\n  heard {h!r}" for r, h in pairs)
    print(f"round-trip WER {wer:.1%}")
    assert wer <= 0.10, f"WER {wer:.1%}:\n{report}"

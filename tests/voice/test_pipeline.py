"""The whole path on files: source -> gate -> streaming Whisper, and `tars transcribe`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import FRAME_S, AudioFileError, Frame
from tars_assistant.voice.commands import transcribe_file
from tars_assistant.voice.events import FinalEvent, PartialEvent, StateEvent, VoiceState
from tars_assistant.voice.pipeline import Pipeline
from tars_assistant.voice.stt import WhisperEngine
from tars_core.settings.voice import VoiceConfig
from tests.voice.support import CountingSource, Recorder, SpokenClip, silence

pytestmark = [pytest.mark.slow, pytest.mark.audio]


def test_sentences_through_the_file_source(corpus: list[SpokenClip], engine: WhisperEngine) -> None:
    """WER over the set, partials before the end of speech, committed words stable."""
    config = VoiceConfig()
    pairs = []
    committed_any = 0
    for item in corpus:
        clip = item.clip
        source = CountingSource(clip.samples)
        record = Recorder(source)
        finals = Pipeline(config, engine, record).run(source)
        assert len(finals) == 1, (item.voice, finals)
        pairs.append((clip.text, finals[0]))

        partials = [(e, pos) for e, pos, _ in record.events if isinstance(e, PartialEvent)]
        assert partials, item.voice
        # the first partial came while the speech was still arriving
        first_at_s = partials[0][1] * FRAME_S
        assert first_at_s < clip.speech_end_s - 0.5, (item.voice, first_at_s)
        assert sum(pos * FRAME_S < clip.speech_end_s for _, pos in partials) >= 2
        # committed words only ever grow
        committed = [e.committed.split() for e, _ in partials]
        for before, after in itertools.pairwise(committed):
            assert after[: len(before)] == before, (item.voice, before, after)
        committed_any += bool(committed[-1])

        final = record.of(FinalEvent)[0]
        assert final.text == finals[0] and final.timings is not None
        assert final.timings.reason == "hangover" and final.timings.partials >= len(partials)
        states = [e.state for e in record.of(StateEvent)]
        assert states[:3] == [VoiceState.LISTENING, VoiceState.HEARING, VoiceState.TRANSCRIBING]
    wer = synth.word_error_rate(pairs)
    assert wer <= 0.20, pairs
    # LocalAgreement commits words as it goes (a first word tiny.en keeps changing on
    # fast speech in noise can hold a whole utterance back; not most of them)
    assert committed_any >= len(corpus) - 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: silence(4.0),
        lambda: synth.white_noise(4.0, -60.0, seed=11),
        lambda: synth.white_noise(4.0, -40.0, seed=12),
        lambda: np.concatenate((silence(1.0), synth.white_noise(3.0, -40.0, seed=13))),
    ],
    ids=["silence", "noise-60dBFS", "noise-40dBFS", "silence-then-noise"],
)
def test_silence_and_noise_make_no_utterance_and_no_text(
    engine: WhisperEngine, make: Callable[[], Frame]
) -> None:
    record = Recorder()
    pipeline = Pipeline(VoiceConfig(), engine, record)
    assert pipeline.run(CountingSource(make())) == []
    assert pipeline.utterances == 0
    assert record.of(PartialEvent) == [] and record.of(FinalEvent) == []
    assert VoiceState.HEARING not in [e.state for e in record.of(StateEvent)]


def test_transcribe_file_joins_utterances_and_reports_partials(
    audio_dir: Path, speak: Callable[..., Frame], engine: WhisperEngine
) -> None:
    a = "Good morning, what is on my calendar today?"
    b = "Read me the first message from Alice."
    samples = np.concatenate(
        (silence(0.5), speak(a, "en-us", 160), silence(1.5), speak(b, "en-gb", 150), silence(1.0))
    )
    path = synth.write_wav(audio_dir / "two-utterances.wav", samples)
    partials: list[tuple[str, str]] = []
    text = transcribe_file(path, VoiceConfig(), lambda c, t: partials.append((c, t)), engine=engine)
    assert synth.word_errors(f"{a} {b}", text)[0] <= 3, text
    assert len(partials) >= 4
    assert any(c == "" for c, _ in partials[1:])  # committed text restarts for utterance two


def test_speech_cut_off_by_the_end_of_the_file_is_still_transcribed(
    audio_dir: Path, speak: Callable[..., Frame], engine: WhisperEngine
) -> None:
    text = "Turn off the lights in the kitchen."
    path = synth.write_wav(audio_dir / "cut.wav", np.concatenate((silence(0.4), speak(text))))
    record = Recorder()
    assert synth.word_errors(text, transcribe_file(path, VoiceConfig(), on_event=record))[0] <= 1
    final = record.of(FinalEvent)[0]
    assert final.timings is not None and final.timings.reason == "end_of_audio"


def test_transcribe_file_errors_are_voice_errors(tmp_path: Path, engine: WhisperEngine) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        transcribe_file(tmp_path / "missing.mp3", VoiceConfig(), engine=engine)

"""A sentence's audio comes out in chunks that add up to the same samples as decoding it whole."""

from __future__ import annotations

import importlib.abc
import itertools
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tars_assistant.speech.piper import (
    FIRST_FRAMES,
    MAX_FRAMES,
    PiperEngine,
    VitsModel,
    chunk_bounds,
    split_voice,
)
from tars_assistant.speech.voice_files import bundled_voice
from tars_core.settings.tts import TTSConfig

LONG = "The lighthouse keeper climbed the stairs every evening, lit the great lamp, and watched."


def make_session(model: Any) -> Any:
    from tars_assistant.speech.piper import _CancellableSession

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    return _CancellableSession(session, ort)


@pytest.mark.parametrize("frames", [1, 23, 24, 25, 36, 120, 121, 500, 1000])
def test_chunks_cover_every_frame_once(frames: int) -> None:
    bounds = list(chunk_bounds(frames))
    assert bounds[0][0] == 0 and bounds[-1][1] == frames
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(end - start <= MAX_FRAMES * 3 // 2 for start, end in bounds)
    assert bounds[0][1] - bounds[0][0] <= FIRST_FRAMES * 3 // 2  # the first audio is quick


def test_the_bundled_voice_decodes_in_chunks_sample_for_sample(piper: PiperEngine) -> None:
    graph = split_voice(bundled_voice().model)
    assert graph is not None and graph.conditions == ()  # one speaker: frames only
    model = VitsModel(make_session, bundled_voice().model)
    voice = piper._voice  # phonemes only
    inputs = piper._inputs(voice.phonemes_to_ids(voice.phonemize(LONG)[0]))
    model.calibrate(inputs)
    assert model.streaming and model.padding is not None and model.hop == 256
    frames, conditions = model.encode(inputs)
    assert frames.shape[-1] > 3 * FIRST_FRAMES
    whole = next(model.decode(frames, conditions, None))
    chunks = list(model.decode(frames, conditions, model.padding))
    assert len(chunks) >= 3
    assert len(chunks[0]) == FIRST_FRAMES * model.hop
    joined = np.concatenate(chunks)
    assert len(joined) == len(whole)
    assert float(np.abs(joined - whole).max()) < 1e-4
    # Without the padding the seams would show: the check is not vacuous.
    bare = np.concatenate(list(model.decode(frames, conditions, 0)))
    assert float(np.abs(bare - whole).max()) > 1e-3


def test_the_engine_streams_a_long_sentence(piper: PiperEngine) -> None:
    assert piper.streaming
    chunks = list(piper.stream(LONG))
    assert len(chunks) >= 3
    assert chunks[0].audio_s < 0.4 < sum(c.audio_s for c in chunks) / 3
    assert all(c.sample_rate == piper.sample_rate for c in chunks)
    # Each chunk's time is its own: the first one costs a fraction of the sentence.
    assert chunks[0].compute_s < 0.6 * sum(c.compute_s for c in chunks)


class _NoOnnx(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("no onnx here")
        return None


def test_without_onnx_a_voice_is_spoken_a_sentence_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NoOnnx(), *sys.meta_path])
    engine = PiperEngine(TTSConfig())
    engine.load()
    assert not engine.streaming
    chunks = list(engine.stream(LONG))
    assert len(chunks) == 1 and chunks[0].audio_s > 3.0
    assert 0.2 < float(np.abs(chunks[0].samples).max()) <= 1.0

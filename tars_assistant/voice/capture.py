"""Audio sources: 16 kHz mono int16 audio in 30 ms frames, from a microphone or a file.

Everything downstream (the VAD gate, Whisper) reads a :class:`FrameSource` and
cannot tell a microphone from a file; that is how the tests and the benchmark run
without a sound card. ``sounddevice`` (PortAudio) is imported only when a
microphone is opened or listed, so TARS starts without it.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 480
FRAME_S = FRAME_MS / 1000

Frame = npt.NDArray[np.int16]

INSTALL_PORTAUDIO = (
    "install PortAudio (Debian/Ubuntu: sudo apt-get install libportaudio2; "
    "Fedora: sudo dnf install portaudio; macOS: brew install portaudio)"
)
PICK_DEVICE = "run `tars devices` and set [voice] input_device to one of them"


class VoiceError(Exception):
    """A voice problem whose message is meant for the user."""


class VoiceUnavailable(VoiceError):
    """No usable microphone or model: PortAudio missing, no input device, a device error.

    The message says what to install or configure; the rest of TARS keeps working.
    """


class AudioFileError(VoiceError):
    """An audio file that cannot be read or decoded."""


class FrameSource(ABC):
    """A stream of :data:`FRAME_SAMPLES`-sample int16 frames at :data:`SAMPLE_RATE`.

    Use it as a context manager (``open`` / ``close``) and iterate :meth:`frames`.
    ``realtime`` is true when frames arrive at the pace of speech (a microphone, or
    a file played in real time); the pipeline then decodes in a separate thread.
    """

    realtime: bool = False
    name: str = "audio"

    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire the device or read the file; raises :class:`VoiceError`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Safe to call more than once."""

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Frames until the end of the audio (files) or until :meth:`close` (microphones)."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ArraySource(FrameSource):
    """Audio already in memory, as fast as possible or paced like a live microphone.

    In real time, frame ``i`` is released when its last sample would have been
    recorded: ``started_at + (i + 1) * FRAME_S`` (``started_at`` is a
    ``time.monotonic()`` value set when iteration begins).
    """

    def __init__(
        self, samples: npt.ArrayLike | None, *, realtime: bool = False, name: str = "audio"
    ):
        self.realtime = realtime
        self.name = name
        self._samples: Frame | None = None if samples is None else to_int16(samples)
        self.started_at: float | None = None
        self._closed = threading.Event()

    @property
    def samples(self) -> Frame:
        if self._samples is None:
            raise RuntimeError(f"{self.name}: open() the source first")
        return self._samples

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def close(self) -> None:
        self._closed.set()

    def frames(self) -> Iterator[Frame]:
        samples = self.samples
        self._closed.clear()
        self.started_at = time.monotonic()
        for index, start in enumerate(range(0, len(samples), FRAME_SAMPLES)):
            frame = samples[start : start + FRAME_SAMPLES]
            if len(frame) < FRAME_SAMPLES:
                frame = np.pad(frame, (0, FRAME_SAMPLES - len(frame)))
            if self.realtime:
                delay = self.started_at + (index + 1) * FRAME_S - time.monotonic()
                if self._closed.wait(delay) if delay > 0 else self._closed.is_set():
                    return
            elif self._closed.is_set():
                return
            yield frame


class FileSource(ArraySource):
    """A WAV/FLAC/MP3/... file (anything PyAV decodes), resampled to 16 kHz mono."""

    def __init__(self, path: str | Path, *, realtime: bool = False):
        super().__init__(None, realtime=realtime, name=str(path))
        self.path = Path(path)

    def open(self) -> None:
        if self._samples is None:
            self._samples = load_audio(self.path)


class MicrophoneSource(FrameSource):
    """The microphone through sounddevice/PortAudio.

    ``device`` is an index, a case-insensitive part of the device name, or empty for
    the system default. Opening at 16 kHz is tried first; a device that refuses it
    is opened at its own rate and resampled. Every failure (no PortAudio, no
    device, a device error, a device that stops delivering audio) raises
    :class:`VoiceUnavailable` with a message that says what to do.
    """

    realtime = True

    def __init__(
        self, device: str = "", *, stall_timeout_s: float = 2.0, max_queue_s: float = 10.0
    ):
        self.device = device.strip()
        self.name = f"microphone {self.device or '(default)'}"
        self.stall_timeout_s = stall_timeout_s
        self._queue: queue.Queue[Frame | None] = queue.Queue(
            maxsize=max(1, round(max_queue_s / FRAME_S))
        )
        self._stream: Any = None
        self._resampler: LinearResampler | None = None
        self._pending = np.zeros(0, dtype=np.int16)
        self._closed = threading.Event()
        self.dropped_frames = 0

    def open(self) -> None:
        sd = import_sounddevice()
        index = resolve_input_device(sd, self.device)
        label = self.name
        try:
            info = (
                sd.query_devices(index, "input")
                if index is not None
                else sd.query_devices(kind="input")
            )
            label = f"microphone {info['name']!r}"
            self.name = label
            native_rate = round(float(info["default_samplerate"]))
        except (sd.PortAudioError, ValueError) as exc:
            raise VoiceUnavailable(f"no usable microphone ({exc}); {PICK_DEVICE}") from None
        self._closed.clear()
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        last_error: Exception | None = None
        for rate in dict.fromkeys((SAMPLE_RATE, native_rate)):
            self._resampler = None if rate == SAMPLE_RATE else LinearResampler(rate, SAMPLE_RATE)
            self._pending = np.zeros(0, dtype=np.int16)
            try:
                stream = sd.InputStream(
                    samplerate=rate,
                    channels=1,
                    dtype="int16",
                    blocksize=round(rate * FRAME_S),
                    device=index,
                    callback=self._callback,
                )
                stream.start()
            except (sd.PortAudioError, ValueError) as exc:
                last_error = exc
                continue
            self._stream = stream
            return
        raise VoiceUnavailable(f"cannot open {label}: {last_error}; {PICK_DEVICE}")

    def close(self) -> None:
        self._closed.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # closing a broken device must not raise
                pass
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wake a reader

    def _callback(self, indata: npt.NDArray[np.int16], frames: int, when: Any, status: Any) -> None:
        block = np.array(indata[:, 0], dtype=np.int16)
        if self._resampler is not None:
            block = self._resampler.process(block)
        self._pending = np.concatenate((self._pending, block))
        while len(self._pending) >= FRAME_SAMPLES:
            frame, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            try:
                self._queue.put_nowait(frame)
            except queue.Full:  # the reader is stalled: keep the newest audio
                self.dropped_frames += 1
                try:
                    self._queue.get_nowait()
                    self._queue.put_nowait(frame)
                except (queue.Empty, queue.Full):
                    pass

    def frames(self) -> Iterator[Frame]:
        while not self._closed.is_set():
            try:
                frame = self._queue.get(timeout=self.stall_timeout_s)
            except queue.Empty:
                if self._closed.is_set():
                    return
                raise VoiceUnavailable(
                    f"{self.name} stopped delivering audio; check the device or {PICK_DEVICE}"
                ) from None
            if frame is None:
                return
            yield frame


FILE_DEVICE_PREFIX = "file:"


def open_source(device: str) -> FrameSource:
    """The source for an ``input_device`` setting: a microphone, or ``file:PATH`` to
    play an audio file in real time as if it were one (demos, pilot tests)."""
    if device.startswith(FILE_DEVICE_PREFIX):
        return FileSource(Path(device[len(FILE_DEVICE_PREFIX) :]).expanduser(), realtime=True)
    return MicrophoneSource(device)


@dataclass(frozen=True)
class InputDevice:
    """One microphone, as `tars devices` lists it."""

    index: int
    name: str
    channels: int
    default_samplerate: float
    hostapi: str
    is_default: bool

    def __str__(self) -> str:
        mark = "*" if self.is_default else " "
        return (
            f"{mark} {self.index:>3}  {self.name}  ({self.hostapi}, {self.channels} ch, "
            f"{self.default_samplerate:g} Hz)"
        )


def list_input_devices() -> list[InputDevice]:
    """The input devices PortAudio sees; raises :class:`VoiceUnavailable` without it."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = _default_input_index(sd)
    except sd.PortAudioError as exc:
        raise VoiceUnavailable(f"PortAudio cannot list devices: {exc}") from None
    found = []
    for info in devices:
        if int(info["max_input_channels"]) <= 0:
            continue
        index = int(info["index"])
        found.append(
            InputDevice(
                index=index,
                name=str(info["name"]),
                channels=int(info["max_input_channels"]),
                default_samplerate=float(info["default_samplerate"]),
                hostapi=str(hostapis[int(info["hostapi"])]["name"]),
                is_default=index == default_in,
            )
        )
    return found


def import_sounddevice() -> ModuleType:
    """sounddevice, or :class:`VoiceUnavailable` saying how to get PortAudio."""
    try:
        sounddevice = importlib.import_module("sounddevice")
    except ImportError:
        raise VoiceUnavailable(
            "the sounddevice package is missing: pip install 'tars[voice]'"
        ) from None
    except OSError:  # sounddevice raises OSError when libportaudio is not found
        raise VoiceUnavailable(f"PortAudio is not installed: {INSTALL_PORTAUDIO}") from None
    return sounddevice


def resolve_input_device(sd: Any, wanted: str) -> int | None:
    """The device index for a config value (index, name part, or empty for the default)."""
    try:
        devices = list(sd.query_devices())
    except sd.PortAudioError as exc:
        raise VoiceUnavailable(f"PortAudio cannot list devices: {exc}") from None
    inputs = [d for d in devices if int(d["max_input_channels"]) > 0]
    if not inputs:
        raise VoiceUnavailable(
            "no microphone found: connect one (and check that your user may use audio "
            "devices, e.g. the 'audio' group), then run `tars devices`"
        )
    if not wanted:
        if _default_input_index(sd) is None:
            return int(inputs[0]["index"])
        return None
    if wanted.lstrip("-").isdigit():
        index = int(wanted)
        if not any(int(d["index"]) == index for d in inputs):
            raise VoiceUnavailable(f"device {index} is not a microphone; {PICK_DEVICE}")
        return index
    matches = [d for d in inputs if wanted.lower() in str(d["name"]).lower()]
    if not matches:
        raise VoiceUnavailable(f"no microphone matches {wanted!r}; {PICK_DEVICE}")
    return int(matches[0]["index"])


def _default_input_index(sd: Any) -> int | None:
    try:
        index = int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        return None
    return index if index >= 0 else None


class LinearResampler:
    """Streaming resampler for a microphone at a foreign rate (e.g. 48 kHz -> 16 kHz).

    A moving average as long as the rate ratio, then linear interpolation: it keeps
    most aliasing out, which is all speech recognition (below 8 kHz) needs.
    """

    def __init__(self, rate_in: int, rate_out: int):
        self.step = rate_in / rate_out
        self.taps = max(1, round(self.step))
        self._kernel = np.ones(self.taps, dtype=np.float64) / self.taps
        self._data = np.zeros(0, dtype=np.float64)
        self._offset = 0  # absolute input index of self._data[0]
        self._next = 0.0  # absolute input position of the next output sample

    def process(self, block: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        data = np.concatenate((self._data, block.astype(np.float64)))
        smooth = np.convolve(data, self._kernel, mode="same") if self.taps > 1 else data
        end = self._offset + len(data) - 1 - self.taps  # the filter sees both sides up to here
        positions = np.arange(self._next, end, self.step)
        if len(positions) == 0:
            self._data = data
            return np.zeros(0, dtype=np.int16)
        out = np.asarray(
            np.interp(positions - self._offset, np.arange(len(data)), smooth), dtype=np.float64
        )
        self._next = float(positions[-1]) + self.step
        keep_from = max(0, int(self._next) - self._offset - self.taps - 1)
        self._data = data[keep_from:]
        self._offset += keep_from
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def load_audio(path: str | Path) -> Frame:
    """Decode any audio file PyAV reads into 16 kHz mono int16."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        from faster_whisper.audio import decode_audio

        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except ImportError:
        raise AudioFileError("faster-whisper is missing: pip install 'tars[voice]'") from None
    except Exception as exc:  # PyAV raises many kinds; all mean "cannot decode"
        raise AudioFileError(f"{path}: cannot decode audio ({exc})") from None
    if len(audio) == 0:
        raise AudioFileError(f"{path}: no audio in the file")
    return to_int16(audio)


def to_int16(samples: npt.ArrayLike) -> Frame:
    """int16 as is; floats in [-1, 1] scaled and clipped."""
    array = np.asarray(samples)
    if array.dtype == np.int16:
        return array.reshape(-1)
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.clip(np.round(array.reshape(-1) * 32768.0), -32768, 32767)
        return scaled.astype(np.int16)
    raise TypeError(f"audio must be int16 or float, not {array.dtype}")


def frame_dbfs(frame: Frame) -> float:
    """Level of a frame in dBFS (full-scale sine = -3 dB), floored at -100."""
    if len(frame) == 0:
        return -100.0
    x = frame.astype(np.float64)
    power = float(np.mean(x * x)) / (32768.0 * 32768.0)
    return max(-100.0, 10.0 * float(np.log10(power + 1e-12)))

"""Where speech goes: the speakers (sounddevice/PortAudio) or a WAV file.

Every sink takes int16 mono blocks and has the same life cycle, driven by the
speaker's playback thread::

    sink.start(sample_rate)   # a reply's audio begins
    sink.write(block)         # blocks about as long as the audio plays (paced sinks)
    sink.drain()              # the reply ended: wait until it has been heard
    sink.stop()               # barge-in, from any thread: silence at once, drop the rest
    sink.close()              # for good

``stop()`` may be called while ``write()`` or ``drain()`` block in another thread:
they return at once and the rest of that reply is dropped. Every sink records
``stopped_at`` (``time.monotonic()`` when it fell silent), ``first_write_at`` and
``written`` (samples at the voice's rate), which is how the tests measure barge-in.

:func:`open_sink` turns ``[tts] output_device`` into a sink: ``file:PATH`` writes
each reply to PATH (the file is rewritten per reply and is a complete WAV after
each), anything else is a speaker device by index or name part, empty the system
default. With no output device it raises :class:`SpeechUnavailable` saying how to
fix that; ``sounddevice`` is imported only then, so TARS starts without PortAudio.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
import wave
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from tars_assistant.speech.events import SpeechError, SpeechUnavailable
from tars_assistant.voice.capture import INSTALL_PORTAUDIO, LinearResampler

Block = npt.NDArray[np.int16]
FILE_PREFIX = "file:"
NO_OUTPUT_DEVICE = (
    "no audio output device, so spoken replies are off: connect speakers or headphones "
    "(and check that your user may use audio devices, e.g. the 'audio' group), or set "
    '[tts] output_device = "file:PATH" to write replies to a WAV file; '
    '`tars say "text" --to out.wav` works without a device'
)
MAX_AHEAD_S = 0.1  # audio a device sink buffers ahead of the speakers
# The device's own buffer: the callback runs in Python and needs the GIL, so a few
# milliseconds would crackle while the UI renders; stop() aborts it, so barge-in
# does not wait for it.
DEVICE_LATENCY_S = 0.06


class AudioSink(ABC):
    """See the module docstring for the life cycle."""

    name: str = "audio"
    paced: bool = True  # write() takes about as long as the audio: levels make sense

    def __init__(self) -> None:
        self.sample_rate = 0
        self.stopped_at: float | None = None
        self.first_write_at: float | None = None
        self.written = 0
        self._halt = threading.Event()

    def start(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._halt.clear()
        self._start()

    def write(self, block: Block) -> None:
        if self._halt.is_set() or len(block) == 0:
            return
        if self.first_write_at is None:
            self.first_write_at = time.monotonic()
        self.written += len(block)  # before a paced write waits, so a stop sees it
        self._write(block)

    def stop(self) -> None:
        self._halt.set()
        self._stop()
        self.stopped_at = time.monotonic()

    @property
    def halted(self) -> bool:
        return self._halt.is_set()

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _write(self, block: Block) -> None: ...

    @abstractmethod
    def drain(self) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device or file."""


class WavFileSink(AudioSink):
    """Each reply to a 16-bit mono WAV file at the voice's rate.

    ``paced``: write() waits as long as its audio lasts, like a device with no
    buffer, so stopping mid-reply means something (tests of barge-in). Unpaced,
    the file is written as fast as speech is synthesised (`tars say`).
    """

    def __init__(self, path: str | Path, *, paced: bool = False):
        super().__init__()
        self.path = Path(path).expanduser()
        self.name = f"file {self.path}"
        self.paced = paced
        self._wav: wave.Wave_write | None = None
        self._lock = threading.Lock()
        self._due = 0.0

    def _start(self) -> None:
        with self._lock:
            self._close_file()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - open across writes
            except OSError as exc:
                raise SpeechError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            self._wav = wav
        self._due = time.monotonic()

    def _write(self, block: Block) -> None:
        with self._lock:
            if self._wav is None or self._halt.is_set():
                return
            self._wav.writeframes(block.astype("<i2").tobytes())
        if self.paced:
            now = time.monotonic()
            self._due = max(self._due, now) + len(block) / self.sample_rate
            self._halt.wait(self._due - now)

    def drain(self) -> None:
        with self._lock:
            self._close_file()

    def _stop(self) -> None:
        with self._lock:
            self._close_file()

    def close(self) -> None:
        self.drain()

    def _close_file(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()


class DeviceSink(AudioSink):
    """Speakers through a sounddevice callback stream fed from a short buffer.

    ``stop()`` empties the buffer and aborts the stream, which drops what the
    device itself holds, so speech ends within a device period. A device that
    refuses the voice's rate is opened at its own and the audio resampled.
    """

    def __init__(self, device: str = ""):
        super().__init__()
        self._sd = import_sounddevice()
        self.device = resolve_output_device(self._sd, device.strip())
        self.name = f"speakers {device.strip() or '(default)'}"
        self._stream: Any = None
        self._stream_rate = 0
        self._opened_for = 0  # the voice rate the stream was opened for
        self._resampler: LinearResampler | None = None
        self._buffer: deque[Block] = deque()
        self._buffered = 0
        self._cond = threading.Condition()

    def _start(self) -> None:
        with self._cond:
            self._buffer.clear()
            self._buffered = 0
        if self._stream is None or self._opened_for != self.sample_rate:
            self._open_stream()
        if not self._stream.active:
            try:
                self._stream.start()
            except self._sd.PortAudioError as exc:
                raise SpeechUnavailable(f"cannot start {self.name}: {exc}") from None

    def _open_stream(self) -> None:
        self.close()
        sd = self._sd
        try:
            info = sd.query_devices(self.device, "output")
            native = round(float(info["default_samplerate"]))
            self.name = f"speakers {info['name']!r}"
        except (sd.PortAudioError, ValueError) as exc:
            raise SpeechUnavailable(f"no usable speakers ({exc}); {NO_OUTPUT_DEVICE}") from None
        last: Exception | None = None
        for rate in dict.fromkeys((self.sample_rate, native)):
            try:
                self._stream = sd.OutputStream(
                    samplerate=rate,
                    channels=1,
                    dtype="int16",
                    device=self.device,
                    latency=DEVICE_LATENCY_S,
                    callback=self._callback,
                )
            except (sd.PortAudioError, ValueError) as exc:
                last = exc
                continue
            self._stream_rate, self._opened_for = rate, self.sample_rate
            self._resampler = (
                None if rate == self.sample_rate else LinearResampler(self.sample_rate, rate)
            )
            return
        raise SpeechUnavailable(f"cannot open {self.name}: {last}")

    def _callback(self, outdata: Any, frames: int, when: Any, status: Any) -> None:
        out = outdata[:, 0]
        filled = 0
        with self._cond:
            while filled < frames and self._buffer:
                head = self._buffer[0]
                take = min(frames - filled, len(head))
                out[filled : filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self._buffer.popleft()
                else:
                    self._buffer[0] = head[take:]
            self._buffered -= filled
            self._cond.notify_all()
        out[filled:] = 0

    def _write(self, block: Block) -> None:
        if self._resampler is not None:
            block = self._resampler.process(block)
        limit = round(MAX_AHEAD_S * self._stream_rate)
        with self._cond:
            while self._buffered > limit and not self._halt.is_set():
                self._cond.wait(0.05)
            if not self._halt.is_set():
                self._buffer.append(block)
                self._buffered += len(block)

    def drain(self) -> None:
        with self._cond:
            while self._buffer and not self._halt.is_set():
                self._cond.wait(0.05)
        if self._stream is not None:  # what the device holds
            self._halt.wait(float(self._stream.latency))

    def _stop(self) -> None:
        with self._cond:
            self._buffer.clear()
            self._buffered = 0
            self._cond.notify_all()
        stream = self._stream
        if stream is not None and stream.active:
            with contextlib.suppress(self._sd.PortAudioError):
                stream.abort()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # closing a broken device must not raise
                pass


def open_sink(output_device: str) -> AudioSink:
    """The sink for an ``[tts] output_device`` value (see the module docstring)."""
    if output_device.startswith(FILE_PREFIX):
        return WavFileSink(Path(output_device[len(FILE_PREFIX) :]).expanduser())
    return DeviceSink(output_device)


def import_sounddevice() -> ModuleType:
    """sounddevice, or :class:`SpeechUnavailable` saying how to get it or PortAudio."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError:
        raise SpeechUnavailable(
            "spoken replies need sounddevice: pip install 'tars[tts]'"
        ) from None
    except OSError:  # raised when libportaudio is not found
        raise SpeechUnavailable(
            f"PortAudio is not installed, so spoken replies are off: {INSTALL_PORTAUDIO}"
        ) from None


def list_output_devices() -> list[tuple[int, str, bool]]:
    """(index, name, is default) of each output device; :class:`SpeechUnavailable`
    without PortAudio."""
    sd = import_sounddevice()
    try:
        devices = list(sd.query_devices())
    except sd.PortAudioError as exc:
        raise SpeechUnavailable(f"PortAudio cannot list devices: {exc}") from None
    default = _default_output_index(sd)
    return [
        (int(d["index"]), str(d["name"]), int(d["index"]) == default)
        for d in devices
        if int(d["max_output_channels"]) > 0
    ]


def resolve_output_device(sd: Any, wanted: str) -> int | None:
    """The device index for a config value (index, name part, or empty: the default)."""
    try:
        devices = list(sd.query_devices())
    except sd.PortAudioError as exc:
        raise SpeechUnavailable(f"PortAudio cannot list devices: {exc}") from None
    outputs = [d for d in devices if int(d["max_output_channels"]) > 0]
    if not outputs:
        raise SpeechUnavailable(NO_OUTPUT_DEVICE)
    names = ", ".join(f"{int(d['index'])}: {d['name']}" for d in outputs[:8])
    pick = f"set [tts] output_device to one of {names}"
    if not wanted:
        return None if _default_output_index(sd) is not None else int(outputs[0]["index"])
    if wanted.lstrip("-").isdigit():
        index = int(wanted)
        if not any(int(d["index"]) == index for d in outputs):
            raise SpeechUnavailable(f"device {index} is not an audio output; {pick}")
        return index
    matches = [d for d in outputs if wanted.lower() in str(d["name"]).lower()]
    if not matches:
        raise SpeechUnavailable(f"no audio output matches {wanted!r}; {pick}")
    return int(matches[0]["index"])


def _default_output_index(sd: Any) -> int | None:
    try:
        index = int(sd.default.device[1])
    except (TypeError, ValueError, IndexError):
        return None
    return index if index >= 0 else None

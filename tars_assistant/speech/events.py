"""What the speaker reports, as plain frozen dataclasses (no Textual here), and its errors.

The callbacks are called from the speaker's threads; a UI forwards them to its
own thread (Textual: ``post_message``, which is thread-safe). Per reply, in order:
``SpeechStarted`` when its first audio starts playing, then exactly one
``SpeechFinished`` (``stopped=True`` after :meth:`Speaker.stop`). A reply that
never produced audio (empty text, or stopped before its first sentence was ready)
gets only the ``SpeechFinished``. When synthesis or the output fails, the reply
ends with ``SpeechFailed`` instead of ``SpeechFinished``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class SpeechError(Exception):
    """A speech problem whose message is meant for the user."""


class SpeechUnavailable(SpeechError):
    """Speech cannot work here: no output device, PortAudio or piper-tts missing, no voice.

    The message says what to install or configure; the rest of TARS keeps working.
    """


@dataclass(frozen=True)
class SpeechMetrics:
    """How one spoken reply went, for the latency panel and the benchmark.

    Times are seconds; ``None`` where the stage never happened (no audio, stopped
    early). A "sentence" is one unit of the splitter: the first one of a reply may
    be a clause ("Sure,") so that speech starts sooner.
    """

    first_token_to_sentence_s: float | None  # first text fed -> first unit complete
    sentence_to_audio_s: float | None  # that unit complete -> its audio ready for the sink
    first_token_to_audio_s: float | None  # both together
    first_sentence_audio_s: float | None  # how long that first unit is when spoken
    synthesis_s: float  # Piper compute time of every unit
    audio_s: float  # audio produced (pauses between sentences excluded)
    sentences: int  # units synthesised
    stopped: bool  # stop() ended the reply

    @property
    def rtf(self) -> float | None:
        """Synthesis real-time factor: compute seconds per second of speech."""
        return self.synthesis_s / self.audio_s if self.audio_s > 0 else None


@dataclass(frozen=True)
class SpeechStarted:
    """The first audio of reply ``reply`` is playing (or written, for a file)."""

    reply: int


@dataclass(frozen=True)
class SpeechFinished:
    """Reply ``reply`` is over: played to the end, or stopped."""

    reply: int
    metrics: SpeechMetrics
    stopped: bool


@dataclass(frozen=True)
class SpeechFailed:
    """Speech failed; ``unavailable`` when it cannot work at all (see the message)."""

    message: str
    unavailable: bool


SpeechEvent = SpeechStarted | SpeechFinished | SpeechFailed
SpeechCallback = Callable[[SpeechEvent], None]
LevelCallback = Callable[[float], None]  # dBFS of the audio playing now, ~16 times a second

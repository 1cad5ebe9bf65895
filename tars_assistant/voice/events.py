"""What the voice pipeline reports, as plain frozen dataclasses (no Textual here).

The callback that receives them is called from the voice threads, one event at a
time; a UI forwards them to its own thread (Textual: ``post_message``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class VoiceState(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    HEARING = "hearing speech"
    TRANSCRIBING = "transcribing"


@dataclass(frozen=True)
class Timings:
    """How one utterance went, for the latency panel."""

    audio_s: float  # utterance audio the final decode read (pre-roll and tail included)
    end_to_final_s: float  # end of speech detected (or stop pressed) -> final text
    final_compute_s: float  # the final decode's own compute time
    speculative: bool  # the final was decoded during the hangover and was still valid
    partials: int  # partial hypotheses decoded
    partial_interval_s: float | None  # mean time between partial updates (None: fewer than 2)
    first_partial_s: float | None  # speech start -> first partial
    compute_s: float  # all Whisper time for the utterance, thrown-away decodes included
    reason: str  # why the utterance ended: hangover, max_length, stopped, end_of_audio


@dataclass(frozen=True)
class LevelEvent:
    """The input level for a meter, about 16 times a second."""

    dbfs: float  # loudest frame since the last level event
    voiced: bool  # the gate counted one of those frames as speech


@dataclass(frozen=True)
class StateEvent:
    state: VoiceState


@dataclass(frozen=True)
class PartialEvent:
    """A live hypothesis: committed words never change; tentative ones may."""

    committed: str
    tentative: str
    audio_s: float  # utterance audio this hypothesis covers

    @property
    def text(self) -> str:
        return f"{self.committed} {self.tentative}".strip()


@dataclass(frozen=True)
class FinalEvent:
    """The final text of an utterance; it replaces every partial.

    ``text`` is empty and ``timings`` None when listening ended without speech.
    """

    text: str
    timings: Timings | None


@dataclass(frozen=True)
class ErrorEvent:
    """Voice failed; the message says what to install or configure."""

    message: str
    unavailable: bool  # no microphone/model at all (VoiceUnavailable), not a one-off error


VoiceEvent = LevelEvent | StateEvent | PartialEvent | FinalEvent | ErrorEvent
EventCallback = Callable[[VoiceEvent], None]

"""Helpers shared by the voice tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from tars_assistant.voice import synth
from tars_assistant.voice.capture import ArraySource, Frame
from tars_assistant.voice.events import VoiceEvent

T = TypeVar("T")

# Several voices, speeds and pitches; two with steady background noise. No numbers in
# the sentences: "twenty" against "20" is a formatting question, not an error.
SENTENCES: tuple[tuple[str, str, int, int, float | None], ...] = (
    ("Please remind me to call the dentist tomorrow morning.", "en-gb", 160, 50, None),
    ("What is the weather going to be like in London this weekend?", "en-us", 150, 40, -50.0),
    ("Open the project notes and read me the last few meetings.", "en-gb-scotland", 180, 50, None),
    ("Set a timer and then play some quiet music.", "en-us+f3", 190, 60, -45.0),
    ("How long does it take to drive to the airport?", "en-us+m3", 130, 50, None),
    (
        "Can you explain how the memory index works on the second machine?",
        "en-us-nyc",
        165,
        50,
        None,
    ),
)


@dataclass(frozen=True)
class SpokenClip:
    clip: synth.Clip
    path: Path  # the same audio as a file (WAV or FLAC)
    voice: str
    speed: int


class CountingSource(ArraySource):
    """An in-memory source that records how many frames it has handed out, so a test
    knows where in the audio each event happened."""

    def __init__(self, samples: Frame, *, realtime: bool = False):
        super().__init__(samples, realtime=realtime, name="clip")
        self.delivered = 0

    def frames(self) -> Iterator[Frame]:
        for frame in super().frames():
            self.delivered += 1
            yield frame


@dataclass
class Recorder:
    """Collects events with the audio position (frames delivered) and the time they came."""

    source: CountingSource | None = None
    events: list[tuple[VoiceEvent, int, float]] = field(default_factory=list)

    def __call__(self, event: VoiceEvent) -> None:
        position = self.source.delivered if self.source is not None else -1
        self.events.append((event, position, time.monotonic()))

    def of(self, kind: type[T]) -> list[T]:
        return [e for e, _, _ in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e, _, _ in self.events if type(e).__name__ != "LevelEvent"]


def silence(seconds: float) -> Frame:
    return np.zeros(round(seconds * 16000), dtype=np.int16)

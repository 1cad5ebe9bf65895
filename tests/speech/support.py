"""Helpers shared by the speech tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from tars_assistant.speech.events import SpeechEvent, SpeechFinished, SpeechStarted
from tars_assistant.voice.agreement import normalise

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in words, the way a voice reads it ("twenty one")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


_TITLES = {"Dr": "doctor", "Mr": "mister", "Mrs": "missus", "Ms": "miz"}


def spoken_form(text: str) -> str:
    """Text as words to compare: numbers, ordinals and % spelled out, then normalised,
    so "21" and "twenty-one", or "85%" and "85 percent", count as the same words."""
    text = text.replace("%", " percent ").replace("&", " and ").replace("-", " ")
    # Titles are read out in full ("Dr." is spoken "doctor"): compare them so.
    text = re.sub(r"\b(Dr|Mr|Mrs|Ms)\.", lambda m: _TITLES[m.group(1)], text)

    def spell(match: re.Match[str]) -> str:
        words = number_words(int(match.group(1).replace(",", "")))
        return f" {_ordinal(words) if match.group(2) else words} "

    text = re.sub(r"(\d[\d,]*)(st|nd|rd|th)?\b", spell, text)
    return normalise(text)


@dataclass
class EventLog:
    """Speaker events with the time each arrived; ``started`` / ``finished`` are set."""

    events: list[tuple[SpeechEvent, float]] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def __call__(self, event: SpeechEvent) -> None:
        self.events.append((event, time.monotonic()))
        if isinstance(event, SpeechStarted):
            self.started.set()
        if isinstance(event, SpeechFinished):
            self.finished.set()

    def level(self, dbfs: float) -> None:
        self.levels.append(dbfs)

    def of(self, kind: type[SpeechEvent]) -> list[SpeechEvent]:
        return [e for e, _ in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e, _ in self.events]

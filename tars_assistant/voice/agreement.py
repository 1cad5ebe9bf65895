"""LocalAgreement: words two consecutive partial hypotheses agree on are committed.

Committed words never change; the rest of the newest hypothesis is tentative.
Words are compared without case or punctuation ("London," agrees with "london").
"""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[^\w\s']|_")


def normalise(text: str) -> str:
    """Lower case, no punctuation (apostrophes inside words kept), single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = _PUNCT.sub(" ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w for w in words if w)


def words_of(text: str) -> list[str]:
    return text.split()


def _key(word: str) -> str:
    return normalise(word)


def cut_loop(words: list[str], *, longest: int = 6, times: int = 3) -> list[str]:
    """The words up to the first phrase repeated ``times`` times in a row, kept once.

    A greedy decode of audio cut mid-word can loop ("Open the project. Open the
    project. Open the project."); what follows the first loop is not speech.
    """
    keys = [_key(w) for w in words]
    for start in range(len(words)):
        for size in range(1, longest + 1):
            end = start + size * times
            if end > len(words):
                break
            phrase = keys[start : start + size]
            if all(keys[start + k * size : start + (k + 1) * size] == phrase for k in range(times)):
                return words[: start + size]
    return words


class LocalAgreement:
    """Feed each new partial hypothesis to :meth:`update`."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []  # the last hypothesis's words after the committed ones

    @property
    def committed_text(self) -> str:
        return " ".join(self.committed)

    @property
    def tentative_text(self) -> str:
        return " ".join(self._previous)

    def update(self, hypothesis: str) -> tuple[str, str]:
        """Take the full text of a new hypothesis; return (committed, tentative)."""
        words = cut_loop(words_of(hypothesis))
        tail = self._after_committed(words)
        agreed = 0
        for old, new in zip(self._previous, tail, strict=False):
            if _key(old) != _key(new) or not _key(new):
                break
            agreed += 1
        self.committed.extend(tail[:agreed])
        self._previous = tail[agreed:]
        return self.committed_text, self.tentative_text

    def _after_committed(self, words: list[str]) -> list[str]:
        """The hypothesis's words after the committed ones.

        Partials are decoded with the committed text as a forced prefix, so a
        hypothesis normally starts with it; if it does not, its first
        ``len(committed)`` words stand in for the committed ones.
        """
        n = len(self.committed)
        return words[n:]

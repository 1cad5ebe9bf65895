"""Coalesce streamed tokens so the screen repaints at a bounded rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class ChunkBatcher:
    """Collects pieces and emits them joined at most ``rate_hz`` times a second.

    ``add`` is called once per token from the generating thread; ``emit`` then
    posts to the UI. Whatever is left when the reply ends comes from ``drain``.
    """

    def __init__(
        self,
        rate_hz: float,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = 1.0 / rate_hz
        self._emit = emit
        self._clock = clock
        self._pending: list[str] = []
        self._last = float("-inf")
        self.emitted = 0

    def add(self, piece: str) -> None:
        self._pending.append(piece)
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._flush()

    def drain(self) -> str:
        text = "".join(self._pending)
        self._pending.clear()
        return text

    def _flush(self) -> None:
        text = self.drain()
        if text:
            self.emitted += 1
            self._emit(text)

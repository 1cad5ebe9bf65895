"""Chat replies before background model work: one model, two kinds of users.

The engine generates one reply at a time (its lock). A project summary written
while the user chats would make the user's reply wait for the whole summary.
``ModelGate`` orders them instead:

- a chat turn holds a *claim* from the moment it is sent (before memory recall,
  which already counts tokens with the model) until it is shown;
- background work runs through :meth:`ModelGate.run_background`: it starts only
  while no claim is held, its ``should_stop`` turns true as soon as one is, and a
  job stopped that way is thrown away and run again once the claims are gone.

So a reply waits for at most the token the summary is generating, and the
summary still gets written, after the replies. Thread-safe; blocking waits run
in the background job's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from memory.project_store import StreamingEngine, Summarizer, llm_summarizer

T = TypeVar("T")


class GateClosed(Exception):
    """The gate was closed (the app is exiting): background work gives up."""


class Claim:
    """A chat turn's hold on the model; ``release`` is idempotent."""

    def __init__(self, gate: ModelGate) -> None:
        self._gate = gate
        self._released = False

    def release(self) -> None:
        with self._gate._cond:
            if self._released:
                return
            self._released = True
            self._gate._claims -= 1
            self._gate._cond.notify_all()


class ModelGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._claims = 0
        self._closed = False
        self._background = 0
        # Background jobs stopped for a reply and run again (for tests and the status).
        self.preemptions = 0

    # -- chat turns ------------------------------------------------------------------

    def claim(self) -> Claim:
        """Hold the model for a reply until ``release()``; background work steps aside."""
        with self._cond:
            self._claims += 1
        return Claim(self)

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """A claim for the duration of a ``with`` block."""
        claim = self.claim()
        try:
            yield
        finally:
            claim.release()

    @property
    def claimed(self) -> bool:
        """A reply holds or waits for the model."""
        return self._claims > 0

    @property
    def background_running(self) -> bool:
        """Background work is using (or about to use) the model now."""
        return self._background > 0

    def close(self) -> None:
        """Stop background work for good: waiting jobs raise GateClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- background work ------------------------------------------------------------

    def run_background(self, job: Callable[[Callable[[], bool]], T]) -> T:
        """Run ``job(should_stop)`` while no reply needs the model. Blocks.

        If a claim arrives while it runs, ``should_stop`` turns true; whatever the
        job then returns or raises is discarded and it runs again once no claim
        is held. An exception raised without being stopped propagates.
        """
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._claims == 0 or self._closed)
                if self._closed:
                    raise GateClosed
                self._background += 1
            stopped = False

            def should_stop() -> bool:
                nonlocal stopped
                if self._claims > 0 or self._closed:
                    stopped = True
                return stopped

            try:
                result = job(should_stop)
            except Exception:
                if not stopped:
                    raise
            else:
                if not stopped:
                    return result
            finally:
                with self._cond:
                    self._background -= 1
            with self._cond:
                self.preemptions += 1


def yielding_summarizer(engine: StreamingEngine, gate: ModelGate, max_tokens: int) -> Summarizer:
    """``llm_summarizer`` that yields the model to chat replies (see the module)."""

    def summarize(system: str, material: str) -> str:
        def job(should_stop: Callable[[], bool]) -> str:
            return llm_summarizer(engine, max_tokens, should_stop=should_stop)(system, material)

        return gate.run_background(job)

    return summarize


__all__ = ["Claim", "GateClosed", "ModelGate", "yielding_summarizer"]

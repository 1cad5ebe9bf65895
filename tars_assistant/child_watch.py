"""Notice at once when a child process dies on its own (kill -9, out of memory, a crash).

Without it, the death of the model's process would surface only at the next
request. ``ChildWatch`` waits on a duplicate of the process's sentinel in a
daemon thread (a duplicate, because ``Process.close()`` closes the original
while the thread may still be waiting on it) and calls ``on_death`` once,
unless the parent asked the child to stop first.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess

REAP_WAIT_S = 1.0


def describe_exit(code: int | None) -> str:
    """``killed by SIGKILL``, ``exit code 3``, ``exit code unknown``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def exit_code(proc: SpawnProcess) -> int | None:
    """The exit code, None while it runs or once the process object was closed."""
    try:
        return proc.exitcode
    except ValueError:
        return None


def reaped_code(proc: SpawnProcess, timeout: float = REAP_WAIT_S) -> int | None:
    """The exit code of a child that is exiting, waiting up to ``timeout`` for it.
    Two threads may reap at once (the watcher and the one that saw the pipe close):
    the loser's waitpid finds nothing, and the code shows up a moment later. None at
    once when the process object was closed meanwhile: whoever closed it had the code
    and recorded it (``ChildWatch.record``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code = proc.exitcode
        except ValueError:
            return None
        if code is not None:
            return code
        time.sleep(0.01)
    return None


class ChildWatch:
    """Calls ``on_death(what happened)`` when ``proc`` ends without being asked to."""

    def __init__(self, proc: SpawnProcess, on_death: Callable[[str], None]) -> None:
        self._proc = proc
        self._on_death = on_death
        self._asked = threading.Event()
        # Set by the parent when it ended the child for a reason of its own (it hung).
        self.reason: str | None = None
        self.code: int | None = None
        self._code_lock = threading.Lock()
        sentinel = os.dup(proc.sentinel)
        threading.Thread(
            target=self._wait, args=(sentinel,), name=f"watch-{proc.pid}", daemon=True
        ).start()

    def record(self, code: int | None) -> None:
        """The exit code, from whichever thread learnt it first; never unset again.
        (The flaky "exit code unknown": the watcher, reading a process object the
        other thread had just closed, used to overwrite the code it had recorded.)"""
        with self._code_lock:
            if self.code is None and code is not None:
                self.code = code

    def asked_to_stop(self) -> None:
        """The parent ends the child itself: its exit is no news."""
        self._asked.set()

    def death_message(self) -> str:
        code = self.code if self.code is not None else exit_code(self._proc)
        return self.reason or f"died ({describe_exit(code)})"

    def _wait(self, sentinel: int) -> None:
        try:
            wait([sentinel])
        finally:
            os.close(sentinel)
        # The sentinel closes as the child exits, a moment before it can be reaped.
        if self.code is None:
            self.record(reaped_code(self._proc))
        if not self._asked.is_set():
            self._on_death(self.death_message())


__all__ = ["ChildWatch", "describe_exit", "exit_code", "reaped_code"]

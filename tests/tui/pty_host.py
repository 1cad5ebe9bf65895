"""A tiny Textual app on TarsDriver, run on a pseudo-terminal by test_driver.py.

Usage: python -m tests.tui.pty_host LOG.jsonl. It writes one JSON line per thing the
driver reported and quits on "q".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Static

from tars_tui.messages import KeyReleased, KeyReleasesReported
from tars_tui.voice.driver import driver_class


class Host(App[None]):
    def __init__(self, log: Path) -> None:
        super().__init__()
        self.driver_class = driver_class({"ctrl+space", "f5"}, self.driver_class)
        self.journal = log.open("a", encoding="utf-8")

    def record(self, **fields: object) -> None:
        self.journal.write(json.dumps(fields) + "\n")
        self.journal.flush()

    def compose(self) -> ComposeResult:
        yield Static("pty host")

    def on_mount(self) -> None:
        self.record(kind="mounted", driver=type(self._driver).__name__)

    def on_key(self, event: events.Key) -> None:
        self.record(kind="key", key=event.key)
        if event.key == "q":
            self.exit()

    def push_to_talk_down(self) -> None:  # the driver's input thread
        self.record(kind="early")

    def on_key_released(self, message: KeyReleased) -> None:
        self.record(kind="released", key=message.key)

    def on_key_releases_reported(self, message: KeyReleasesReported) -> None:
        self.record(kind="reported", supported=message.supported, flags=message.flags)


if __name__ == "__main__":
    Host(Path(sys.argv[1])).run()

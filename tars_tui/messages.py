"""App-wide messages, posted from thread workers (``post_message`` is thread-safe)."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from node_daemon.sysinfo import SystemReading
from tars_tui.session import TurnResult
from tars_tui.voice.events import VoiceEvent


class ModelLoaded(Message):
    def __init__(self, path: Path, seconds: float) -> None:
        super().__init__()
        self.path = path
        self.seconds = seconds


class ModelLoadFailed(Message):
    def __init__(self, error: str, *, first_load: bool) -> None:
        super().__init__()
        self.error = error
        self.first_load = first_load


class ReplyChunk(Message):
    """Reply text generated since the last chunk; batched to the repaint rate."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ReplyFinished(Message):
    def __init__(self, result: TurnResult, tail: str) -> None:
        super().__init__()
        self.result = result
        self.tail = tail


class ReplyFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class NodeStarted(Message):
    def __init__(self, endpoint: str, *, restarted: bool = False) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.restarted = restarted


class NodeStartFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class VoiceChecked(Message):
    """Whether voice can work here; ``problems`` say what to install or configure."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__()
        self.problems = problems


class VoiceEventPosted(Message):
    """An event from the push-to-talk threads, forwarded to the UI."""

    def __init__(self, event: VoiceEvent) -> None:
        super().__init__()
        self.event = event


class SystemSampled(Message):
    def __init__(self, reading: SystemReading, host: str = "PC1") -> None:
        super().__init__()
        self.reading = reading
        self.host = host

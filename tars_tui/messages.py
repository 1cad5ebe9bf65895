"""App-wide messages, posted from thread workers (``post_message`` is thread-safe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from node_daemon.sysinfo import SystemReading
from tars_assistant.model_router import Loaded
from tars_assistant.session import TurnResult
from tars_assistant.speech.events import SpeechEvent
from tars_assistant.voice.events import VoiceEvent

if TYPE_CHECKING:
    from tars_assistant.speech.speaker import Speaker


class ModelLoaded(Message):
    def __init__(self, loaded: Loaded, *, reloaded: bool = False) -> None:
        super().__init__()
        self.loaded = loaded
        self.reloaded = reloaded  # after the model's process died


class ModelDied(Message):
    """The model's process died (posted from its watcher thread); ``error`` says how."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


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
    def __init__(self, error: str, tail: str = "") -> None:
        super().__init__()
        self.error = error
        self.tail = tail  # what the batcher still held: shown before the error


class ReplyRerouted(Message):
    """The model failed mid-turn and the fallback answers: ``note`` says so; ``tail`` is
    the failed reply's last text. Chunks after this belong to the fallback's reply."""

    def __init__(self, note: str, tail: str) -> None:
        super().__init__()
        self.note = note
        self.tail = tail


class ReplyInterrupted(Message):
    """The model's process died under the reply: what it said is kept, marked so."""

    def __init__(self, error: str, tail: str) -> None:
        super().__init__()
        self.error = error
        self.tail = tail


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


class KeyReleased(Message):
    """A push-to-talk key went up (only terminals that report releases; voice/driver.py)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key


class KeyReleasesReported(Message):
    """The terminal answered the driver: ``supported`` = it now reports key releases,
    so push-to-talk can be held; ``flags`` = its kitty keyboard protocol flags."""

    def __init__(self, supported: bool, flags: int) -> None:
        super().__init__()
        self.supported = supported
        self.flags = flags


class SpeakerOpened(Message):
    """The speaker for spoken replies, or why there is none (``error``, for the user)."""

    def __init__(self, speaker: Speaker | None, error: str | None) -> None:
        super().__init__()
        self.speaker = speaker
        self.error = error


class SpeechEventPosted(Message):
    """An event from the speaker's threads, forwarded to the UI."""

    def __init__(self, event: SpeechEvent) -> None:
        super().__init__()
        self.event = event


class SpeechLevelPosted(Message):
    """The level of the speech playing now, for the meter (about 16 a second)."""

    def __init__(self, dbfs: float) -> None:
        super().__init__()
        self.dbfs = dbfs

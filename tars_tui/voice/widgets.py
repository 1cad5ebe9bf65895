"""Push-to-talk in the prompt: state, level meter and the live transcript; and the
speech bar beside it: TARS speaking (with its output level) and the hands-free phase.

While listening, this takes the prompt's place: committed words in the normal
style, tentative ones dim and italic (they may still change), the state and an
input level meter in its border. The final text then lands in the prompt.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tars_assistant.voice.events import VoiceState

METER = "▁▂▃▄▅▆▇█"
FLOOR_DB = -60.0


def level_meter(dbfs: float, width: int = 8) -> str:
    """A bar for an input level: -60 dBFS (or less) is empty, 0 dBFS is full."""
    frac = min(max((dbfs - FLOOR_DB) / -FLOOR_DB, 0.0), 1.0)
    full = frac * width
    cells = []
    for i in range(width):
        part = min(max(full - i, 0.0), 1.0)
        cells.append(METER[round(part * (len(METER) - 1))] if part > 0 else " ")
    return "".join(cells)


class VoicePrompt(Static):
    DEFAULT_CSS = """
    VoicePrompt { height: auto; min-height: 3; display: none; padding: 0 1;
                  border: tall $warning; border-title-color: $warning;
                  border-subtitle-color: $text-muted; }
    VoicePrompt.-open { display: block; }
    VoicePrompt.-hearing { border: tall $success; border-title-color: $success; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.state = VoiceState.IDLE
        self.committed = ""
        self.tentative = ""
        self.dbfs = FLOOR_DB
        self.hint = "Esc discards"  # how to finish: toggle or hold (tars_tui/voice/talk.py)

    def open(self) -> None:
        self.committed = self.tentative = ""
        self.add_class("-open")
        self.show_state(VoiceState.LISTENING)

    def close(self) -> None:
        self.remove_class("-open", "-hearing")
        self.state = VoiceState.IDLE

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def show_state(self, state: VoiceState) -> None:
        self.state = state
        self.set_class(state is VoiceState.HEARING, "-hearing")
        self._refresh_border()
        self._refresh_text()

    def show_level(self, dbfs: float) -> None:
        self.dbfs = dbfs
        self._refresh_border()

    def show_partial(self, committed: str, tentative: str) -> None:
        self.committed, self.tentative = committed, tentative
        self._refresh_text()

    def _refresh_border(self) -> None:
        self.border_title = f"🎤 {self.state.value}"
        self.border_subtitle = f"{level_meter(self.dbfs)} {self.dbfs:4.0f} dBFS · {self.hint}"

    def _refresh_text(self) -> None:
        text = Text(self.committed)
        if self.tentative:
            if self.committed:
                text.append(" ")
            text.append(self.tentative, style="dim italic")
        if not text.plain:
            text = Text(
                "speak now…" if self.state is not VoiceState.TRANSCRIBING else "transcribing…",
                style="dim",
            )
        self.update(text)


class SpeechBar(Static):
    """One line under the transcript: "🔊 speaking" with the output level while TARS
    talks, and the hands-free phase while a conversation runs; hidden otherwise."""

    DEFAULT_CSS = """
    SpeechBar { height: 1; padding: 0 1; display: none; color: $text-muted; }
    SpeechBar.-shown { display: block; }
    SpeechBar.-speaking { color: $accent; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.speaking = False
        self.dbfs = FLOOR_DB
        self.phase: str | None = None  # hands-free phase, None when not in a conversation
        self.hint = ""

    def show_speaking(self, speaking: bool) -> None:
        self.speaking = speaking
        if not speaking:
            self.dbfs = FLOOR_DB
        self._refresh()

    def show_level(self, dbfs: float) -> None:
        self.dbfs = dbfs
        if self.speaking:
            self._refresh()

    def show_phase(self, phase: str | None, hint: str) -> None:
        self.phase, self.hint = phase, hint
        self._refresh()

    def _refresh(self) -> None:
        parts = []
        if self.phase is not None:
            parts.append(f"🗣 hands-free: {self.phase}")
        if self.speaking:
            parts.append(f"🔊 speaking {level_meter(self.dbfs)} · Esc stops")
        elif self.phase is not None and self.hint:
            parts.append(self.hint)
        self.set_class(bool(parts), "-shown")
        self.set_class(self.speaking, "-speaking")
        self.update("  ·  ".join(parts))

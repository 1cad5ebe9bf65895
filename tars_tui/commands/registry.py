"""The slash-command registry itself: the one list the TUI, its command palette,
plain mode, ``/help`` and the README's table all read.

A handler gets a :class:`CommandHost` (the chat screen or the plain-mode loop)
and the text after the command name. Wrong arguments raise :class:`UsageError`;
the dispatcher answers with the command's usage, in the transcript.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tars_tui.host import CommandHost


class UsageError(Exception):
    """Wrong arguments; the message says what was wrong."""


Handler = Callable[[CommandHost, str], None]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    handler: Handler

    @property
    def slash(self) -> str:
        return f"/{self.name}"


REGISTRY: dict[str, Command] = {}
HISTORY_LIST_SIZE = 30


def command(name: str, usage: str, summary: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        REGISTRY[name] = Command(name, usage, summary, fn)
        return fn

    return register


def parse(line: str) -> tuple[str, str] | None:
    """``"/model x.gguf"`` -> ``("model", "x.gguf")``; None when not a command."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, args = text[1:].partition(" ")
    return name.lower(), args.strip()


def completions(prefix: str) -> list[Command]:
    """Commands whose name starts with what was typed after the slash."""
    want = prefix.lstrip("/").lower()
    return [c for name, c in REGISTRY.items() if name.startswith(want)]


def dispatch(host: CommandHost, line: str) -> bool:
    """Run a slash command. False if ``line`` is not one (send it to the model)."""
    parsed = parse(line)
    if parsed is None:
        return False
    name, args = parsed
    cmd = REGISTRY.get(name)
    if cmd is None:
        near = ", ".join(c.slash for c in completions(name[:1])) or "none"
        host.say(
            f"Unknown command /{name}. Type /help for the list (starting alike: {near}).", "error"
        )
        return True
    try:
        cmd.handler(host, args)
    except UsageError as exc:
        host.say(f"{exc}\nUsage: {cmd.usage}", "error")
    return True


def help_markdown(name: str | None = None) -> str:
    if name:
        cmd = REGISTRY.get(name.lstrip("/").lower())
        if cmd is None:
            raise UsageError(f"no command /{name.lstrip('/')}")
        return f"**{cmd.usage}**\n\n{cmd.summary}"
    rows = "\n".join(f"| `{_cell(c.usage)}` | {_cell(c.summary)} |" for c in REGISTRY.values())
    return "| Command | What it does |\n|---|---|\n" + rows


def _cell(text: str) -> str:
    # A "|" inside a table cell would split it (e.g. /system's "TEXT | reset").
    return text.replace("|", "\\|")

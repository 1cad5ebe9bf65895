"""Slash commands: the registry and every command in it.

Importing this package registers all commands (chat first, then memory), so the
registry is complete wherever it is read. The modules import only the registry,
never each other.
"""

from tars_tui.commands import chat, memory  # noqa: F401  (registers the commands)
from tars_tui.commands.registry import (
    HISTORY_LIST_SIZE,
    REGISTRY,
    Command,
    Handler,
    UsageError,
    command,
    completions,
    dispatch,
    help_markdown,
    parse,
)
from tars_tui.host import CommandHost, Style

__all__ = [
    "HISTORY_LIST_SIZE",
    "REGISTRY",
    "Command",
    "CommandHost",
    "Handler",
    "Style",
    "UsageError",
    "command",
    "completions",
    "dispatch",
    "help_markdown",
    "parse",
]

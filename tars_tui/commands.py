"""The slash-command registry: the one list the TUI, its command palette, plain
mode, ``/help`` and the README's table all read.

A handler gets a :class:`CommandHost` (the chat screen or the plain-mode loop)
and the text after the command name. Wrong arguments raise :class:`UsageError`;
the dispatcher answers with the command's usage, in the transcript.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from memory.conversation_store import Conversation
from tars_tui.llm import ModelError, check_gguf
from tars_tui.model_discovery import find_gguf_models
from tars_tui.session import ChatSession

Style = Literal["info", "error", "markdown"]


class CommandHost(Protocol):
    """What a front end offers the commands."""

    session: ChatSession

    def say(self, text: str, style: Style = "info") -> None: ...
    def clear_view(self) -> None: ...
    def reload_view(self) -> None: ...
    def focus_message(self, message_id: int) -> None:
        """Bring this message into view once the conversation is shown."""
        ...

    def choose_conversation(self, conversations: list[Conversation]) -> None: ...
    def switch_model(self, path: Path) -> None: ...
    def quit(self) -> None: ...


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


# -- the commands ------------------------------------------------------------


@command("help", "/help [COMMAND]", "List the commands, or explain one.")
def _help(host: CommandHost, args: str) -> None:
    host.say(help_markdown(args or None), "markdown")


@command("new", "/new", "Start a new conversation (the current one stays in /history).")
def _new(host: CommandHost, args: str) -> None:
    _no_args(args)
    host.session.new_conversation()
    host.reload_view()
    host.say("New conversation.")


@command("clear", "/clear", "Clear the screen; the conversation and its context are kept.")
def _clear(host: CommandHost, args: str) -> None:
    _no_args(args)
    host.clear_view()


@command(
    "history",
    "/history [N]",
    "List past conversations, or reopen the N-th of that list (1 = most recent).",
)
def _history(host: CommandHost, args: str) -> None:
    convs = host.session.store.list_conversations(limit=HISTORY_LIST_SIZE)
    if not args:
        if not convs:
            host.say("No conversations yet.")
            return
        host.choose_conversation(convs)
        return
    if not args.isdigit() or not 1 <= int(args) <= len(convs):
        raise UsageError(
            f"expected a number from 1 to {len(convs)}, got {args!r}"
            if convs
            else "there are no conversations to reopen"
        )
    conv = convs[int(args) - 1]
    host.session.open(conv.id)
    host.reload_view()
    host.say(f"Reopened “{conv.title or 'untitled'}”.")


@command(
    "model",
    "/model [PATH.gguf]",
    "Show the model and the GGUF files found on this machine, or switch to PATH.",
)
def _model(host: CommandHost, args: str) -> None:
    engine = host.session.engine
    if not args:
        found = find_gguf_models(host.session.config)
        current = engine.model_path
        lines = [f"**Model:** `{current or engine.model_name}`", ""]
        if found:
            lines.append("GGUF files found (switch with `/model PATH`):")
            lines += [f"- `{m.path}` ({m.size_bytes / 2**20:.0f} MiB, {m.source})" for m in found]
        host.say("\n".join(lines), "markdown")
        return
    path = Path(args).expanduser()
    try:
        check_gguf(path)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    host.switch_model(path)


@command(
    "system",
    "/system [TEXT | reset]",
    "Show the system prompt, replace it for this session, or reset it to the config's.",
)
def _system(host: CommandHost, args: str) -> None:
    session = host.session
    if not args:
        host.say(f"System prompt:\n{session.system_prompt}")
    elif args == "reset":
        session.system_prompt = session.config.llm.system_prompt
        host.say("System prompt reset to the configured one.")
    else:
        session.system_prompt = args
        host.say("System prompt set for this session ([llm] system_prompt keeps it).")


@command(
    "export",
    "/export [PATH.md]",
    "Write this conversation to a Markdown file (default: ./tars-<date>-<id>.md).",
)
def _export(host: CommandHost, args: str) -> None:
    session = host.session
    if session.conversation is None:
        raise UsageError("nothing to export yet: this conversation has no messages")
    default = f"tars-{time.strftime('%Y%m%d-%H%M')}-{session.conversation.id}.md"
    path = Path(args or default)
    try:
        written = session.export_markdown(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    host.say(f"Exported to {written.resolve()}")


@command("stats", "/stats", "Latency of recent replies, model and storage figures.")
def _stats(host: CommandHost, args: str) -> None:
    _no_args(args)
    s = host.session
    lat = s.latency
    lines = [f"**Model:** `{s.engine.model_name}` · n_ctx {s.config.llm.n_ctx}", ""]
    lines.append("| Stage | last | p50 | p95 | n |\n|---|---|---|---|---|")
    for stage in lat.stages():
        vals = lat.values(stage)
        if vals:
            lines.append(
                f"| {stage} | {vals[-1]:.1f} | {lat.percentile(stage, 50):.1f} | "
                f"{lat.percentile(stage, 95):.1f} | {len(vals)} |"
            )
    st = s.store.stats()
    lines.append("")
    lines.append(
        f"{st.conversations} conversations · {st.messages} messages · "
        f"{st.prompt_tokens + st.completion_tokens:,} tokens · "
        f"database {st.db_bytes / 2**20:.1f} MiB"
    )
    host.say("\n".join(lines), "markdown")


@command("quit", "/quit", "Leave TARS (everything is already saved).")
def _quit(host: CommandHost, args: str) -> None:
    host.quit()


def _no_args(args: str) -> None:
    if args:
        raise UsageError(f"this command takes no arguments, got {args!r}")


# The memory commands live in their own module and register into REGISTRY as well;
# importing it here makes the registry complete wherever it is read.
from tars_tui import commands_memory  # noqa: E402, F401

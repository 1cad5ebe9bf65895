"""The chat commands: /help, /new, /clear, /history, /model, /system, /export,
/stats, /speak, /talk, /quit. Importing this module registers them."""

from __future__ import annotations

import time
from pathlib import Path

from tars_assistant import profiles
from tars_assistant.llm import ModelError, check_fits, check_gguf
from tars_assistant.model_discovery import find_gguf_models
from tars_assistant.model_listing import list_profiles, markdown
from tars_assistant.model_memory import assess, free_memory, human_bytes
from tars_core.config import Config
from tars_tui.commands.registry import (
    HISTORY_LIST_SIZE,
    UsageError,
    command,
    help_markdown,
)
from tars_tui.host import CommandHost, SpeechHost


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
    "/model [NAME | PATH.gguf]",
    "List the model profiles (where each runs, whether it answers) and the GGUF files "
    "here, or switch to a profile or a file.",
)
def _model(host: CommandHost, args: str) -> None:
    session = host.session
    config = session.config
    if not args:
        header = f"**Model:** `{session.engine.label}`"
        active = getattr(session.engine, "profile", None)
        active_name = active.name if active is not None else None

        def listing() -> str:  # asks each server: off the UI thread
            rows = list_profiles(config, active_name)
            return "\n".join([header, "", markdown(rows), "", _gguf_markdown(config)])

        host.in_background(listing)
        return
    if _is_path(args):
        path = Path(args).expanduser()
        try:
            check_gguf(path)
            check_fits(path, config.llm)
        except ModelError as exc:
            raise UsageError(str(exc)) from None
        host.switch_model(path)
        return
    try:
        profiles.resolve(config, args)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    host.switch_model(args)


def _is_path(arg: str) -> bool:
    return arg.lower().endswith(".gguf") or "/" in arg or arg.startswith("~")


def _gguf_markdown(config: Config) -> str:
    found = find_gguf_models(config)
    if not found:
        return "No GGUF files found here (see `tars models`)."
    llm, free = config.llm, free_memory()
    lines = [f"GGUF files found (switch with `/model PATH`; needs at n_ctx {llm.n_ctx}):"]
    for m in found:
        fit = assess(m.path, llm.n_ctx, llm.n_gpu_layers, size_bytes=m.size_bytes, free=free)
        needs = f"needs {fit.needs}" + (
            f" — **does not fit:** {fit.problem}" if fit.problem else ""
        )
        lines.append(f"- `{m.path}` ({human_bytes(m.size_bytes)}, {m.source}; {needs})")
    return "\n".join(lines)


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
    lines = [f"**Model:** `{s.engine.label}` · n_ctx {s.config.llm.n_ctx}", ""]
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


@command(
    "speak",
    "/speak [on|off]",
    "Speak replies aloud for this session, or stop (alone: switch); F4 does the same.",
)
def _speak(host: CommandHost, args: str) -> None:
    choices: dict[str, bool | None] = {"": None, "on": True, "off": False}
    if args.lower() not in choices:
        raise UsageError(f"expected on or off, got {args!r}")
    if not isinstance(host, SpeechHost):
        raise UsageError("spoken replies need the full-screen app (`tars`); try `tars say`")
    host.set_speaking(choices[args.lower()])


@command(
    "talk",
    "/talk",
    'Hands-free conversation: listen, reply aloud, listen again, until Esc or "stop"; F6.',
)
def _talk(host: CommandHost, args: str) -> None:
    _no_args(args)
    if not isinstance(host, SpeechHost):
        raise UsageError("hands-free conversation needs the full-screen app (`tars`)")
    host.toggle_hands_free()


@command("quit", "/quit", "Leave TARS (everything is already saved).")
def _quit(host: CommandHost, args: str) -> None:
    host.quit()


def _no_args(args: str) -> None:
    if args:
        raise UsageError(f"this command takes no arguments, got {args!r}")

"""`tars`: the TUI by default, plus plain mode, ask, config, models, doctor and voice tools.

Heavy imports (Textual, llama.cpp, Whisper) happen inside the subcommand that
needs them, so `tars config` and `tars --help` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tars_core.config import Config, ConfigError, effective_items, load_config, render_template

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tars", description="TARS: a private assistant in your terminal."
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="use this config file instead of ~/.config/tars/config.toml",
    )
    parser.add_argument(
        "--plain", action="store_true", help="line mode for SSH sessions and screen readers"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("tui", help="the full-screen app (the default)")
    ask = sub.add_parser("ask", help="one reply to stdout, for pipes")
    ask.add_argument("question", help="the question; - reads it from stdin")
    cfg = sub.add_parser("config", help="print the effective config and where each value came from")
    cfg.add_argument(
        "--template", action="store_true", help="print the documented default config.toml instead"
    )
    sub.add_parser(
        "models", help="list the model profiles (where each runs) and the GGUF files found here"
    )
    sub.add_parser("doctor", help="check the model, GPU, audio and node set-up")
    tr = sub.add_parser("transcribe", help="transcribe an audio file through the voice pipeline")
    tr.add_argument("file", type=Path)
    tr.add_argument("--partials", action="store_true", help="print partial transcripts too")
    sub.add_parser("devices", help="list audio input devices for [voice] input_device")
    say = sub.add_parser("say", help="speak text with the Piper voice ([tts] output_device)")
    say.add_argument("text", help="what to say (Markdown is fine); - reads it from stdin")
    say.add_argument("--to", type=Path, metavar="FILE.wav", help="write a WAV file instead")
    srv = sub.add_parser("serve", help="the local API: OpenAI-compatible HTTP and a WebSocket")
    srv.add_argument("--bind", metavar="HOST", help="listen here instead of [api] bind")
    srv.add_argument("--port", type=int, metavar="N", help="instead of [api] port (0 = any free)")
    keys = sub.add_parser("api-key", help="make, list or revoke the API keys of tars serve")
    keys.add_argument("action", choices=["new", "list", "revoke"])
    keys.add_argument("name", nargs="?", help="the key's name (new, revoke)")
    jobs = sub.add_parser("jobs", help="maintenance: summaries, memory merges, index, outbox")
    jobs.add_argument("action", choices=["run"])
    jobs.add_argument(
        "--only",
        action="append",
        metavar="JOB",
        help="run just this job (repeatable): flush, merge, compact, summaries",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if args.command == "config" and args.template:
        print(render_template(), end="")
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"tars: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    command = args.command or ("plain" if args.plain else "tui")
    handlers = {
        "tui": _run_tui,
        "plain": _run_plain,
        "ask": _run_ask,
        "config": _run_config,
        "models": _run_models,
        "doctor": _run_doctor,
        "transcribe": _run_transcribe,
        "devices": _run_devices,
        "say": _run_say,
        "jobs": _run_jobs,
        "serve": _run_serve,
        "api-key": _run_api_key,
    }
    return handlers[command](config, args)


def _run_tui(config: Config, args: argparse.Namespace) -> int:
    if args.plain:
        return _run_plain(config, args)
    from tars_tui.app import make_app

    make_app(config, config_path=args.config).run()
    return 0


def _run_plain(config: Config, args: argparse.Namespace) -> int:
    from tars_tui.plain import run_plain

    return run_plain(config)


def _run_ask(config: Config, args: argparse.Namespace) -> int:
    from tars_assistant.backend_errors import BackendError
    from tars_assistant.llm import ChatMessage, EngineBase, ModelError
    from tars_assistant.model_router import ModelRouter

    question = sys.stdin.read() if args.question == "-" else args.question
    if not question.strip():
        print("tars ask: empty question", file=sys.stderr)
        return 1
    engine = ModelRouter(config, process=False)
    history = [ChatMessage(role="user", content=question.strip())]

    def answer(by: EngineBase) -> None:
        for piece in by.stream(engine.cfg.system_prompt, history):
            sys.stdout.write(piece)
            sys.stdout.flush()

    try:
        notice = engine.privacy_notice()
        if notice is not None:
            print(f"tars ask: {notice}", file=sys.stderr)
        try:
            engine.load()
            answer(engine)
        except BackendError as exc:
            fallback = engine.fallback_engine() if exc.transient else None
            if fallback is None:
                raise
            print(
                f"\ntars ask: {exc}; {fallback.model_name} (the fallback) answers", file=sys.stderr
            )
            answer(fallback)
    except ModelError as exc:
        print(f"tars ask: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    sys.stdout.write("\n")
    return 0


def _run_config(config: Config, args: argparse.Namespace) -> int:
    from tars_core.config import toml_value

    rows = effective_items(config)
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        print(f"{key:<{width}} = {toml_value(value):<40} # {source}")
    return 0


def _run_models(config: Config, args: argparse.Namespace) -> int:
    from tars_assistant import profiles
    from tars_assistant.model_discovery import find_gguf_models
    from tars_assistant.model_listing import list_profiles, text
    from tars_assistant.model_memory import assess, free_memory, human_bytes

    active = profiles.resolve(config).name
    print("Model profiles ([llm] model picks one; * = it; ⇄ = not on this machine):")
    print(text(list_profiles(config, active)))
    print()
    found = find_gguf_models(config)
    configured = config.llm.model_path
    if configured and not Path(configured).expanduser().is_file():
        print(f"warning: [llm] model_path {configured} does not exist", file=sys.stderr)
    if not found:
        print("No GGUF files found. Put one in ~/.cache/llama.cpp or set [llm] model_path.")
        return 1
    llm, free = config.llm, free_memory()
    vram = f", VRAM {human_bytes(free.vram_bytes)} free" if free.vram_bytes is not None else ""
    print(
        f"needs = weights + KV cache + compute at n_ctx {llm.n_ctx}; this machine: "
        f"RAM {human_bytes(free.ram_bytes)} available{vram}, n_gpu_layers {llm.n_gpu_layers}"
    )
    print(f"{'size':>9}  {'needs':>9}  {'source':<13} {'name':<40} path")
    problems = []
    for m in found:
        fit = assess(m.path, llm.n_ctx, llm.n_gpu_layers, size_bytes=m.size_bytes, free=free)
        mark = "!" if fit.problem else " "
        size = human_bytes(m.size_bytes)
        print(f"{size:>9}  {fit.needs:>8}{mark}  {m.source:<13} {m.name:<40} {m.path}")
        if fit.problem:
            problems.append(fit.problem)
    for problem in problems:
        print(f"! {problem}.")
    return 0


def _run_doctor(config: Config, args: argparse.Namespace) -> int:
    from tars_api.probe import probe_api
    from tars_tui.doctor import Check, run_checks

    api = probe_api(config)  # keys, and the port: free or a tars serve answering
    ok = True
    for check in [*run_checks(config), Check("api", api.ok, api.detail, optional=True)]:
        mark = "ok " if check.ok else ("-- " if check.optional else "!! ")
        ok = ok and (check.ok or check.optional)
        print(f"{mark} {check.name:<12} {check.detail}")
    return 0 if ok else 1


def _run_transcribe(config: Config, args: argparse.Namespace) -> int:
    from tars_assistant.voice.capture import VoiceError
    from tars_assistant.voice.commands import transcribe_file

    def show_partial(committed: str, tentative: str) -> None:
        shown = f"{committed} [{tentative}]" if tentative else committed
        print(f"… {shown}", file=sys.stderr, flush=True)

    try:
        text = transcribe_file(
            args.file, config.voice, on_partial=show_partial if args.partials else None
        )
    except (VoiceError, OSError) as exc:
        print(f"tars transcribe: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _run_devices(config: Config, args: argparse.Namespace) -> int:
    from tars_assistant.voice.capture import VoiceUnavailable
    from tars_assistant.voice.commands import devices_report

    try:
        print(devices_report())
    except VoiceUnavailable as exc:
        print(f"tars devices: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_say(config: Config, args: argparse.Namespace) -> int:
    from tars_assistant.speech import SpeechError
    from tars_assistant.speech.commands import say, summary

    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        where, metrics = say(text, config.tts, to=args.to)
    except SpeechError as exc:
        print(f"tars say: {exc}", file=sys.stderr)
        return 1
    print(summary(where, metrics), file=sys.stderr)
    return 0


def _run_serve(config: Config, args: argparse.Namespace) -> int:
    from tars_api.serve import serve_main

    return serve_main(config, bind=args.bind, port=args.port, config_path=args.config)


def _run_api_key(config: Config, args: argparse.Namespace) -> int:
    from tars_api.serve import api_key_main

    return api_key_main(config, args.action, args.name)


def _run_jobs(config: Config, args: argparse.Namespace) -> int:
    from memory.jobs import JOB_NAMES
    from tars_assistant.jobs import jobs_main

    only = tuple(args.only) if args.only else JOB_NAMES
    unknown = [name for name in only if name not in JOB_NAMES]
    if unknown:
        print(
            f"tars jobs: unknown job {unknown[0]!r}; jobs: {', '.join(JOB_NAMES)}", file=sys.stderr
        )
        return 2
    return jobs_main(config, only=only)


if __name__ == "__main__":
    raise SystemExit(main())

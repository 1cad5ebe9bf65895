"""`tars --plain` and `tars ask`: same engine, same commands, no Textual screen."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from memory.conversation_store import ConversationStore
from tars_core.config import Config
from tars_tui.plain import run_plain

REPO = Path(__file__).resolve().parents[2]


def test_plain_mode_chats_and_runs_slash_commands(config: Config) -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    with create_pipe_input() as pipe:
        pipe.send_text("Say hello\r/stats\r/nonsense\r/history\r/quit\r")
        code = run_plain(config, console=console, prompt_input=pipe, prompt_output=DummyOutput())
    text = out.getvalue()
    assert code == 0
    assert "tars:" in text and "TTFT" in text
    assert "Unknown command /nonsense" in text
    assert "1. Say hello" in text  # the history listing, titled by the first message
    with ConversationStore(config.data_dir / "tars.db") as store:
        conv = store.latest_conversation()
        assert conv is not None
        roles = [(m.role, m.status) for m in store.messages(conv.id)]
    assert roles == [("user", "complete"), ("assistant", "complete")]
    assert (config.data_dir / "plain_history").read_text().count("Say hello") == 1


def test_plain_mode_reports_a_missing_model(config: Config, tmp_path: Path) -> None:
    config = dataclasses.replace(
        config, llm=dataclasses.replace(config.llm, model_path=str(tmp_path / "no.gguf"))
    )
    out = io.StringIO()
    with create_pipe_input() as pipe:
        code = run_plain(
            config,
            console=Console(file=out, width=200),
            prompt_input=pipe,
            prompt_output=DummyOutput(),
        )
    assert code == 1
    assert "model file not found" in out.getvalue()


def run_tars(
    *args: str, stdin: str | None = None, env_extra: dict[str, str] | None = None, home: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(home / "cfg"),
        "XDG_DATA_HOME": str(home / "data"),
        "TARS_LLM__MAX_TOKENS": "24",
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "tars_tui.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_ask_prints_one_reply_for_pipes(tmp_path: Path) -> None:
    proc = run_tars("ask", "What colour is the sky?", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    piped = run_tars("ask", "-", stdin="Name a fruit.\n", home=tmp_path)
    assert piped.returncode == 0 and piped.stdout.strip()
    missing = run_tars(
        "ask", "hi", home=tmp_path, env_extra={"TARS_LLM__MODEL_PATH": str(tmp_path / "none.gguf")}
    )
    assert missing.returncode == 1
    assert "model file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_plain_mode_completes_slash_commands() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from tars_tui.plain import SlashCompleter

    def complete(text: str) -> list[str]:
        found = SlashCompleter().get_completions(Document(text), CompleteEvent())
        return [c.text for c in found]

    assert complete("/hi") == ["/history"]
    assert set(complete("/m")) == {"/model", "/memory"}
    assert complete("hello /hi") == [] and complete("/history 3") == []


def test_models_lists_the_bundled_gguf(tmp_path: Path) -> None:
    proc = run_tars("models", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bundled" in proc.stdout and "SmolLM2-135M-Instruct.Q4_1.gguf" in proc.stdout

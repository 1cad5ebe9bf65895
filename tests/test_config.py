"""Config layering, validation messages and `tars config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tars_core.config import (
    ConfigError,
    load_config,
    render_template,
    user_config_path,
)
from tars_tui import cli

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_repo_config_documents_every_key_with_its_default() -> None:
    # config.toml is generated from the schema; regenerate with `tars config --template`.
    assert (REPO / "config.toml").read_text(encoding="utf-8") == render_template()


def test_repo_config_loads_to_the_defaults() -> None:
    assert load_config(REPO / "config.toml", env={}) == load_config(env={})


def test_layers_user_file_then_env(tmp_path: Path) -> None:
    write(user_config_path(), "[llm]\nn_ctx = 2048\ntemperature = 0.2\n")
    cfg = load_config(env={"TARS_LLM__N_CTX": "1024"})
    assert cfg.llm.n_ctx == 1024
    assert cfg.llm.temperature == 0.2
    assert cfg.sources["llm.n_ctx"] == "env TARS_LLM__N_CTX"
    assert cfg.sources["llm.temperature"] == str(user_config_path())
    assert "llm.top_p" not in cfg.sources  # a default


def test_config_flag_replaces_the_user_file(tmp_path: Path) -> None:
    write(user_config_path(), "[llm]\nn_ctx = 2048\ntemperature = 0.2\n")
    other = write(tmp_path / "other.toml", "[llm]\nn_ctx = 8192\n")
    cfg = load_config(other, env={})
    assert cfg.llm.n_ctx == 8192
    assert cfg.llm.temperature == 0.7  # the user's file was not read


def test_env_values_are_typed() -> None:
    cfg = load_config(
        env={
            "TARS_UI__SHOW_PANELS": "false",
            "TARS_LLM__TOP_P": "0.5",
            "TARS_NODE__ENDPOINT": "tcp://pc2.lan:5555",
            "PATH": "/bin",
        }
    )
    assert cfg.ui.show_panels is False
    assert cfg.llm.top_p == 0.5
    assert cfg.node.endpoint == "tcp://pc2.lan:5555"


@pytest.mark.parametrize(
    ("text", "key", "expected", "found"),
    [
        ("[llm\nn_ctx = 1\n", "(syntax)", "valid TOML", "Expected ']'"),
        ("[lm]\nn_ctx = 1\n", "[lm]", "one of the sections llm, ui", "an unknown section"),
        ("[llm]\nctx = 1\n", "[llm] ctx", "one of the keys", "an unknown key"),
        ('[llm]\nn_ctx = "big"\n', "[llm] n_ctx", "an integer", "'big' (string)"),
        ("[llm]\nn_ctx = 10\n", "[llm] n_ctx", "an integer between 256 and 262144", "10 (integer)"),
        ("[llm]\ntemperature = true\n", "[llm] temperature", "a number", "True (boolean)"),
        (
            '[server]\nindex_type = "lsh"\n',
            "[server] index_type",
            "one of 'flat', 'hnsw'",
            "'lsh' (string)",
        ),
        ("llm = 3\n", "llm", "a [section] table", "3 (integer)"),
        (
            '[node]\nendpoint = "pc2:5555"\n',
            "[node] endpoint",
            "auto, off, or an endpoint like tcp://HOST:PORT",
            "'pc2:5555' (string)",
        ),
    ],
)
def test_bad_config_names_file_key_expected_and_found(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    key: str,
    expected: str,
    found: str,
) -> None:
    bad = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(bad, env={})
    message = str(err.value)
    assert message.startswith(f"{bad}: {key}: expected ")
    assert expected in message and found in message

    assert cli.main(["--config", str(bad), "config"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("tars: config error: ") and str(bad) in stderr and key in stderr


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("TARS_LLM__N_CTX", "lots", "[llm] n_ctx: expected an integer, found 'lots'"),
        ("TARS_UI__SHOW_PANELS", "maybe", "[ui] show_panels: expected true or false"),
        ("TARS_NOPE__X", "1", "nope: expected one of the sections"),
        ("TARS_LLM__NOPE", "1", "[llm] nope: expected a known key"),
    ],
)
def test_bad_environment_override(var: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={var: value})
    assert str(err.value).startswith(f"environment {var}: ")
    assert fragment in str(err.value)


def test_missing_config_flag_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml", env={})


def test_tars_config_prints_values_and_sources(tmp_path: Path) -> None:
    """The real console script, as a user runs it."""
    cfg = write(tmp_path / "c.toml", "[llm]\nmax_tokens = 64\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TARS_UI__REPAINT_HZ": "10",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "tars_tui.cli", "--config", str(cfg), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    ).stdout
    lines = {line.split("=")[0].strip(): line for line in out.splitlines()}
    assert f"# {cfg}" in lines["llm.max_tokens"] and "64" in lines["llm.max_tokens"]
    assert "# env TARS_UI__REPAINT_HZ" in lines["ui.repaint_hz"]
    assert "# default" in lines["llm.n_ctx"] and "4096" in lines["llm.n_ctx"]

    bad = write(tmp_path / "bad.toml", "[voice]\nhangover_ms = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tars_tui.cli", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"tars: config error: {bad}: [voice] hangover_ms: expected an integer "
        "between 90 and 5000, found 1 (integer)"
    )

"""The README and config.toml say what the code does: both are read from the registries."""

from __future__ import annotations

from pathlib import Path

from tars_tui.commands import help_markdown

REPO = Path(__file__).resolve().parents[1]


def test_readme_lists_the_slash_commands_as_help_does() -> None:
    assert help_markdown() in (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme and "make run" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")

"""Shared fixtures: every test gets its own config and data directories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point platformdirs (XDG) at tmp_path and drop any TARS_* overrides, so a
    developer's own config, history and node data never leak into a test."""
    home = tmp_path / "home"
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / sub))
    for var in list(os.environ):
        if var.startswith("TARS_"):
            monkeypatch.delenv(var)
    yield home


@pytest.fixture(scope="module")
def llama_server() -> Iterator[Any]:
    """llama.cpp's own server on loopback (tests/backends/conftest.py), one per module
    that uses it, and gone after it: no idle server outlives the tests that need it."""
    from tests.backends.conftest import start_llama_server

    server = start_llama_server()
    yield server
    server.kill()

"""Fixtures for driving the real app headless on the real bundled model."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from tars_core.config import Config, load_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Defaults, with short replies so tests stay quick, and data in tmp_path.

    The node is off here (chat only); tests/tui/test_node_link.py runs the real one.
    """
    base = load_config(env={})
    return dataclasses.replace(
        base,
        llm=dataclasses.replace(base.llm, n_ctx=1024, max_tokens=40, seed=1),
        node=dataclasses.replace(base.node, endpoint="off"),
        storage=dataclasses.replace(base.storage, data_dir=str(tmp_path / "data")),
    )


async def wait_until(
    pilot: Pilot[None],
    predicate: Callable[[], bool],
    timeout: float = 60.0,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)


async def type_text(pilot: Pilot[None], text: str) -> None:
    """Type into the focused prompt as a user would, key by key."""
    keys = ["space" if ch == " " else ch for ch in text]
    await pilot.press(*keys)

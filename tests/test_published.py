"""The embedded node's published endpoint file, without a node: what is written and
what a reader refuses (the live checks run against real nodes in
tests/tui/test_shared_node.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node_daemon import published


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_written_for_the_user_only_and_removed_only_by_its_node(tmp_path: Path) -> None:
    path = published.path_in(tmp_path)
    path.write_text("left by a crash")
    path.chmod(0o644)
    published.publish(tmp_path, "tcp://127.0.0.1:5999", 4242)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = published.read(tmp_path)
    assert entry is not None
    assert (entry.endpoint, entry.node_pid, entry.owner_pid, entry.curve) == (
        "tcp://127.0.0.1:5999",
        4242,
        os.getpid(),
        False,
    )
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # renamed in place
    published.unpublish(tmp_path, 4343)  # another node's: kept
    assert path.exists()
    published.unpublish(tmp_path, 4242)
    assert not path.exists()
    published.unpublish(tmp_path, 4242)  # already gone: fine


GOOD = {"endpoint": "tcp://127.0.0.1:1", "node_pid": 1, "owner_pid": 1, "curve": False,
        "started_at": 0.0}  # fmt: skip


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"endpoint": "tcp://127.0.0.1:1"}),
        json.dumps({**GOOD, "endpoint": 5}),
        json.dumps({**GOOD, "node_pid": "1"}),
        json.dumps({**GOOD, "curve": 0}),
        json.dumps({**GOOD, "format": 99}),
        json.dumps({**GOOD, "extra": True}),
    ],
)
def test_a_malformed_file_is_no_entry(tmp_path: Path, content: str) -> None:
    published.path_in(tmp_path).write_text(content)
    assert published.read(tmp_path) is None
    assert published.find_running(tmp_path) is None


@pytest.mark.parametrize("pid", [0, -1])
def test_pids_that_address_groups_are_never_alive(tmp_path: Path, pid: int) -> None:
    published.publish(tmp_path, "tcp://127.0.0.1:1", pid)
    assert published.find_running(tmp_path) is None


def test_a_dead_node_is_not_asked(tmp_path: Path) -> None:
    published.publish(tmp_path, "tcp://127.0.0.1:1", dead_pid())
    assert published.find_running(tmp_path, wait_s=60) is None  # at once: nothing to wait for

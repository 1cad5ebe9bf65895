"""`tars jobs run` while `tars` runs with `endpoint = "auto"`: the embedded node is
published in its data directory and the jobs use it; a file left by a crash is
ignored. Real `tars-node` processes on real sockets, real SQLite."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node_daemon import published
from node_daemon.client import BlockingNodeClient
from tars_assistant.jobs import jobs_main
from tars_assistant.node_link import NodeLink
from tars_core.config import Config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
JOBS = ["flush", "merge", "compact", "summaries"]


def auto(config: Config) -> Config:
    return dataclasses.replace(config, node=dataclasses.replace(config.node, endpoint="auto"))


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs after {timeout} s")


def test_jobs_use_the_node_a_running_tars_publishes(config: Config, tmp_path: Path) -> None:
    cfg = auto(config)
    owner = NodeLink(cfg)  # what `tars` does at start-up
    try:
        endpoint = owner.start()
        local = owner.local
        assert local is not None and local.pid is not None and owner.shared_by is None
        data = local.data_dir
        path = published.path_in(data)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        entry = published.read(data)
        assert entry is not None
        assert (entry.endpoint, entry.node_pid, entry.owner_pid, entry.curve) == (
            endpoint,
            local.pid,
            os.getpid(),
            False,
        )

        lines: list[str] = []
        assert jobs_main(cfg, out=lines.append) == 0, lines
        assert lines[0] == f"node: the embedded node of tars (pid {os.getpid()}) at {endpoint}"
        assert [line.split()[0] for line in lines[1:]] == JOBS, lines
        # They ran on this node, not on one of their own: it counted their compaction.
        with BlockingNodeClient(endpoint, timeout_s=5.0) as client:
            assert client.stats()["ops"]["compact"]["count"] == 1
        assert local.alive() and published.read(data) == entry  # still serving, still listed

        # An entry is believed only if that node says it is that pid on that directory.
        other = tmp_path / "other-node"
        other.mkdir()
        published.path_in(other).write_text(path.read_text(encoding="utf-8"))
        assert published.find_running(other) is None  # a live node, but not this directory's
        assert published.find_running(data) == entry
    finally:
        owner.stop()
    assert not path.exists()  # removed with the node


OWNER = """
import dataclasses, sys
from tars_core.config import load_config
from tars_assistant.node_link import NodeLink

base = load_config(env={})
cfg = dataclasses.replace(
    base,
    node=dataclasses.replace(base.node, endpoint="auto"),
    storage=dataclasses.replace(base.storage, data_dir=sys.argv[1]),
)
link = NodeLink(cfg)
link.start()
print(link.local.pid, flush=True)
sys.stdin.read()
"""


def test_an_endpoint_left_by_a_crashed_tars_is_ignored(config: Config) -> None:
    cfg = auto(config)
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(cfg.data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert owner.stdout is not None
        node_pid = int(owner.stdout.readline())
    finally:
        owner.kill()  # kill -9: no clean-up, the file stays
        owner.wait()
    wait_gone(node_pid)  # the node follows its parent
    data = cfg.data_dir / "node"
    stale = json.loads(published.path_in(data).read_text(encoding="utf-8"))
    assert stale["node_pid"] == node_pid
    assert published.find_running(data) is None

    lines: list[str] = []
    assert jobs_main(cfg, out=lines.append) == 0, lines
    assert [line.split()[0] for line in lines] == JOBS, lines  # a node of their own
    assert not published.path_in(data).exists()  # theirs replaced the stale one, then went

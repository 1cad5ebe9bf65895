"""The embedded default: LocalNode starts, stops and restarts a real child node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from node_daemon.client import BlockingNodeClient, NodeUnavailable
from node_daemon.local import LocalNode, NodeStartError
from tests.node.conftest import node_env

pytestmark = pytest.mark.slow


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_stop_and_restart_after_the_child_is_killed(tmp_path: Path) -> None:
    node = LocalNode(tmp_path / "node", start_timeout_s=120)
    try:
        endpoint = node.start()
        assert endpoint.startswith("tcp://127.0.0.1:") and node.endpoint == endpoint
        assert node.alive() and node.healthy()
        assert node.start() == endpoint  # already running: nothing new
        first_pid = node.pid
        assert first_pid is not None
        client = BlockingNodeClient(endpoint, timeout_s=10.0, retries=2)
        client.upsert([{"id": "keep", "text": "The spare key is under the blue flowerpot."}])

        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while node.alive() and time.monotonic() < deadline:  # threads exit, then it is reaped
            time.sleep(0.05)
        assert not node.alive() and not node.healthy()
        with pytest.raises(NodeUnavailable):
            client.health(timeout_s=0.3)

        assert node.restart() == endpoint  # same port: the old client just reconnects
        assert node.pid != first_pid and node.healthy() and node.restarts == 1
        hits = client.search("where is the spare key hidden?", k=1)["hits"]
        assert hits[0]["id"] == "keep"
        client.close()
        assert node.log_path.is_file()

        pid = node.pid
        assert pid is not None
        assert node.stop() == 0  # SIGTERM: a clean exit
        assert gone(pid) and not node.alive()
        with pytest.raises(RuntimeError):
            _ = node.endpoint
    finally:
        node.stop()


def test_the_child_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from node_daemon.local import LocalNode
        node = LocalNode({str(tmp_path / "node")!r})
        node.start()
        print(node.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        env=node_env(tmp_path / "home"),
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()  # no atexit, no cleanup: only the child's watchdog can notice
        parent.wait()
        assert wait_gone(child), "the node outlived its parent"
    finally:
        parent.kill()


def test_a_node_that_cannot_start_says_why(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\nembed_model = "/no/such/model"\n', encoding="utf-8")
    node = LocalNode(tmp_path / "node", config_path=cfg, start_timeout_s=60)
    with pytest.raises(NodeStartError, match="embed_model"):
        node.start()
    assert not node.alive()

"""Real `python -m node_daemon serve` processes on real loopback sockets (random ports).

Starting a node loads torch and MiniLM (seconds on 2 cores), so tests that can
share one use the session-scoped ``node`` and keep to their own namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node_daemon.client import BlockingNodeClient, NodeUnavailable

START_TIMEOUT_S = 120.0


def node_env(home: Path) -> dict[str, str]:
    """The test process's environment without TARS_* overrides, XDG dirs under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARS_")}
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    endpoint: str = ""
    stderr_path: Path = field(default_factory=Path)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()


def spawn(
    data_dir: Path,
    *,
    home: Path,
    args: tuple[str, ...] = (),
    bind: str = "tcp://127.0.0.1:*",
    files_dir: Path | None = None,
) -> Daemon:
    """Start `tars-node serve`; returns once it listens (see ``wait_ready``). Its
    endpoint file and stderr go to ``files_dir`` (default: the data directory)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = files_dir or data_dir
    endpoint_file = files / f".endpoint-{time.monotonic_ns()}"
    stderr_path = files / f"stderr-{time.monotonic_ns()}.log"
    cmd = [
        sys.executable,
        "-m",
        "node_daemon",
        "serve",
        "--bind",
        bind,
        "--data-dir",
        str(data_dir),
        "--endpoint-file",
        str(endpoint_file),
        *args,
    ]
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=node_env(home)
        )
    daemon = Daemon(proc, data_dir, stderr_path=stderr_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if endpoint_file.is_file():
            daemon.endpoint = endpoint_file.read_text().strip()
            return daemon
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode}: {daemon.stderr()[-2000:]}")
        time.sleep(0.05)
    daemon.kill9()
    raise RuntimeError(f"node did not listen: {daemon.stderr()[-2000:]}")


def wait_ready(daemon: Daemon, **client_kw: object) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with BlockingNodeClient(daemon.endpoint, timeout_s=2.0, retries=1, **client_kw) as c:  # type: ignore[arg-type]
        while time.monotonic() < deadline:
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"node died: {daemon.stderr()[-2000:]}")
            try:
                if c.health()["ready"]:
                    return
            except NodeUnavailable:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"node not ready after {START_TIMEOUT_S} s: {daemon.stderr()[-2000:]}")


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One node shared by the tests that only need a running node (own namespace each)."""
    root = tmp_path_factory.mktemp("shared-node")
    daemon = spawn(root / "data", home=root / "home")
    try:
        wait_ready(daemon)
        yield daemon
    finally:
        code = daemon.stop()
        assert code == 0, daemon.stderr()[-2000:]


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own on the shared node."""
    return str(request.node.name).replace("[", "-").replace("]", "")[:100]

"""The embedded default: `tars` runs its own node as a child process on loopback.

``LocalNode.start()`` spawns ``python -m node_daemon serve`` bound to
``tcp://127.0.0.1:*`` (the OS picks a free port; the child reports it through a
file), and waits until ``health`` says the model and index are loaded. The
child gets a new session (a Ctrl+C in the terminal is the app's to handle),
``--parent-pid`` (it exits within a second of this process dying, however that
happens), and its stdout/stderr in ``<data_dir>/logs/child-stderr.log``.
``stop()`` sends SIGTERM, then SIGKILL after a grace period. ``restart()``
reuses the previous port when it can, so existing clients just reconnect.
While the child listens, its endpoint is published in ``<data_dir>/endpoint.json``
(:mod:`node_daemon.published`), so `tars jobs run` and a second `tars` use this
node instead of stopping at its data directory's lock.

Blocking calls: use them from a thread (the TUI's thread workers). Standard
library and the node client only: no torch, no faiss in this process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from node_daemon import published
from node_daemon.client import BlockingNodeClient, NodeError, NodeUnavailable

# server.EXIT_BIND and EXIT_LOCKED, not imported: that module pulls in the model stack.
EXIT_BIND, EXIT_LOCKED = 3, 4


class NodeStartError(RuntimeError):
    """The local node did not come up; the message carries the end of its stderr."""


class NodeLocked(NodeStartError):
    """Another tars-node holds the data directory (see ``published.find_running``)."""


class LocalNode:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        config_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        python: str = sys.executable,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config_path = None if config_path is None else Path(config_path)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.python = python
        self.extra_args = extra_args
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._endpoint: str | None = None
        self._port: int | None = None
        self._lock = threading.RLock()
        atexit.register(self.stop)

    # -- state --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the local node has not been started")
        return self._endpoint

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "node.log"

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / "logs" / "child-stderr.log"

    def alive(self) -> bool:
        """The child process is running (it may still be loading: see ``healthy``)."""
        return self._proc is not None and self._proc.poll() is None

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """It answers ``health`` and is ready."""
        if not self.alive() or self._endpoint is None:
            return False
        with BlockingNodeClient(self._endpoint, timeout_s=timeout_s, retries=1) as client:
            try:
                return bool(client.health()["ready"])
            except (NodeUnavailable, NodeError):
                return False

    def __enter__(self) -> LocalNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- life ----------------------------------------------------------------------------

    def start(self) -> str:
        """Start (if not running) and wait until ready; returns the endpoint."""
        with self._lock:
            if self.alive() and self._endpoint is not None:
                return self._endpoint
            self._cleanup()
            if self._port is not None:
                try:
                    return self._start(f"tcp://127.0.0.1:{self._port}")
                except _PortTaken:
                    pass
            return self._start("tcp://127.0.0.1:*")

    def restart(self) -> str:
        """Stop whatever is left of the child and start a new one (same port if free)."""
        with self._lock:
            self.stop()
            self.restarts += 1
            return self.start()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``stop_timeout_s``. Returns the exit code."""
        with self._lock:
            proc = self._proc
            code: int | None = None
            if proc is not None:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(self.stop_timeout_s)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                code = proc.returncode
            self._cleanup()
            return code

    def _cleanup(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            published.unpublish(self.data_dir, self._proc.pid)
        self._proc = None
        self._endpoint = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _start(self, bind: str) -> str:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".endpoint-", dir=self.data_dir)
        os.close(fd)
        endpoint_file = Path(name)
        endpoint_file.unlink()
        cmd = [
            self.python,
            "-m",
            "node_daemon",
            "serve",
            "--bind",
            bind,
            "--data-dir",
            str(self.data_dir),
            "--no-curve",
            "--no-log-stderr",
            "--endpoint-file",
            str(endpoint_file),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        cmd += list(self.extra_args)
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
        )
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in _cleanup
        self._stderr.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start\n".encode())
        self._stderr.flush()
        stderr_offset = self._stderr.tell()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        try:
            endpoint = self._wait_ready(endpoint_file, stderr_offset)
        finally:
            with contextlib.suppress(FileNotFoundError):
                endpoint_file.unlink()
        self._endpoint = endpoint
        self._port = int(endpoint.rsplit(":", 1)[1])
        return endpoint

    def _wait_ready(self, endpoint_file: Path, stderr_offset: int) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        endpoint: str | None = None
        client: BlockingNodeClient | None = None
        try:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    if code == EXIT_BIND:
                        raise _PortTaken
                    error = NodeLocked if code == EXIT_LOCKED else NodeStartError
                    raise error(
                        f"tars-node exited with code {code} while starting: "
                        f"{self._stderr_tail(stderr_offset)}"
                    )
                if endpoint is None and endpoint_file.is_file():
                    endpoint = endpoint_file.read_text(encoding="utf-8").strip() or None
                    if endpoint is not None:
                        # It listens, so it holds the lock: readers may wait for it.
                        # Unpublished (a full disk), it still serves this process.
                        with contextlib.suppress(OSError):
                            published.publish(self.data_dir, endpoint, self._proc.pid)
                        client = BlockingNodeClient(endpoint, timeout_s=1.0, retries=1)
                if client is not None:
                    try:
                        health = client.health()
                    except NodeUnavailable:
                        pass
                    else:
                        # Up but unable to use its storage (a corrupt database, say):
                        # it serves health and says what is wrong, so it is started.
                        if health["ready"] or health.get("storage_error"):
                            assert endpoint is not None
                            return endpoint
                time.sleep(0.1)
        finally:
            if client is not None:
                client.close()
        self._cleanup()
        raise NodeStartError(
            f"tars-node was not ready after {self.start_timeout_s:g} s: "
            f"{self._stderr_tail(stderr_offset)}"
        )

    def _stderr_tail(self, offset: int, lines: int = 8) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no stderr)"
        tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) if tail else f"(nothing on stderr; see {self.log_path})"


class _PortTaken(Exception):
    pass

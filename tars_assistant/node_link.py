"""PC1's link to the node: start the embedded one or reach a remote one, and watch it.

``endpoint = "auto"`` starts ``tars-node`` as a child process on loopback
(blocking: call ``start`` from a thread worker) and restarts it if it dies.
If another process of the user already runs the embedded node on the same data
directory (a running `tars` seen by `tars jobs run`), its published endpoint is
used instead (``shared_by``); when that node goes away, this link starts its own.
A configured endpoint connects to a remote node, with CURVE keys when given.
``poll`` runs in the app's event loop (zmq.asyncio) and never blocks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from node_daemon import published
from node_daemon.client import NodeClient, NodeError, NodeUnavailable
from node_daemon.local import LocalNode, NodeLocked, NodeStartError
from node_daemon.sysinfo import SystemReading, reading_from_dict
from tars_core.config import Config

State = Literal["off", "starting", "local", "remote", "unreachable", "restarting"]
# How long a dead local node waits before each restart try; the last repeats.
RESTART_BACKOFF_S = (0.0, 2.0, 5.0, 15.0, 30.0)
SHARED_READY_WAIT_S = 120.0  # a published node still loading its model (LocalNode's own)
LOCKED_GRACE_S = 5.0  # a node that took the lock just before ours may publish a moment later


@dataclass(frozen=True)
class NodeStatus:
    state: State
    endpoint: str | None
    rtt_ms: float | None
    system: SystemReading | None
    items: int | None
    error: str | None
    storage_error: str | None = None  # the node is up but its storage failed: what, and what to do

    @property
    def label(self) -> str:
        """Short form for the status line: ``node: local · 0.4 ms``."""
        text = f"node: {self.state}"
        if self.rtt_ms is not None and self.state in ("local", "remote"):
            text += f" · {self.rtt_ms:.1f} ms"
        return text


class NodeLink:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        local_factory: Callable[..., LocalNode] = LocalNode,
    ) -> None:
        self.config = config
        self.enabled = config.node.endpoint != "off"
        self.embedded = config.node.endpoint == "auto"
        self.state: State = "starting" if self.enabled else "off"
        self.endpoint: str | None = (
            config.node.endpoint if self.enabled and not self.embedded else None
        )
        self.client: NodeClient | None = None
        self.error: str | None = None
        self.rtt_ms: float | None = None
        self.system: SystemReading | None = None
        self.items: int | None = None
        self.storage_error: str | None = None
        self._local: LocalNode | None = None
        # The pid of the process whose published embedded node this link uses.
        self.shared_by: int | None = None
        self._local_factory = local_factory
        self._config_path = config_path
        self._failures = 0
        self._next_restart = 0.0

    @property
    def local(self) -> LocalNode | None:
        return self._local

    def status(self) -> NodeStatus:
        return NodeStatus(
            self.state,
            self.endpoint,
            self.rtt_ms,
            self.system,
            self.items,
            self.error,
            self.storage_error,
        )

    # -- blocking: thread workers ---------------------------------------------

    def start(self) -> str:
        """Start the embedded node (waits for ``health``), or check the remote's keys."""
        if not self.embedded:
            assert self.endpoint is not None
            self._make_client(self.endpoint)
            self.state = "remote"
            return self.endpoint
        try:
            endpoint = self._start_embedded()
        except NodeStartError as exc:
            self.state, self.error = "unreachable", f"the local node did not start: {exc}"
            raise NodeStartError(self.error) from None
        self.state, self.error, self._failures = "local", None, 0
        return endpoint

    @property
    def node_data_dir(self) -> Path:
        server = self.config.server
        return (
            Path(server.data_dir).expanduser() if server.data_dir else self.config.data_dir / "node"
        )

    def _start_embedded(self) -> str:
        """Use the node another process publishes for this data directory, else start ours."""
        data = self.node_data_dir
        entry = published.find_running(data, wait_s=SHARED_READY_WAIT_S)
        if entry is None:
            if self._local is None:
                self._local = self._local_factory(data, config_path=self._config_path)
            try:
                endpoint = self._local.start()
            except NodeLocked:
                entry = self._wait_published(data)
                if entry is None:
                    raise
            else:
                self.shared_by = None
                self._connect(endpoint)
                return endpoint
        self.shared_by = entry.owner_pid
        self._connect(entry.endpoint)
        return entry.endpoint

    @staticmethod
    def _wait_published(data: Path) -> published.Published | None:
        deadline = time.monotonic() + LOCKED_GRACE_S
        while True:
            entry = published.find_running(data, wait_s=SHARED_READY_WAIT_S)
            if entry is not None or time.monotonic() >= deadline:
                return entry
            time.sleep(published.POLL_S)

    def _connect(self, endpoint: str) -> None:
        if endpoint != self.endpoint or self.client is None:
            self.endpoint = endpoint
            self._make_client(endpoint)

    def restart_local(self) -> str:
        """Replace a dead embedded node (same port when free, so the client reconnects).
        A shared node that went away is looked for again, then started here."""
        assert self.embedded and (self._local is not None or self.shared_by is not None)
        self.state = "restarting"
        try:
            if self.shared_by is not None or self._local is None:
                endpoint = self._start_embedded()
            else:
                endpoint = self._local.restart()
                self._connect(endpoint)
        except NodeStartError as exc:
            self._failures += 1
            self.state, self.error = "unreachable", f"the local node did not restart: {exc}"
            raise NodeStartError(self.error) from None
        self.state, self.error, self._failures = "local", None, 0
        return endpoint

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._local is not None:
            self._local.stop()

    # -- async: the app's loop --------------------------------------------------

    async def poll(self) -> NodeStatus:
        """One ``stats`` round trip: state, RTT, PC2's machine. Never raises."""
        if self.client is None or self.state in ("off", "starting", "restarting"):
            return self.status()
        try:
            stats: dict[str, Any] = await self.client.stats(timeout_s=self.config.node.timeout_s)
        except (NodeUnavailable, NodeError) as exc:
            self.state, self.error, self.rtt_ms = "unreachable", str(exc), None
            self.storage_error = None
            return self.status()
        self.rtt_ms = self.client.last_rtt_ms
        self.state = "local" if self.embedded else "remote"
        self.error = None
        system = stats.get("system")
        self.system = reading_from_dict(system) if isinstance(system, dict) else None
        items = stats.get("items")
        self.items = items if isinstance(items, int) else None
        problem = stats.get("storage_error")
        self.storage_error = problem if isinstance(problem, str) else None
        return self.status()

    def should_restart(self) -> bool:
        """An embedded node that is unreachable and whose process is gone (or hung)."""
        if not self.embedded or self.state != "unreachable":
            return False
        if self._local is None and self.shared_by is None:
            return False
        now = time.monotonic()
        if now < self._next_restart:
            return False
        delay = RESTART_BACKOFF_S[min(self._failures, len(RESTART_BACKOFF_S) - 1)]
        self._next_restart = now + max(delay, 1.0)
        return True

    def _make_client(self, endpoint: str) -> None:
        if self.client is not None:
            self.client.close()
        node = self.config.node
        keys: dict[str, Any] = {}
        if not self.embedded and (node.server_public_key or node.client_secret_key):
            keys = {
                "server_public_key": Path(node.server_public_key).expanduser(),
                "client_secret_key_file": Path(node.client_secret_key).expanduser(),
            }
        self.client = NodeClient(endpoint, timeout_s=node.timeout_s, retries=node.retries, **keys)

"""A real `tars serve` for the API tests: a subprocess on a free port with the bundled
SmolLM2 in its model child and, where asked, the real embedded node.

The server with the node is shared by the modules that need memory (it costs the
node's start-up once); the modules that test limits and security start their own,
with the node off, once per module. Every server keeps its data, keys and XDG
directories in a temporary folder of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tars_api.keys import KeyStore

READY_TIMEOUT_S = 180.0
URL_LINE = re.compile(r"TARS API on (http://\S+)/v1")

BASE_CONFIG = """\
[storage]
data_dir = "{data}"

[llm]
n_ctx = 1024
max_tokens = 16
seed = 1
temperature = 0.0
{llm_extra}
[node]
endpoint = "{node}"
timeout_s = 3.0

[api]
keys_file = "{keys}"
"""


@dataclass
class Server:
    root: Path
    config_path: Path
    proc: subprocess.Popen[str]
    url: str
    key: str
    keys: KeyStore
    stderr: list[str] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def client(self, key: str | None = None, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(key), timeout=120, **kw)  # type: ignore[arg-type]

    def new_key(self, name: str) -> str:
        return self.keys.new(name)

    def health(self) -> dict[str, object]:
        r = httpx.get(f"{self.url}/health", headers=self.headers(), timeout=10)
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data

    def wait_outbox_empty(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            memory = self.health()["memory"]
            assert isinstance(memory, dict)
            if memory["outbox_pending"] == 0:
                return
            time.sleep(0.2)
        raise AssertionError("the outbox did not drain to the node")

    def env(self) -> dict[str, str]:
        return server_env(self.root)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def server_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARS_")}
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "xdg-data"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def tars(
    root: Path, config: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `tars` command line as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "tars_tui.cli", "--config", str(config), *args],
        env=server_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_server(
    root: Path,
    *,
    node: str = "off",
    extra: str = "",
    wait_node: bool = False,
    llm_extra: str = "",
    env: dict[str, str] | None = None,
) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    keys_file = root / "keys.json"
    config = root / "config.toml"
    config.write_text(
        BASE_CONFIG.format(data=root / "data", node=node, keys=keys_file, llm_extra=llm_extra)
        + extra,
        encoding="utf-8",
    )
    keys = KeyStore(keys_file)
    key = keys.new("tests")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tars_tui.cli", "--config", str(config), "serve", "--port", "0"],
        env={**server_env(root), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr: list[str] = []
    threading.Thread(target=_drain, args=(proc.stderr, stderr), daemon=True).start()
    line = proc.stdout.readline()
    match = URL_LINE.search(line)
    if not match:
        proc.kill()
        raise AssertionError(f"tars serve did not start: {line!r} {''.join(stderr)}")
    threading.Thread(target=_drain, args=(proc.stdout, []), daemon=True).start()
    server = Server(root, config, proc, match.group(1), key, keys, stderr)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"tars serve exited: {''.join(stderr)[-3000:]}")
        try:
            health = httpx.get(f"{server.url}/health", timeout=5).json()
        except httpx.HTTPError:
            health = {}
        ready = health.get("model_ready") and (
            not wait_node or health.get("node") in ("local", "remote")
        )
        if ready:
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"tars serve not ready: {json.dumps(health)} {''.join(stderr)}")
        time.sleep(0.2)


def _drain(stream: object, into: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.append(line)


# The modules that need no node run first, while the shared server's node starts.
NODE_FREE_FIRST = ("test_units.py", "test_limits.py", "test_security.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slots = [i for i, item in enumerate(items) if item.path.parent == Path(__file__).parent]
    mine = [items[i] for i in slots]
    mine.sort(key=lambda item: item.path.name not in NODE_FREE_FIRST)  # stable
    for i, item in zip(slots, mine, strict=True):
        items[i] = item


@pytest.fixture(scope="session", autouse=True)
def _server_starting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Server]]:
    """Start the shared server (its node takes a while) as soon as the first API test runs."""
    root = tmp_path_factory.mktemp("api-server")
    pool = ThreadPoolExecutor(1, thread_name_prefix="api-server")
    # Its rate limit is far above what the tests send (test_limits.py tests the limit).
    extra = "max_message_chars = 4000\nrate_limit_per_minute = 100000\nrate_limit_burst = 1000\n"
    future = pool.submit(start_server, root, node="auto", wait_node=True, extra=extra)
    try:
        yield future
    finally:
        pool.shutdown()
        if future.exception() is None:
            future.result().stop()


@pytest.fixture(scope="session")
def server(_server_starting: Future[Server]) -> Server:
    """The server with memory: the real embedded node, shared by the memory modules."""
    return _server_starting.result(timeout=READY_TIMEOUT_S + 60)


def collect_sse(response: httpx.Response) -> list[dict[str, object]]:
    """The JSON events of a streamed chat completion (comments and [DONE] left out)."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[6:]))
    return events

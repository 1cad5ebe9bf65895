"""Bad input over a raw DEALER: each gets its error (or, over MAXMSGSIZE, a dropped
connection) and the node answers `health` afterwards."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from tests.node.conftest import Daemon

pytestmark = pytest.mark.slow


def req(op: Any, args: Any = None, rid: Any = "r1", **extra: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "id": rid, "op": op, **extra}
    if args is not None:
        body["args"] = args
    return bytes(msgpack.packb(body))


NAN_VECTOR = struct.pack("<384f", *([0.0] * 383 + [float("nan")]))

CASES: list[tuple[str, list[bytes], str, str]] = [
    ("garbage bytes", [b"\xc1\x00\xffnot msgpack at all"], "bad_request", "msgpack"),
    ("empty frame", [b""], "bad_request", "msgpack"),
    ("a list, not a map", [bytes(msgpack.packb(["health"]))], "bad_request", "a map"),
    ("id is a number", [req("health", rid=42)], "bad_request", "id:"),
    ("op is a number", [req(7)], "bad_request", "op:"),
    ("no op", [bytes(msgpack.packb({"v": 1, "id": "r1"}))], "bad_request", "op:"),
    ("wrong version", [req("health", v=9)], "bad_request", "version"),
    ("unknown op", [req("frobnicate")], "unknown_op", "frobnicate"),
    ("args is a list", [req("count", [1, 2])], "bad_request", "args:"),
    ("missing args", [req("upsert", {})], "bad_request", "args.items: missing"),
    (
        "missing item text",
        [req("upsert", {"items": [{"id": "x"}]})],
        "bad_request",
        "items[0].text: missing",
    ),
    (
        "text is a number",
        [req("upsert", {"items": [{"id": "x", "text": 5}]})],
        "bad_request",
        "a string",
    ),
    ("k is a string", [req("search", {"query": "q", "k": "ten"})], "bad_request", "args.k"),
    ("vector as a list", [req("search", {"vector": [0.1] * 384})], "bad_request", "float32"),
    (
        "vector of the wrong length",
        [req("search", {"vector": b"\x00" * 100})],
        "bad_request",
        "expected 1536 bytes",
    ),
    ("vector with NaN", [req("search", {"vector": NAN_VECTOR})], "bad_request", "NaN"),
    ("unknown arg", [req("count", {"colour": "red"})], "bad_request", "unknown field"),
    ("too many texts", [req("embed", {"texts": ["x"] * 1001})], "too_large", "at most 1000"),
    ("two frames", [req("health"), req("health")], "bad_request", "one frame"),
    ("nested too deep", [b"\x91" * 100_000 + b"\x00"], "bad_request", "msgpack"),
]


@pytest.fixture
def dealer(node: Daemon) -> Iterator[zmq.Socket[bytes]]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.endpoint)
    yield sock
    sock.close(linger=0)


def exchange(sock: zmq.Socket[bytes], frames: list[bytes], timeout_ms: int = 5000) -> Any:
    sock.send_multipart(frames)
    if not sock.poll(timeout_ms):
        return None
    return msgpack.unpackb(sock.recv_multipart()[-1])


def assert_healthy(sock: zmq.Socket[bytes], timeout_ms: int = 5000) -> None:
    reply = exchange(sock, [req("health", rid="h")], timeout_ms)
    assert reply is not None and reply["ok"] and reply["id"] == "h", reply


@pytest.mark.parametrize(
    ("frames", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_request_gets_its_error(
    dealer: zmq.Socket[bytes], frames: list[bytes], code: str, fragment: str
) -> None:
    reply = exchange(dealer, frames)
    assert reply is not None, "no reply"
    assert reply["v"] == 1 and reply["ok"] is False
    assert reply["error"]["code"] == code
    assert fragment in reply["error"]["message"], reply["error"]["message"]
    assert_healthy(dealer)


def test_request_id_is_echoed_when_it_can_be_read(dealer: zmq.Socket[bytes]) -> None:
    assert exchange(dealer, [req("frobnicate", rid="abc")])["id"] == "abc"
    assert exchange(dealer, [b"\xc1"])["id"] == ""


def test_frame_over_max_message_size_drops_the_connection(dealer: zmq.Socket[bytes]) -> None:
    huge = req("embed", {"texts": ["x" * (10 * 1024 * 1024)]})  # 10 MB > 4 MiB limit
    assert exchange(dealer, [huge], timeout_ms=1500) is None
    assert_healthy(dealer, timeout_ms=10_000)  # the DEALER reconnects; the node is fine


def test_a_req_socket_is_answered_too(node: Daemon) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.endpoint)
    try:
        sock.send(req("health", rid="q"))
        assert sock.poll(5000)
        assert msgpack.unpackb(sock.recv())["ok"] is True
    finally:
        sock.close(linger=0)

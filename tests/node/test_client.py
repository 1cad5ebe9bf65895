"""The client's Lazy Pirate behaviour, against a fake node that injects faults:
lost requests, stray replies, slow replies, error replies, nobody listening."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth

from node_daemon.client import (
    BlockingNodeClient,
    NodeClient,
    NodeError,
    NodeUnavailable,
    load_curve_keys,
)
from node_daemon.protocol import Request, decode_request, encode_error, encode_result


@dataclass
class FakeNode:
    """A ROUTER that follows a script: per request op, a list of actions used in turn."""

    script: dict[str, list[str]]
    seen: list[Request] = field(default_factory=list)
    endpoint: str = ""

    async def serve(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            ident, body = await sock.recv_multipart()
            req = decode_request(body)
            self.seen.append(req)
            actions = self.script.get(req.op, ["reply"])
            action = actions.pop(0) if len(actions) > 1 else actions[0]
            if action == "drop":
                continue
            if action == "stray":  # a late reply to some other request, then the real one
                await sock.send_multipart([ident, encode_result("old-" + req.id, "stray")])
            if action == "slow":
                late = [ident, encode_result(req.id, "slow")]
                asyncio.get_running_loop().call_later(0.6, sock.send_multipart, late)
                continue
            if action == "error":
                await sock.send_multipart([ident, encode_error(req.id, "busy", "try later")])
                continue
            await sock.send_multipart([ident, encode_result(req.id, {"op": req.op})])

    def ids(self, op: str) -> list[str]:
        return [r.id for r in self.seen if r.op == op]


@pytest.fixture
async def fake() -> AsyncIterator[FakeNode]:
    node = FakeNode(script={})
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    node.endpoint = f"tcp://127.0.0.1:{port}"
    task = asyncio.create_task(node.serve(sock))
    yield node
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sock.close(linger=0)


def free_endpoint() -> str:
    probe: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    return f"tcp://127.0.0.1:{port}"


async def test_a_lost_request_is_sent_again_on_a_fresh_socket(fake: FakeNode) -> None:
    fake.script["count"] = ["drop", "reply"]
    async with NodeClient(fake.endpoint, timeout_s=0.3, retries=3) as client:
        assert await client.call("count") == {"op": "count"}
        base = fake.ids("count")[0]
        assert fake.ids("count") == [base, f"{base}.2"]
        assert client.last_rtt_ms is not None and client.last_rtt_ms < 300


async def test_ops_that_are_not_idempotent_are_sent_once(fake: FakeNode) -> None:
    fake.script["compact"] = ["drop", "reply"]
    async with NodeClient(fake.endpoint, timeout_s=0.3, retries=3) as client:
        with pytest.raises(NodeUnavailable) as info:
            await client.compact(timeout_s=0.3)
        assert info.value.tries == 1 and len(fake.ids("compact")) == 1
        assert await client.health()  # the client recovers for the next call


async def test_stray_replies_are_dropped(fake: FakeNode) -> None:
    fake.script["get"] = ["stray"]
    async with NodeClient(fake.endpoint, timeout_s=2.0) as client:
        assert await client.call("get", {"ids": ["a"]}) == {"op": "get"}
        assert len(fake.ids("get")) == 1


async def test_error_replies_raise_node_error_and_are_not_retried(fake: FakeNode) -> None:
    fake.script["search"] = ["error"]
    async with NodeClient(fake.endpoint, timeout_s=2.0) as client:
        with pytest.raises(NodeError) as info:
            await client.search("q")
        assert (info.value.code, info.value.message) == ("busy", "try later")
        assert len(fake.ids("search")) == 1


async def test_a_timeout_elsewhere_resends_calls_in_flight(fake: FakeNode) -> None:
    # `health` is dropped once; `stats` answers late. When health times out and the
    # socket is replaced, stats (in flight on the old socket) is sent again at once.
    fake.script["health"] = ["drop", "reply"]
    fake.script["stats"] = ["slow", "reply"]
    async with NodeClient(fake.endpoint, timeout_s=0.4, retries=3) as client:
        health = asyncio.create_task(client.call("health"))
        await asyncio.sleep(0.1)
        stats = await client.call("stats", timeout_s=5.0)
        assert stats == {"op": "stats"}  # the second try's reply, not the slow "slow" one
        assert await health == {"op": "health"}
        assert len(fake.ids("stats")) == 2


async def test_many_concurrent_calls_are_matched_by_id(fake: FakeNode) -> None:
    async with NodeClient(fake.endpoint, timeout_s=5.0) as client:
        ops = ["health", "count", "get", "stats"] * 25
        results = await asyncio.gather(*[client.call(op) for op in ops])
        assert [r["op"] for r in results] == ops


async def test_nobody_listening_fails_within_bounded_time() -> None:
    endpoint = free_endpoint()
    async with NodeClient(endpoint, timeout_s=0.2, retries=3) as client:
        t0 = time.monotonic()
        with pytest.raises(NodeUnavailable) as info:
            await client.health()
        # Bounded, not fast: the point is that it gives up instead of hanging
        # (3 tries x 0.2 s); the margin absorbs a loaded CI machine.
        assert info.value.tries == 3 and time.monotonic() - t0 < 10.0
        assert endpoint in str(info.value)
    with BlockingNodeClient(endpoint, timeout_s=0.2, retries=2) as blocking:
        t0 = time.monotonic()
        with pytest.raises(NodeUnavailable):
            blocking.health()
        assert time.monotonic() - t0 < 10.0


async def test_blocking_client_retries_and_drops_strays(fake: FakeNode) -> None:
    fake.script["count"] = ["drop", "stray"]

    def blocking_calls() -> tuple[object, float | None]:
        with BlockingNodeClient(fake.endpoint, timeout_s=0.3, retries=3) as client:
            return client.call("count"), client.last_rtt_ms

    result, rtt = await asyncio.to_thread(blocking_calls)
    assert result == {"op": "count"} and rtt is not None
    assert len(fake.ids("count")) == 2


def test_curve_key_arguments(tmp_path: Path) -> None:
    assert load_curve_keys(None, None) is None
    assert load_curve_keys("", "") is None
    pub, secret = zmq.auth.create_certificates(tmp_path, "client")
    spub, _ = zmq.auth.create_certificates(tmp_path, "server")
    with pytest.raises(ValueError, match="needs both"):
        load_curve_keys(spub, None)
    with pytest.raises(FileNotFoundError):
        load_curve_keys(tmp_path / "nope.key", secret)
    with pytest.raises(ValueError, match="no secret key"):
        load_curve_keys(spub, pub)  # the public file given as the secret one
    keys = load_curve_keys(spub, secret)
    assert keys is not None and all(len(k) == 40 for k in keys)
    z85 = zmq.auth.load_certificate(spub)[0]
    assert load_curve_keys(z85.decode(), secret) == keys  # the Z85 text works as well


async def test_close_from_another_thread_is_handed_to_the_loop(fake: FakeNode) -> None:
    client = NodeClient(fake.endpoint, timeout_s=2.0)
    assert await client.call("health") == {"op": "health"}
    await asyncio.to_thread(client.close)  # e.g. the TUI stopping the link from a worker
    for _ in range(100):
        if client._sock is None:
            break
        await asyncio.sleep(0.01)
    assert client._sock is None
    with pytest.raises(RuntimeError, match="closed"):
        await client.health()

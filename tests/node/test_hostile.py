"""Issue 10's four defects, each against a real node: a malformed frame in a flood past
the in-flight limit, maps mixing bytes and str keys, nesting ~1000 levels deep, and
``v: 1.0``. Each gets its error (never `internal`) and the node keeps serving."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from node_daemon.server import MAX_INFLIGHT
from tests.node.conftest import Daemon
from tests.node.frames import nested, pack, raw_map, request
from tests.node.wire import Wire

pytestmark = pytest.mark.slow

DEEP = 1000  # msgpack decodes it; repr() and json.dumps() of it hit the recursion limit


def envelope(*pairs: tuple[Any, Any]) -> bytes:
    return pack(raw_map([("v", 1), *pairs]))


@pytest.fixture
def wire(node: Daemon) -> Iterator[Wire]:
    with Wire(node.endpoint) as w:
        yield w


def error_of(reply: dict[str, Any] | None) -> tuple[str, str, str]:
    assert reply is not None, "no reply"
    assert reply["v"] == 1 and reply["ok"] is False, reply
    return reply["id"], reply["error"]["code"], reply["error"]["message"]


def assert_serving(node: Daemon, wire: Wire) -> None:
    assert node.proc.poll() is None, node.stderr()[-3000:]
    assert wire.health() is not None, "no health reply"


# -- 1: one bad frame in a flood past MAX_INFLIGHT --------------------------------

FLOOD_BAD = {
    "mixed keys": envelope(("id", "bad-mixed"), ("op", "health"), (b"raw", 1), ("zzz", 2)),
    "deep id": envelope(("id", nested(DEEP)), ("op", "health")),
    "deep op": envelope(("id", "bad-deep-op"), ("op", nested(DEEP))),
    "float v": pack({"v": 1.0, "id": "bad-float", "op": "health"}),
    "garbage": b"\xc1\xc1\xc1",
    "truncated": request("count", {"namespace": "x"}, rid="bad-cut")[:-3],
}


def test_a_malformed_frame_in_a_flood_past_the_inflight_limit_is_answered(
    node: Daemon, wire: Wire
) -> None:
    busy = 0
    for attempt in range(4):  # the node must hold > MAX_INFLIGHT at once: usually at once
        frames = [[request("health", rid=f"f{attempt}-{i}")] for i in range(3 * MAX_INFLIGHT)]
        for k, body in enumerate(FLOOD_BAD.values()):
            frames.insert(MAX_INFLIGHT + 100 + 50 * k, [body])
        for f in frames:
            wire.send(f)
        replies: list[dict[str, Any]] = []
        while len(replies) < len(frames) and (reply := wire.recv(30.0)) is not None:
            replies.append(reply)
        assert len(replies) == len(frames), f"{len(frames) - len(replies)} frames unanswered"
        codes = Counter("ok" if r["ok"] else r["error"]["code"] for r in replies)
        assert set(codes) <= {"ok", "busy", "bad_request"}, codes
        ids = Counter(r["id"] for r in replies)
        for i in range(3 * MAX_INFLIGHT):  # every good frame answered once, by its own id
            assert ids[f"f{attempt}-{i}"] == 1
        for rid in ("bad-mixed", "bad-deep-op", "bad-float", "bad-cut"):
            assert ids[rid] == 1, rid  # even a `busy` reply carries a readable id
        assert_serving(node, wire)
        busy = codes["busy"]
        if busy:
            break
    assert busy, "the flood never went past the in-flight limit"


# -- 2: bytes and str keys side by side, with an unknown field ------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (envelope(("id", "m1"), ("op", "health"), (b"bin", 1), ("colour", 2)), "map keys"),
        (
            envelope(("id", "m1"), ("op", "count"), ("args", raw_map([(b"b", 1), ("zz", 2)]))),
            "args: map keys",
        ),
        (
            envelope(
                ("id", "m1"),
                ("op", "upsert"),
                ("args", {"items": [raw_map([("id", "a"), ("text", "t"), (b"k", 1), ("q", 1)])]}),
            ),
            "args.items[0]: map keys",
        ),
        (
            envelope(
                ("id", "m1"),
                ("op", "upsert"),
                ("args", {"items": [{"id": "a", "text": "t", "metadata": raw_map([(b"k", 1)])}]}),
            ),
            "metadata: map keys",
        ),
    ],
    ids=["envelope", "args", "item", "metadata"],
)
def test_bytes_and_str_keys_are_a_bad_request_with_the_id(
    node: Daemon, wire: Wire, body: bytes, fragment: str
) -> None:
    rid, code, message = error_of(wire.exchange([body]))
    assert (rid, code) == ("m1", "bad_request") and fragment in message, message
    assert_serving(node, wire)


# -- 3: ~1000 levels of nesting anywhere ------------------------------------------------

ITEM = {"id": "deep-1", "text": "a plain text"}
DEEP_CASES: dict[str, tuple[bytes, str]] = {
    "id": (envelope(("id", nested(DEEP)), ("op", "health")), "id:"),
    "op": (envelope(("id", "d1"), ("op", nested(DEEP))), "nested more than"),
    "args": (envelope(("id", "d1"), ("op", "count"), ("args", nested(DEEP))), "nested"),
    "text": (request("upsert", {"items": [{**ITEM, "text": nested(DEEP)}]}, rid="d1"), "nested"),
    "item id": (request("upsert", {"items": [{**ITEM, "id": nested(DEEP)}]}, rid="d1"), "nested"),
    "query": (request("search", {"query": nested(DEEP)}, rid="d1"), "nested"),
    "texts": (request("embed", {"texts": [nested(DEEP)]}, rid="d1"), "nested"),
    "ids": (request("get", {"ids": nested(DEEP)}, rid="d1"), "nested"),
    "filter": (request("count", {"namespace": nested(DEEP)}, rid="d1"), "nested"),
    "kind list": (request("delete", {"kind": [nested(DEEP)]}, rid="d1"), "nested"),
    "metadata list": (
        request("upsert", {"items": [{**ITEM, "metadata": {"m": nested(DEEP)}}]}, rid="d1"),
        "nested",
    ),
    "metadata map": (
        request(
            "ingest", {"name": "n", "text": "t", "metadata": nested(DEEP, as_map=True)}, rid="d1"
        ),
        "nested",
    ),
}


@pytest.mark.parametrize(("body", "fragment"), DEEP_CASES.values(), ids=DEEP_CASES.keys())
def test_deep_nesting_is_a_bad_request_not_a_recursion_error(
    node: Daemon, wire: Wire, body: bytes, fragment: str
) -> None:
    rid, code, message = error_of(wire.exchange([body]))
    assert code == "bad_request" and fragment in message, message
    assert rid == ("" if fragment == "id:" else "d1")
    assert len(message) < 400
    assert_serving(node, wire)


def test_nesting_within_the_limit_is_stored(node: Daemon, wire: Wire, ns: str) -> None:
    meta = {"m": [[[[[[["ok"]]]]]]]}
    item = {**ITEM, "namespace": ns, "metadata": meta}
    assert wire.call("upsert", {"items": [item]})["stored"] == ["deep-1"]
    assert wire.call("get", {"ids": ["deep-1"]})["items"][0]["metadata"] == meta


# -- 4: integers are integers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (pack({"v": 1.0, "id": "i1", "op": "health"}), "v: this node speaks"),
        (pack({"v": True, "id": "i1", "op": "health"}), "v: this node speaks"),
        (pack({"v": "1", "id": "i1", "op": "health"}), "v: this node speaks"),
        (request("search", {"query": "q", "k": 10.0}, rid="i1"), "args.k"),
        (request("search", {"query": "q", "k": True}, rid="i1"), "args.k"),
        (request("ingest", {"name": "n", "text": "t", "chunk_chars": 500.0}, rid="i1"), "chunk"),
        (request("count", {"since": True}, rid="i1"), "args.since"),
    ],
    ids=["v 1.0", "v true", "v '1'", "k 10.0", "k true", "chunk_chars 500.0", "since true"],
)
def test_a_float_or_bool_is_not_an_integer(
    node: Daemon, wire: Wire, body: bytes, fragment: str
) -> None:
    rid, code, message = error_of(wire.exchange([body]))
    assert (rid, code) == ("i1", "bad_request") and fragment in message, message
    assert_serving(node, wire)

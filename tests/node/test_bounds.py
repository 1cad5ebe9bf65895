"""The request bounds in-process (no node): depth, key types, ext types, safe messages,
the id read for `busy`, exact integers, and how storage errors are named."""

from __future__ import annotations

import errno
import sqlite3
import sys
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from node_daemon import faults, schema
from node_daemon.bounds import MAX_DEPTH, describe, names, tree_problem
from node_daemon.protocol import (
    ProtocolError,
    decode_reply,
    decode_request,
    encode_error,
    peek_request_id,
)
from tests.node.frames import nested, pack, raw_map, request


def deep(n: int) -> Any:
    value: Any = "x"
    for _ in range(n):
        value = [value]
    return value


def refused(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(body)
    return info.value


def test_the_walk_is_iterative_and_bounded() -> None:
    far = deep(50 * sys.getrecursionlimit())  # no recursion anywhere: any depth is safe
    assert (tree_problem(far) or "").endswith(f"]: nested more than {MAX_DEPTH} levels deep")
    assert tree_problem(deep(MAX_DEPTH - 1)) is None
    assert "map keys must be strings" in (tree_problem({"a": {b"k": 1, "s": 2}}) or "")
    assert (
        tree_problem({"a": [msgpack.Timestamp(1, 0)]})
        == "a[0]: msgpack extension types are not allowed"
    )
    assert describe(far) == "a list of 1 (list)"
    assert len(describe("x" * 10**6)) < 80 and describe(b"\x00" * 4096) == "4096 bytes (bytes)"


def test_names_sorts_any_keys_and_stays_short() -> None:
    shown = names({b"zz", "a", 7, *(f"k{i}" for i in range(100))})
    assert shown.endswith("and 98 more") and len(shown) < 300


@pytest.mark.parametrize(
    ("body", "rid", "fragment"),
    [
        (
            pack(raw_map([("v", 1), ("id", "a"), ("op", "health"), (b"k", 1), ("zz", 2)])),
            "a",
            "map keys",
        ),
        (pack(raw_map([("v", 1), ("id", nested(1000)), ("op", "health")])), "", "id:"),
        (pack(raw_map([("v", 1), ("id", "a"), ("op", nested(1000))])), "a", "nested more than"),
        (pack({"v": 1.0, "id": "a", "op": "health"}), "a", "v: this node speaks"),
        (pack({"v": True, "id": "a", "op": "health"}), "a", "v: this node speaks"),
        (request("health", {"t": msgpack.Timestamp(1, 0)}, rid="a"), "a", "extension types"),
        (request("health", rid="a", zz=1, **{"y" * 500: 2}), "a", "unknown envelope field"),
        (request("x" * 10_000, rid="a"), "a", "unknown op"),
    ],
)
def test_bad_envelopes_are_bad_requests_with_the_readable_id(
    body: bytes, rid: str, fragment: str
) -> None:
    err = refused(body)
    assert err.code in ("bad_request", "unknown_op") and err.request_id == rid
    assert fragment in err.message and len(err.message) < 400, err.message


def test_peek_request_id_reads_only_a_readable_string_id() -> None:
    assert peek_request_id(request("health", rid="abc")) == "abc"
    assert peek_request_id(pack(raw_map([("id", "abc"), ("op", nested(5000))]))) == "abc"
    assert peek_request_id(pack(raw_map([("op", nested(5000)), ("id", "abc")]))) == ""
    assert peek_request_id(pack({"id": nested(1000)})) == ""
    assert peek_request_id(pack({"id": "x" * 129})) == ""
    assert peek_request_id(pack({"id": b"abc"})) == ""
    for junk in (b"", b"\xc1", b"\x91\xa1x", b"\xdf\xff\xff\xff\xff", request("health")[:5]):
        assert peek_request_id(junk) == ""


def test_error_messages_are_bounded_and_replies_checked_exactly() -> None:
    reply = msgpack.unpackb(encode_error("r", "internal", "x" * 100_000))
    assert len(reply["error"]["message"]) <= 1000
    bad = pack({"v": 1.0, "id": "r", "ok": True, "result": 1})
    with pytest.raises(ProtocolError):
        decode_reply(bad)
    with pytest.raises(ProtocolError):
        decode_reply(pack({"v": 1, "id": "r", "ok": False, "error": {"code": [1], "message": ""}}))


@pytest.mark.parametrize(
    ("parse", "args", "fragment"),
    [
        (schema.parse_search, {"query": "q", "k": 10.0}, "args.k"),
        (schema.parse_search, {"query": "q", "k": True}, "args.k"),
        (schema.parse_count, {"since": True}, "args.since"),
        (schema.parse_ingest, {"name": "n", "text": "t", "chunk_chars": 500.0}, "chunk_chars"),
        (schema.parse_count, {b"k": 1, "zz": 2}, "unknown field"),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "t", "metadata": {"m": deep(2000)}}]},
            "nested",
        ),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "t", "metadata": {b"k": 1}}]},
            "map keys",
        ),
    ],
)
def test_args_integers_are_exact_and_odd_shapes_are_bad_requests(
    parse: Any, args: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(args)
    assert info.value.code == "bad_request" and fragment in info.value.message, info.value.message


def test_storage_errors_are_named(tmp_path: Path) -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert faults.kind_of(faults.storage_fault(full, tmp_path) or "") == faults.DISK_FULL
    ro = OSError(errno.EROFS, "Read-only file system")
    assert faults.kind_of(faults.storage_fault(ro, tmp_path) or "") == faults.READ_ONLY
    bad = sqlite3.DatabaseError("database disk image is malformed")
    text = faults.storage_fault(bad, tmp_path) or ""
    assert text.startswith("database corrupt: ") and ".recover" in text
    io = sqlite3.OperationalError("disk I/O error")  # on a healthy directory: just an I/O error
    assert faults.kind_of(faults.storage_fault(io, tmp_path) or "") == faults.IO_ERROR
    assert faults.storage_fault(ValueError("a bug"), tmp_path) is None
    assert faults.check_data_dir(tmp_path, min_free_mib=0) is None
    (tmp_path / "items.sqlite3").write_bytes(b"not a database at all" * 100)
    assert (faults.check_data_dir(tmp_path, min_free_mib=0) or "").startswith("database corrupt: ")

"""The parts that need no daemon: envelopes, validation, vectors, chunking, bind rules."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from node_daemon import schema
from node_daemon.ingest import chunk_text, read_document
from node_daemon.keys import bind_refusal, is_loopback
from node_daemon.metrics import OpMetrics, percentile
from node_daemon.protocol import (
    BAD_REQUEST,
    TOO_LARGE,
    UNKNOWN_OP,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    encode_result,
    pack_vectors,
    unpack_vectors,
)


def test_request_and_reply_round_trip() -> None:
    req = decode_request(encode_request("r1", "search", {"query": "hi", "k": 3}))
    assert (req.id, req.op, req.args) == ("r1", "search", {"query": "hi", "k": 3})
    ok = decode_reply(encode_result("r1", {"hits": []}))
    assert ok.ok and ok.id == "r1" and ok.result == {"hits": []}
    err = decode_reply(encode_error("r2", "busy", "later"))
    assert not err.ok and (err.error_code, err.error_message) == ("busy", "later")


@pytest.mark.parametrize(
    ("body", "code", "fragment", "rid"),
    [
        (b"\xc1\xc1garbage", BAD_REQUEST, "msgpack", ""),
        (msgpack.packb([1, 2, 3]), BAD_REQUEST, "a request is a map", ""),
        (msgpack.packb({"v": 1, "id": 7, "op": "health"}), BAD_REQUEST, "id:", ""),
        (msgpack.packb({"v": 2, "id": "a", "op": "health"}), BAD_REQUEST, "version", "a"),
        (msgpack.packb({"v": True, "id": "a", "op": "health"}), BAD_REQUEST, "version", "a"),
        (msgpack.packb({"v": 1, "id": "a", "op": 5}), BAD_REQUEST, "op:", "a"),
        (msgpack.packb({"v": 1, "id": "a", "op": "get", "args": []}), BAD_REQUEST, "args:", "a"),
        (msgpack.packb({"v": 1, "id": "a", "op": "nope"}), UNKNOWN_OP, "unknown op", "a"),
        (msgpack.packb({"v": 1, "id": "a", "op": "health", "x": 1}), BAD_REQUEST, "envelope", "a"),
        (msgpack.packb({1: 2}), BAD_REQUEST, "msgpack", ""),  # non-string map key
        (msgpack.packb(msgpack.ExtType(5, b"x")), BAD_REQUEST, "msgpack", ""),
    ],
)
def test_bad_envelopes(body: bytes, code: str, fragment: str, rid: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(body)
    assert info.value.code == code
    assert fragment in info.value.message
    assert info.value.request_id == rid


def test_vectors_are_little_endian_float32() -> None:
    vecs = [[1.0, -2.5, 0.0], [3.25, 4.0, -0.5]]
    data = pack_vectors(vecs)
    assert len(data) == 2 * 3 * 4
    assert data[:4] == b"\x00\x00\x80\x3f"  # 1.0f little-endian
    assert unpack_vectors(data, 3) == vecs
    with pytest.raises(ValueError):
        unpack_vectors(data[:-1], 3)


def _raises(fn: Any, args: dict[str, Any], code: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        fn(args)
    assert info.value.code == code, info.value.message
    assert fragment in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("fn", "args", "code", "fragment"),
    [
        (schema.parse_upsert, {}, BAD_REQUEST, "args.items"),
        (schema.parse_upsert, {"items": []}, BAD_REQUEST, "empty"),
        (schema.parse_upsert, {"items": [{"id": "a"}]}, BAD_REQUEST, "items[0].text: missing"),
        (schema.parse_upsert, {"items": [{"id": "a", "text": 5}]}, BAD_REQUEST, "a string"),
        (schema.parse_upsert, {"items": [{"id": "", "text": "x"}]}, BAD_REQUEST, "at least"),
        (schema.parse_upsert, {"items": [{"id": "a", "text": "  "}]}, BAD_REQUEST, "blank"),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "x", "created_at": math.nan}]},
            BAD_REQUEST,
            "finite",
        ),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "x", "metadata": {"b": b"\x00"}}]},
            BAD_REQUEST,
            "JSON",
        ),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "x", "colour": "red"}]},
            BAD_REQUEST,
            "unknown field",
        ),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
            BAD_REQUEST,
            "twice",
        ),
        (
            schema.parse_upsert,
            {"items": [{"id": str(i), "text": "x"} for i in range(1001)]},
            TOO_LARGE,
            "at most 1000",
        ),
        (schema.parse_upsert, {"items": [{"id": "a", "text": "x" * 20_001}]}, TOO_LARGE, "20000"),
        (
            schema.parse_upsert,
            {"items": [{"id": "a", "text": "x", "metadata": {"m": "y" * 20_000}}]},
            TOO_LARGE,
            "bytes",
        ),
        (schema.parse_search, {}, BAD_REQUEST, "one of query"),
        (schema.parse_search, {"query": "q", "like_id": "a"}, BAD_REQUEST, "one of query"),
        (schema.parse_search, {"query": "q", "k": "ten"}, BAD_REQUEST, "args.k"),
        (schema.parse_search, {"query": "q", "k": 0}, BAD_REQUEST, "args.k"),
        (schema.parse_search, {"query": "q", "k": True}, BAD_REQUEST, "args.k"),
        (schema.parse_search, {"query": "q", "mode": "fuzzy"}, BAD_REQUEST, "args.mode"),
        (
            schema.parse_search,
            {"vector": b"\x00" * 16, "mode": "keyword"},
            BAD_REQUEST,
            "needs a query",
        ),
        (schema.parse_search, {"vector": [0.1, 0.2]}, BAD_REQUEST, "float32 bytes"),
        (schema.parse_search, {"query": "q", "since": "yesterday"}, BAD_REQUEST, "args.since"),
        (schema.parse_search, {"query": "q", "kind": [1]}, BAD_REQUEST, "args.kind.0"),
        (schema.parse_get, {"ids": "a"}, BAD_REQUEST, "a list of strings"),
        (schema.parse_get, {"ids": ["x"] * 1001}, TOO_LARGE, "at most 1000"),
        (schema.parse_delete, {}, BAD_REQUEST, "deleting everything"),
        (schema.parse_delete, {"ids": ["a"], "namespace": "n"}, BAD_REQUEST, "not both"),
        (schema.parse_embed, {"texts": []}, BAD_REQUEST, "empty"),
        (schema.parse_embed, {"texts": ["a", None]}, BAD_REQUEST, "args.texts.1: missing"),
        (schema.parse_ingest, {"name": "n"}, BAD_REQUEST, "args.text: missing"),
        (
            schema.parse_ingest,
            {"name": "n", "text": "t", "chunk_chars": 5},
            BAD_REQUEST,
            "chunk_chars",
        ),
        (schema.parse_empty, {"verbose": True}, BAD_REQUEST, "unknown field"),
    ],
)
def test_every_field_is_validated(fn: Any, args: dict[str, Any], code: str, fragment: str) -> None:
    _raises(fn, args, code, fragment)


def test_valid_args_parse_with_defaults() -> None:
    up = schema.parse_upsert({"items": [{"id": "a", "text": "hello", "metadata": {"z": 1}}]})
    item = up.items[0]
    assert (item.namespace, item.project, item.kind, item.created_at) == (
        "default",
        "",
        "note",
        None,
    )
    assert item.metadata == '{"z":1}' and up.on_duplicate == "skip"
    s = schema.parse_search({"query": "q", "kind": ["a", "b"], "since": 1})
    assert (s.mode, s.k, s.filter.kinds, s.filter.since) == ("hybrid", 10, ("a", "b"), 1.0)
    assert schema.parse_search({"vector": b"\x00" * 8}).mode == "dense"


def _markdown(seed: int = 3) -> str:
    rnd = random.Random(seed)
    words = ["river", "stone", "lamp", "quiet", "orbit", "garden", "copper", "window"]
    out = []
    for h in range(6):
        out.append(f"{'#' * (1 + h % 3)} Section {h}\n")
        for _ in range(rnd.randint(1, 4)):
            sentences = [
                " ".join(rnd.choices(words, k=rnd.randint(4, 30))).capitalize() + "."
                for _ in range(rnd.randint(1, 6))
            ]
            out.append(" ".join(sentences) + "\n")
    out.append("```python\nprint('a')\n\n# a comment, not a heading\n```\n")
    return "\n".join(out)


@pytest.mark.parametrize(("size", "overlap"), [(200, 40), (300, 0), (800, 150), (120, 60)])
def test_chunks_cover_the_text_within_limits(size: int, overlap: int) -> None:
    text = _markdown()
    chunks = chunk_text(text, chunk_chars=size, overlap=overlap)
    assert len(chunks) > 2
    covered = bytearray(len(text))
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert 0 < len(c.text) <= size
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    for a, b in itertools.pairwise(chunks):
        assert b.start > a.start
        assert a.end - b.start <= overlap  # shared at most `overlap` characters
        if overlap == 0:
            assert b.start >= a.end


def test_chunks_break_at_headings_and_know_their_section() -> None:
    text = "# Alpha\n\n" + "one two three. " * 20 + "\n\n# Beta\n\n" + "four five six. " * 20
    chunks = chunk_text(text, chunk_chars=400, overlap=0)
    assert [c.heading for c in chunks] == ["Alpha", "Beta"]
    assert chunks[1].text.startswith("# Beta")


def test_code_fences_hide_headings_and_unbroken_text_is_cut() -> None:
    text = "# Real\n\n```\n# not a heading\n```\n"
    assert {c.heading for c in chunk_text(text, chunk_chars=400, overlap=0)} == {"Real"}
    blob = "x" * 1000
    chunks = chunk_text(blob, chunk_chars=300, overlap=0)
    assert "".join(c.text for c in chunks) == blob


def test_read_document(tmp_path: Any) -> None:
    md = tmp_path / "a.md"
    md.write_text("# Hi\n\ntext", encoding="utf-8")
    assert read_document(md) == "# Hi\n\ntext"
    with pytest.raises(ValueError, match="only Markdown"):
        read_document(tmp_path / "a.docx")


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/tars.sock", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.20:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://[::]:5555", False),
    ],
)
def test_loopback_rule(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback
    refusal = bind_refusal(endpoint, curve=False, allow_insecure=False)
    assert (refusal is None) is loopback
    if refusal:
        assert "curve = true" in refusal and "allow_insecure" in refusal
    assert bind_refusal(endpoint, curve=True, allow_insecure=False) is None
    assert bind_refusal(endpoint, curve=False, allow_insecure=True) is None


def test_percentiles() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile([], 50)) == (50, 99, 0)
    m = OpMetrics()
    for v in range(10):
        m.record("search", float(v), ok=v != 3)
    snap = m.snapshot()["search"]
    assert (snap["count"], snap["errors"], snap["max_ms"]) == (10, 1, 9.0)

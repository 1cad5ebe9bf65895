"""The PC1 <-> PC2 wire protocol: envelopes, ops, error codes, vector encoding.

One request, one reply, each a single msgpack map in one ZeroMQ frame:

    {"v": 1, "id": str, "op": str, "args": {...}}
    {"v": 1, "id": str, "ok": true, "result": ...}
    {"v": 1, "id": str, "ok": false, "error": {"code": str, "message": str}}

Vectors travel as raw little-endian float32 bytes. Never pickle. Standard library,
msgpack and zmq only: the TUI imports this module. See docs/protocol.md.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Required, TypedDict, TypeGuard

import msgpack  # type: ignore[import-untyped]

from node_daemon.bounds import MAX_DEPTH, MAX_MESSAGE_CHARS, clip, describe, names, tree_problem

PROTOCOL_VERSION: Final = 1

BAD_REQUEST: Final = "bad_request"
UNKNOWN_OP: Final = "unknown_op"
TOO_LARGE: Final = "too_large"
NOT_FOUND: Final = "not_found"
BUSY: Final = "busy"
INTERNAL: Final = "internal"
ERROR_CODES: Final = frozenset({BAD_REQUEST, UNKNOWN_OP, TOO_LARGE, NOT_FOUND, BUSY, INTERNAL})

OPS: Final = (
    "health",
    "stats",
    "embed",
    "upsert",
    "search",
    "get",
    "delete",
    "count",
    "ingest",
    "compact",
)
# Safe to send twice: upserts replace by id, ingest derives chunk ids from the
# document name, deletes are by id or filter. `compact` is long and heavy: the
# client never repeats it on its own.
IDEMPOTENT_OPS: Final = frozenset(OPS) - {"compact"}

MAX_REQUEST_ID_CHARS: Final = 128
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024

SearchMode = Literal["dense", "keyword", "hybrid"]


class ProtocolError(Exception):
    """A message that breaks the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: str = "") -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    id: str
    ok: bool
    result: Any = None
    error_code: str = ""
    error_message: str = ""


# -- encoding ------------------------------------------------------------------


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(body: bytes) -> Any:
    """Decode one msgpack object; no extension types, string map keys only."""
    return msgpack.unpackb(
        body,
        raw=False,
        strict_map_key=True,
        use_list=True,
        ext_hook=_reject_ext,
    )


def encode_request(request_id: str, op: str, args: dict[str, Any] | None = None) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": args or {}})


def encode_result(request_id: str, result: Any) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result})


def encode_error(request_id: str, code: str, message: str) -> bytes:
    assert code in ERROR_CODES, code
    return pack(
        {
            "v": PROTOCOL_VERSION,
            "id": request_id,
            "ok": False,
            "error": {"code": code, "message": clip(message, MAX_MESSAGE_CHARS)},
        }
    )


def _why(exc: Exception) -> str:
    return clip(str(exc) or type(exc).__name__, 200)


def peek_request_id(body: bytes) -> str:
    """The id of a request if it is a readable string, else "". Never raises, and
    decodes nothing but the envelope's keys and its id: cheap enough to answer a
    flood with ``busy``, safe on any bytes at all."""
    try:
        unpacker = msgpack.Unpacker(
            raw=False, ext_hook=_reject_ext, max_buffer_size=max(len(body), 1)
        )
        unpacker.feed(body)
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "id":
                rid = unpacker.unpack()
                return rid if _valid_id(rid) else ""
            unpacker.skip()
    except Exception:  # anything at all: the caller wants an id or ""
        pass
    return ""


def _valid_id(rid: object) -> TypeGuard[str]:
    return type(rid) is str and 0 < len(rid) <= MAX_REQUEST_ID_CHARS


def decode_request(body: bytes) -> Request:
    """Parse and check a request envelope (not its args: see node_daemon.schema).

    Raises only :class:`ProtocolError`, carrying the id whenever one was readable.
    Nothing downstream sees a map key that is not a string or nesting deeper than
    ``bounds.MAX_DEPTH``."""
    try:
        msg = unpack(body)
    except Exception as exc:
        raise ProtocolError(
            BAD_REQUEST, f"not a msgpack message ({_why(exc)})", peek_request_id(body)
        ) from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_REQUEST, f"a request is a map, found {describe(msg)}")
    rid = msg.get("id")
    if not _valid_id(rid):
        raise ProtocolError(
            BAD_REQUEST,
            f"id: expected a string of 1-{MAX_REQUEST_ID_CHARS} chars, found {describe(rid)}",
        )
    problem = tree_problem(msg)
    if problem is not None:
        raise ProtocolError(BAD_REQUEST, problem, rid)
    version = msg.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # not 1.0, not true
        raise ProtocolError(
            BAD_REQUEST,
            f"v: this node speaks protocol version {PROTOCOL_VERSION}, found {describe(version)}",
            rid,
        )
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError(BAD_REQUEST, f"op: expected a string, found {describe(op)}", rid)
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, f"args: expected a map, found {describe(args)}", rid)
    extra = set(msg) - {"v", "id", "op", "args"}
    if extra:
        raise ProtocolError(BAD_REQUEST, f"unknown envelope field(s): {names(extra)}", rid)
    if op not in OPS:
        raise ProtocolError(
            UNKNOWN_OP, f"unknown op {clip(op, 40)!r}; this node knows {', '.join(OPS)}", rid
        )
    return Request(id=rid, op=op, args=args)


def decode_reply(body: bytes) -> Reply:
    """Parse a reply; raises only :class:`ProtocolError` (a node is not trusted either)."""
    try:
        msg = unpack(body)
    except Exception as exc:
        raise ProtocolError(BAD_REQUEST, f"not a msgpack reply ({_why(exc)})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
        raise ProtocolError(BAD_REQUEST, "a reply is a map with a string id")
    version = msg.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(BAD_REQUEST, f"reply version {describe(version)} is not supported")
    rid: str = msg["id"]
    if msg.get("ok") is True:
        return Reply(id=rid, ok=True, result=msg.get("result"))
    error = msg.get("error")
    if not isinstance(error, dict):
        raise ProtocolError(BAD_REQUEST, "an error reply carries an error map", rid)
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or code not in ERROR_CODES or not isinstance(message, str):
        raise ProtocolError(BAD_REQUEST, f"unknown error code {describe(code)}", rid)
    return Reply(id=rid, ok=False, error_code=code, error_message=message)


# -- vectors ---------------------------------------------------------------------

_BIG_ENDIAN = sys.byteorder == "big"


def pack_vectors(vectors: Sequence[Sequence[float]]) -> bytes:
    """Vectors (all the same length) -> raw little-endian float32 bytes."""
    out = array("f")
    width = len(vectors[0]) if vectors else 0
    for vec in vectors:
        if len(vec) != width:
            raise ValueError("all vectors must have the same length")
        out.extend(float(x) for x in vec)
    if _BIG_ENDIAN:
        out.byteswap()
    return out.tobytes()


def unpack_vectors(data: bytes, dim: int) -> list[list[float]]:
    """Raw little-endian float32 bytes -> ``len(data) // (4 * dim)`` vectors."""
    if dim <= 0 or len(data) % (4 * dim):
        raise ValueError(f"{len(data)} bytes is not a whole number of {dim}-d float32 vectors")
    flat = array("f")
    flat.frombytes(data)
    if _BIG_ENDIAN:
        flat.byteswap()
    return [flat[i : i + dim].tolist() for i in range(0, len(flat), dim)]


# -- typed shapes (for clients; the wire carries plain maps) ----------------------


class Item(TypedDict, total=False):
    """What `upsert` takes. Only id and text are required."""

    id: Required[str]
    text: Required[str]
    namespace: str
    project: str
    kind: str
    created_at: float
    metadata: dict[str, Any]


class StoredItem(TypedDict):
    id: str
    text: str
    namespace: str
    project: str
    kind: str
    created_at: float
    updated_at: float
    metadata: dict[str, Any]


class SearchHit(TypedDict):
    id: str
    score: float
    similarity: float | None
    text: str
    namespace: str
    project: str
    kind: str
    created_at: float
    metadata: dict[str, Any]


class SearchResult(TypedDict):
    hits: list[SearchHit]
    mode: str
    took_ms: float


class Duplicate(TypedDict):
    id: str
    duplicate_of: str
    score: float


class UpsertResult(TypedDict):
    stored: list[str]
    unchanged: list[str]
    duplicates: list[Duplicate]


class GetResult(TypedDict):
    items: list[StoredItem]
    missing: list[str]


class DeleteResult(TypedDict):
    deleted: int


class IngestResult(TypedDict):
    name: str
    ids: list[str]
    chunks: int
    stored: int
    unchanged: int
    removed: int
    duplicates: list[Duplicate]


class CompactResult(TypedDict):
    items: int
    vectors_before: int
    vectors_after: int
    index: str
    took_ms: float


class HealthResult(TypedDict):
    ok: bool
    ready: bool
    version: int
    uptime_s: float
    model: str | None
    dim: int | None
    items: int | None
    curve: bool
    max_message_bytes: int
    storage_error: str | None  # "disk full: ...", "data directory read-only: ...", ...


__all__ = [
    "BAD_REQUEST",
    "BUSY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_CODES",
    "IDEMPOTENT_OPS",
    "INTERNAL",
    "MAX_DEPTH",
    "NOT_FOUND",
    "OPS",
    "PROTOCOL_VERSION",
    "TOO_LARGE",
    "UNKNOWN_OP",
    "CompactResult",
    "DeleteResult",
    "Duplicate",
    "GetResult",
    "HealthResult",
    "IngestResult",
    "Item",
    "ProtocolError",
    "Reply",
    "Request",
    "SearchHit",
    "SearchMode",
    "SearchResult",
    "StoredItem",
    "UpsertResult",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_request",
    "encode_result",
    "pack",
    "pack_vectors",
    "peek_request_id",
    "unpack",
    "unpack_vectors",
]

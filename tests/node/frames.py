"""Hand-built msgpack frames: what msgpack.packb will not write (nesting past its
recursion limit, maps with bytes keys next to str keys, ext types) but a hostile
client can send. Values given as ``Raw`` are spliced in as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Raw:
    """Already-encoded msgpack bytes."""

    data: bytes


def pack(value: Any) -> bytes:
    """msgpack of ``value``; ``Raw`` parts anywhere inside are copied verbatim."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, dict):
        return _map_header(len(value)) + b"".join(pack(k) + pack(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return _array_header(len(value)) + b"".join(pack(v) for v in value)
    return bytes(msgpack.packb(value, use_bin_type=True))


def raw_map(pairs: list[tuple[Any, Any]]) -> Raw:
    """A map from pairs: keys of any type, repeated keys allowed."""
    return Raw(_map_header(len(pairs)) + b"".join(pack(k) + pack(v) for k, v in pairs))


def nested(depth: int, leaf: Any = "x", *, as_map: bool = False) -> Raw:
    """``depth`` single-entry lists (or maps ``{"k": ...}``) around ``leaf``."""
    shell = b"\x81\xa1k" if as_map else b"\x91"
    return Raw(shell * depth + pack(leaf))


def request(op: Any = "health", args: Any = None, rid: Any = "r1", **extra: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "id": rid, "op": op, **extra}
    if args is not None:
        body["args"] = args
    return pack(body)


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    return b"\xde" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdf" + n.to_bytes(4, "big")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")

"""What the node fuzz suite sends, and how it judges the replies; shared by
tests/node/test_fuzz.py (a bounded smoke run) and bench/node_fuzz.py (a long one).

Strategies build frames a hostile or buggy client could send: raw bytes,
truncated msgpack, every op's valid request with one field replaced by a value of
another type (or removed, or joined by an unknown one), oversized strings and
lists, deep nesting, NaN/inf and wrong-length vectors, maps with bytes or int
keys, ext types, multi-frame messages. :class:`Harness` sends them over a DEALER
or a REQ socket, one at a time or as a flood past the node's in-flight limit, and
checks the properties: every frame gets a reply from the closed set of codes (or
is dropped with its connection by the size limit), `internal` never answers one,
a readable id comes back, and `health` answers after every batch.
"""

from __future__ import annotations

import math
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]
import zmq
from hypothesis import strategies as st

from node_daemon.protocol import ERROR_CODES, INTERNAL, OPS, encode_request
from node_daemon.schema import MAX_ID_CHARS, MAX_KINDS, MAX_QUERY_CHARS, MAX_TEXT_CHARS
from tests.node.frames import Raw, nested, pack, raw_map
from tests.node.wire import Wire, unpack_reply

NS = "fuzz"
DIM = 384
REPLY_TIMEOUT_S = 20.0


def base_args(op: str) -> dict[str, Any]:
    """A valid request's args for ``op``, every optional field given, all in NS."""
    item = {
        "id": "fuzz-1",
        "text": "a fuzzed memory about tide tables",
        "namespace": NS,
        "project": "p",
        "kind": "note",
        "created_at": 1.0,
        "metadata": {"a": 1, "b": ["x"]},
    }
    flt: dict[str, Any] = {
        "namespace": NS, "project": "p", "kind": ["note"], "since": 0.0, "until": 2e9,
    }  # fmt: skip
    ops: dict[str, dict[str, Any]] = {
        "health": {},
        "stats": {},
        "embed": {"texts": ["tide tables"]},
        "upsert": {"items": [item], "on_duplicate": "store"},
        "search": {"query": "tide", "k": 3, "mode": "hybrid", **flt},
        "get": {"ids": ["fuzz-1"]},
        "delete": {"ids": ["fuzz-gone"]},
        "count": dict(flt),
        "ingest": {
            "name": "fuzz-doc",
            "text": "# Tides\n\nHigh tide at noon.",
            "namespace": NS,
            "chunk_chars": 200,
            "chunk_overlap": 10,
            "on_duplicate": "store",
            "metadata": {},
        },
        "compact": {},
    }
    return ops[op]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every map key and first list entry under ``value``, as key paths."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(value, list) and value:
        out.append((*prefix, 0))
        out += paths(value[0], (*prefix, 0))
    return out


MISSING = object()
UNKNOWN = object()


def mutate(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``tree`` with ``path`` set to ``value`` (MISSING: removed; UNKNOWN:
    an unknown field added beside it)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        out = dict(tree)
        if not rest and value is MISSING:
            out.pop(head, None)
        elif not rest and value is UNKNOWN:
            out["zz_unknown"] = 1
        else:
            out[head] = mutate(tree.get(head), rest, value)
        return out
    if isinstance(tree, list):
        out_list = list(tree)
        if not rest and value is MISSING:
            del out_list[head]
        elif not rest and value is UNKNOWN:
            out_list.append(1)
        else:
            out_list[head] = mutate(tree[head], rest, value)
        return out_list
    return tree


# Values of every msgpack type...
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, math.nan, math.inf, -math.inf, 2**64 - 1, -(2**63),
    "", " ", "x", "\x00", "a" * 300, "é" * 50, b"", b"\x00\xff" * 8, [], [1], ["a", 2],
    [None], {}, {"a": 1}, {"": None}, nested(5), nested(31),
]  # fmt: skip
# ...and the shapes that broke the node before: past the depth limit, past Python's
# recursion limit, past msgpack's own; bytes, int and nil keys (beside str ones);
# ext types, a timestamp (decoded without ext_hook), a bad timestamp, a reserved byte.
HOSTILE_VALUES: list[Any] = [
    nested(33), nested(1000), nested(1000, as_map=True), nested(1100),
    raw_map([(b"bytes", 1), ("str", 2)]), raw_map([("str", 1), (b"bytes", 2), ("zz", 3)]),
    raw_map([(1, 2)]), raw_map([(None, 1)]), raw_map([("a", 1), ("a", 2)]),
    [raw_map([(b"k", 1), ("q", 2)])], {"m": nested(1000)},
    msgpack.ExtType(5, b"ext"), msgpack.Timestamp(1, 2), Raw(b"\xd6\xff\x00\x00\x00\x01"),
    Raw(b"\xc7\x03\xffabc"), Raw(b"\xc1"),
]  # fmt: skip

msgpack_int = st.integers(min_value=-(2**63), max_value=2**64 - 1)
RANDOM_VALUES = [
    msgpack_int,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.one_of(msgpack_int, st.text(max_size=5), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=6), st.one_of(msgpack_int, st.text(max_size=5)), max_size=3),
]


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


any_value = _weighted(
    (4, st.sampled_from(HOSTILE_VALUES)),  # rare at random, so asked for by name
    (3, st.sampled_from(ODD_VALUES)),
    *((1, strategy) for strategy in RANDOM_VALUES),
)


@dataclass(frozen=True)
class Case:
    """One message to send: its frames, and the id its reply must carry ("" = any)."""

    kind: str
    frames: list[bytes]
    rid: str = ""

    @property
    def size(self) -> int:
        return max(len(f) for f in self.frames)


def envelope(rid: Any, op: Any, args: Any) -> dict[str, Any]:
    # id first: a reader that stops at a broken value further on has it already
    return {"id": rid, "v": 1, "op": op, "args": args}


@st.composite
def mutated(draw: st.DrawFn, ops: tuple[str, ...] = OPS) -> Case:
    """An op's valid request with one place changed: another value there, removed, or an
    unknown field beside it. The id stays readable unless it is the place changed."""
    rid = f"m{draw(st.integers(0, 10**9))}"
    op = draw(st.sampled_from(ops))
    msg = envelope(rid, op, base_args(op))
    places = [p for p in paths(msg) if p != ("id",)] + [("id",)]
    place = draw(st.sampled_from(places))
    value = draw(_weighted((6, any_value), (1, st.sampled_from([MISSING, UNKNOWN]))))
    msg = mutate(msg, place, value)
    return Case("mutated", [pack(msg)], "" if place == ("id",) else rid)


@st.composite
def oversized(draw: st.DrawFn) -> Case:
    """Just past an op's own limits (and far below the frame size limit)."""
    rid = f"o{draw(st.integers(0, 10**9))}"
    item = {"id": "fuzz-big", "text": "t", "namespace": NS}
    choices: list[tuple[str, dict[str, Any]]] = [
        ("embed", {"texts": ["x"] * 1001}),
        ("embed", {"texts": ["x" * (MAX_TEXT_CHARS + 1)]}),
        ("upsert", {"items": [item] * 1001}),
        ("upsert", {"items": [{**item, "id": "i" * (MAX_ID_CHARS + 1)}]}),
        ("upsert", {"items": [{**item, "metadata": {"m": "x" * 17_000}}]}),
        ("upsert", {"items": [{**item, "text": "x" * (MAX_TEXT_CHARS + 1)}]}),
        ("search", {"query": "q" * (MAX_QUERY_CHARS + 1)}),
        ("search", {"query": "q", "k": 1001}),
        ("count", {"kind": ["k"] * (MAX_KINDS + 1)}),
        ("get", {"ids": [f"i{i}" for i in range(1001)]}),
        ("delete", {"ids": ["i"] * 1001}),
        ("ingest", {"name": "n" * 300, "text": "t"}),
        ("health", {f"f{i}": i for i in range(5000)}),
    ]
    op, args = draw(st.sampled_from(choices))
    return Case("oversized", [encode_request(rid, op, args)], rid)


@st.composite
def vectors(draw: st.DrawFn) -> Case:
    """`search` by vector: any length, any float32 values (NaN, inf, huge), or a list."""
    rid = f"v{draw(st.integers(0, 10**9))}"
    n = draw(st.sampled_from([0, 1, 383, DIM, 385, 2 * DIM]))
    floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
    head = draw(st.lists(floats, min_size=1, max_size=4))
    values = (head * (n // len(head) + 1))[:n]
    vector: Any = struct.pack(f"<{n}f", *values)
    vector = vector[: max(0, len(vector) - draw(st.sampled_from([0, 0, 1, 3])))]
    if draw(st.integers(0, 9)) == 0:
        vector = values[:8]  # a list of floats, not bin
    extras: list[dict[str, Any]] = [{}, {"query": "tide"}, {"mode": "keyword"}, {"k": 1000}]
    extra = draw(st.sampled_from(extras))
    args = {"vector": vector, "namespace": NS, **extra}
    return Case("vector", [encode_request(rid, "search", args)], rid)


@st.composite
def raw_bytes(draw: st.DrawFn) -> Case:
    return Case("raw", [draw(st.binary(max_size=600))])


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    op = draw(st.sampled_from(OPS))
    body = pack(envelope("t1", op, base_args(op)))
    cut = draw(st.integers(0, len(body) - 1))
    return Case("truncated", [body[:cut]])  # the id may or may not be complete


@st.composite
def whole_frame_odd(draw: st.DrawFn) -> Case:
    """The frame itself is not a map: any odd value, ext types included."""
    return Case("not a map", [pack(draw(any_value))])


@st.composite
def multi_frame(draw: st.DrawFn) -> Case:
    parts = draw(
        st.lists(st.one_of(mutated(("health", "count")), raw_bytes()), min_size=2, max_size=4)
    )
    frames = [f for case in parts for f in case.frames]
    return Case("multi-frame", frames[:4])


single = _weighted(
    (4, mutated()),  # the most telling
    (1, oversized()),
    (1, vectors()),
    (1, raw_bytes()),
    (1, truncated()),
    (1, whole_frame_odd()),
)
anything = _weighted((9, single), (1, multi_frame()))


@dataclass
class Tally:
    """What a fuzz run saw (bench/node_fuzz.py prints it)."""

    frames: int = 0
    replies: int = 0
    dropped_by_size: int = 0
    unanswered: int = 0
    internal: int = 0
    wrong_id: int = 0
    bad_shape: int = 0
    batches: int = 0
    health_after_batch: int = 0
    busy_in_floods: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> str:
        if len(self.failures) < 20:
            self.failures.append(what[:300])
        return what


class Harness:
    """Sends cases to one node and checks every reply. ``strict``: raise on the first
    broken property (the test suite); else only count it (the bench)."""

    def __init__(
        self,
        endpoint: str,
        alive: Callable[[], bool],
        max_message_bytes: int,
        *,
        strict: bool,
        tally: Tally | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.alive = alive
        self.max_message_bytes = max_message_bytes
        self.strict = strict
        self.tally = tally if tally is not None else Tally()
        self.dealer = Wire(endpoint)
        self.req = Wire(endpoint, zmq.REQ)

    def close(self) -> None:
        self.dealer.close()
        self.req.close()

    def _check(self, case: Case, reply: dict[str, Any] | None) -> None:
        t = self.tally
        problem = ""
        if reply is None:
            if case.size > self.max_message_bytes:
                t.dropped_by_size += 1
                self.dealer.reopen()
                return
            t.unanswered += 1
            problem = "no reply"
        else:
            t.replies += 1
            code = "ok" if reply.get("ok") is True else _code(reply)
            t.codes[code] += 1
            if code == INTERNAL:
                t.internal += 1
                problem = f"internal: {reply['error']['message']}"
            elif code not in ERROR_CODES and code != "ok":
                t.bad_shape += 1
                problem = f"reply outside the protocol: {reply!r}"
            elif case.rid and reply.get("id") != case.rid:
                t.wrong_id += 1
                problem = f"id {reply.get('id')!r}, sent {case.rid!r}"
        if problem:
            msg = t.fail(f"{case.kind}: {problem}; frames {[f[:80] for f in case.frames]!r}")
            if self.strict:
                raise AssertionError(msg)

    def one(self, case: Case, *, req: bool = False) -> None:
        """Send one case, wait for its reply, judge it."""
        self.tally.frames += 1
        self.tally.kinds[case.kind] += 1
        if req and len(case.frames) == 1:
            reply = self.req.exchange(case.frames, REPLY_TIMEOUT_S)
        else:
            reply = self._dealer_exchange(case)
        self._check(case, reply)

    def _dealer_exchange(self, case: Case) -> dict[str, Any] | None:
        self.dealer.send(case.frames)
        timeout = 0.5 if case.size > self.max_message_bytes else REPLY_TIMEOUT_S
        return self.dealer.recv(timeout)

    def flood(self, cases: list[Case], n_health: int) -> None:
        """``n_health`` health requests with ``cases`` spread among them, all sent before
        any reply is read: past the in-flight limit some get `busy`, and every one of
        them still gets exactly one reply."""
        frames: list[list[bytes]] = [[encode_request(f"fl{i}", "health")] for i in range(n_health)]
        step = max(1, n_health // (len(cases) + 1))
        for k, case in enumerate(cases):
            frames.insert(min(len(frames), (k + 1) * step + k), case.frames)
        for f in frames:
            self.dealer.send(f)
        self.tally.frames += len(frames)
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while len(got) < len(frames) and (left := deadline - time.monotonic()) > 0:
            if not self.dealer.sock.poll(int(left * 1000)):
                break
            got.append(unpack_reply(self.dealer.sock.recv_multipart()[-1]))
        self.tally.replies += len(got)
        codes = Counter("ok" if r.get("ok") is True else _code(r) for r in got)
        self.tally.codes.update(codes)
        self.tally.busy_in_floods += codes["busy"]
        self.tally.internal += codes[INTERNAL]
        problems = []
        if len(got) != len(frames):
            self.tally.unanswered += len(frames) - len(got)
            problems.append(f"{len(frames) - len(got)} of {len(frames)} unanswered")
        if codes[INTERNAL]:
            problems.append(f"{codes[INTERNAL]} internal")
        ids = Counter(r.get("id") for r in got)
        sent = Counter([f"fl{i}" for i in range(n_health)] + [c.rid for c in cases if c.rid])
        wrong = sum(abs(ids[rid] - n) for rid, n in sent.items())  # two cases may share one
        if wrong:
            self.tally.wrong_id += wrong
            problems.append(f"{wrong} ids not answered exactly once")
        if problems:
            msg = self.tally.fail("flood: " + "; ".join(problems))
            if self.strict:
                raise AssertionError(msg)

    def after_batch(self) -> None:
        """The property that closes every batch: the process lives and health answers."""
        self.tally.batches += 1
        ok = self.alive() and self.dealer.health(timeout_s=REPLY_TIMEOUT_S) is not None
        if ok:
            self.tally.health_after_batch += 1
        elif self.strict:
            raise AssertionError(self.tally.fail("no health after a batch"))
        else:
            self.tally.fail("no health after a batch")


def _code(reply: dict[str, Any]) -> str:
    error = reply.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else f"(malformed reply {reply!r:.60})"

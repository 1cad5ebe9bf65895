"""Validation of every op's args into frozen dataclasses. Standard library only.

Each ``parse_<op>(args)`` checks every field (type, range, length), rejects
unknown fields, and raises :class:`ProtocolError` with ``bad_request`` (wrong
shape) or ``too_large`` (over a size limit), naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

from node_daemon.bounds import describe, names, tree_problem
from node_daemon.protocol import BAD_REQUEST, TOO_LARGE, ProtocolError

MAX_ITEMS: Final = 1000
MAX_TEXTS: Final = 1000
MAX_IDS: Final = 1000
MAX_ID_CHARS: Final = 256
MAX_LABEL_CHARS: Final = 128
MAX_TEXT_CHARS: Final = 20_000
MAX_QUERY_CHARS: Final = 4_000
MAX_DOC_CHARS: Final = 50_000_000
MAX_METADATA_BYTES: Final = 16_384
MAX_K: Final = 1000
MAX_KINDS: Final = 32
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_KIND: Final = "note"
MODES: Final = ("dense", "keyword", "hybrid")
_MISSING: Final[Any] = object()


def _bad(where: str, expected: str, found: Any) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, f"{where}: expected {expected}, found {describe(found)}")


class Fields:
    """Typed access to one map of args; ``done()`` rejects fields nobody read."""

    def __init__(self, raw: Any, where: str = "args") -> None:
        if not isinstance(raw, dict):
            raise _bad(where, "a map", raw)
        self.raw: dict[str, Any] = raw
        self.where = where
        self._seen: set[str] = set()

    def value(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        value = self.raw.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ProtocolError(BAD_REQUEST, f"{self.where}.{name}: missing")
            return default
        return value

    def string(
        self, name: str, default: Any = _MISSING, *, max_chars: int, min_chars: int = 1
    ) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise _bad(f"{self.where}.{name}", "a string", value)
        if len(value) > max_chars:
            raise ProtocolError(
                TOO_LARGE,
                f"{self.where}.{name}: at most {max_chars} characters, found {len(value)}",
            )
        if len(value) < min_chars:
            raise ProtocolError(
                BAD_REQUEST, f"{self.where}.{name}: at least {min_chars} character(s)"
            )
        if "\x00" in value:
            raise ProtocolError(BAD_REQUEST, f"{self.where}.{name}: contains a NUL character")
        return value

    def integer(self, name: str, default: Any = _MISSING, *, lo: int, hi: int) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        if type(value) is not int or not lo <= value <= hi:  # exactly: not 1.0, not true
            raise _bad(f"{self.where}.{name}", f"an integer from {lo} to {hi}", value)
        return value

    def number(self, name: str, default: Any = _MISSING) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        if type(value) not in (int, float) or not math.isfinite(value):  # not true
            raise _bad(f"{self.where}.{name}", "a finite number", value)
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or value not in choices:
            raise _bad(f"{self.where}.{name}", "one of " + ", ".join(choices), value)
        return value

    def binary(self, name: str, default: Any = _MISSING) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bytes):
            raise _bad(f"{self.where}.{name}", "raw float32 bytes (msgpack bin)", value)
        return value

    def strings(self, name: str, default: Any = _MISSING, *, max_items: int, max_chars: int) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list):
            raise _bad(f"{self.where}.{name}", "a list of strings", value)
        if not value:
            raise ProtocolError(BAD_REQUEST, f"{self.where}.{name}: the list is empty")
        if len(value) > max_items:
            raise ProtocolError(
                TOO_LARGE, f"{self.where}.{name}: at most {max_items} entries, found {len(value)}"
            )
        holder = Fields({str(i): v for i, v in enumerate(value)}, f"{self.where}.{name}")
        return tuple(holder.string(str(i), max_chars=max_chars) for i in range(len(value)))

    def mapping(self, name: str, default: Any = _MISSING) -> Any:
        value = self.value(name, default)
        if value is default and default is not _MISSING:
            return value
        return Fields(value, f"{self.where}.{name}")

    def done(self) -> None:
        extra = set(self.raw) - self._seen
        if extra:  # named safely: the keys may mix str and bytes when called directly
            raise ProtocolError(BAD_REQUEST, f"{self.where}: unknown field(s) {names(extra)}")


def metadata_json(value: Any, where: str) -> str:
    """Metadata: a map of JSON-able values (no bytes, no NaN), at most 16 KiB as JSON."""
    if not isinstance(value, dict):
        raise _bad(where, "a map", value)
    problem = tree_problem(value, where)  # json.dumps recurses, and cannot sort bytes keys
    if problem is not None:
        raise ProtocolError(BAD_REQUEST, problem)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(BAD_REQUEST, f"{where}: only JSON-like values ({exc})") from None
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise ProtocolError(TOO_LARGE, f"{where}: at most {MAX_METADATA_BYTES} bytes as JSON")
    return text


# -- filters -----------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    namespace: str | None = None
    project: str | None = None
    kinds: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None

    @property
    def empty(self) -> bool:
        return self == Filter()


def _filter(f: Fields) -> Filter:
    namespace = f.string("namespace", None, max_chars=MAX_LABEL_CHARS)
    project = f.string("project", None, max_chars=MAX_LABEL_CHARS, min_chars=0)
    kinds: tuple[str, ...] | None = None
    raw_kind = f.raw.get("kind")
    if isinstance(raw_kind, list):
        kinds = f.strings("kind", max_items=MAX_KINDS, max_chars=MAX_LABEL_CHARS)
    else:
        kind = f.string("kind", None, max_chars=MAX_LABEL_CHARS)
        kinds = None if kind is None else (kind,)
    since = f.number("since", None)
    until = f.number("until", None)
    return Filter(namespace, project, kinds, since, until)


# -- ops ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemIn:
    id: str
    text: str
    namespace: str
    project: str
    kind: str
    created_at: float | None
    metadata: str  # canonical JSON


@dataclass(frozen=True)
class UpsertArgs:
    items: tuple[ItemIn, ...]
    on_duplicate: str


@dataclass(frozen=True)
class EmbedArgs:
    texts: tuple[str, ...]


@dataclass(frozen=True)
class SearchArgs:
    query: str | None
    vector: bytes | None
    like_id: str | None
    k: int
    mode: str
    filter: Filter


@dataclass(frozen=True)
class GetArgs:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class DeleteArgs:
    ids: tuple[str, ...] | None
    filter: Filter


@dataclass(frozen=True)
class CountArgs:
    filter: Filter


@dataclass(frozen=True)
class IngestArgs:
    name: str
    text: str
    namespace: str
    project: str
    kind: str
    created_at: float | None
    metadata: str
    chunk_chars: int | None
    chunk_overlap: int | None
    on_duplicate: str


def parse_empty(raw: dict[str, Any]) -> None:
    Fields(raw).done()


def _item(raw: Any, where: str) -> ItemIn:
    f = Fields(raw, where)
    item = ItemIn(
        id=f.string("id", max_chars=MAX_ID_CHARS),
        text=f.string("text", max_chars=MAX_TEXT_CHARS),
        namespace=f.string("namespace", DEFAULT_NAMESPACE, max_chars=MAX_LABEL_CHARS),
        project=f.string("project", "", max_chars=MAX_LABEL_CHARS, min_chars=0),
        kind=f.string("kind", DEFAULT_KIND, max_chars=MAX_LABEL_CHARS),
        created_at=f.number("created_at", None),
        metadata=metadata_json(f.value("metadata", {}), f"{where}.metadata"),
    )
    if not item.text.strip():
        raise ProtocolError(BAD_REQUEST, f"{where}.text: is blank")
    f.done()
    return item


def parse_upsert(raw: dict[str, Any]) -> UpsertArgs:
    f = Fields(raw)
    items = f.value("items", _MISSING)
    if not isinstance(items, list):
        raise _bad("args.items", "a list of item maps", items)
    if not items:
        raise ProtocolError(BAD_REQUEST, "args.items: the list is empty")
    if len(items) > MAX_ITEMS:
        raise ProtocolError(
            TOO_LARGE, f"args.items: at most {MAX_ITEMS} per upsert, found {len(items)}"
        )
    parsed = tuple(_item(it, f"args.items[{i}]") for i, it in enumerate(items))
    ids = [it.id for it in parsed]
    if len(set(ids)) != len(ids):
        raise ProtocolError(BAD_REQUEST, "args.items: the same id appears twice")
    on_dup = f.choice("on_duplicate", ("skip", "store"), "skip")
    f.done()
    return UpsertArgs(parsed, on_dup)


def parse_embed(raw: dict[str, Any]) -> EmbedArgs:
    f = Fields(raw)
    texts = f.strings("texts", max_items=MAX_TEXTS, max_chars=MAX_TEXT_CHARS)
    f.done()
    return EmbedArgs(texts)


def parse_search(raw: dict[str, Any]) -> SearchArgs:
    f = Fields(raw)
    query = f.string("query", None, max_chars=MAX_QUERY_CHARS)
    vector = f.binary("vector", None)
    like_id = f.string("like_id", None, max_chars=MAX_ID_CHARS)
    k = f.integer("k", 10, lo=1, hi=MAX_K)
    # query and vector may come together: text for the keyword half, vector for the dense.
    has_query = query is not None or vector is not None
    if has_query == (like_id is not None):
        raise ProtocolError(
            BAD_REQUEST, "args: give one of query (text), vector (float32 bytes) or like_id"
        )
    default_mode = "hybrid" if query is not None else "dense"
    mode = f.choice("mode", MODES, default_mode)
    if mode in ("keyword", "hybrid") and query is None:
        raise ProtocolError(BAD_REQUEST, f"args.mode: {mode} search needs a query text")
    if query is not None and not query.strip():
        raise ProtocolError(BAD_REQUEST, "args.query: is blank")
    flt = _filter(f)
    f.done()
    return SearchArgs(query, vector, like_id, k, mode, flt)


def parse_get(raw: dict[str, Any]) -> GetArgs:
    f = Fields(raw)
    ids = f.strings("ids", max_items=MAX_IDS, max_chars=MAX_ID_CHARS)
    f.done()
    return GetArgs(ids)


def parse_delete(raw: dict[str, Any]) -> DeleteArgs:
    f = Fields(raw)
    ids = f.strings("ids", None, max_items=MAX_IDS, max_chars=MAX_ID_CHARS)
    flt = _filter(f)
    f.done()
    if ids is None and flt.empty:
        raise ProtocolError(
            BAD_REQUEST,
            "args: give ids or at least one filter (namespace, project, kind, "
            "since, until); deleting everything needs an explicit filter",
        )
    if ids is not None and not flt.empty:
        raise ProtocolError(BAD_REQUEST, "args: give ids or a filter, not both")
    return DeleteArgs(ids, flt)


def parse_count(raw: dict[str, Any]) -> CountArgs:
    f = Fields(raw)
    flt = _filter(f)
    f.done()
    return CountArgs(flt)


def parse_ingest(raw: dict[str, Any]) -> IngestArgs:
    f = Fields(raw)
    args = IngestArgs(
        name=f.string("name", max_chars=MAX_ID_CHARS - 64),
        text=f.string("text", max_chars=MAX_DOC_CHARS),
        namespace=f.string("namespace", DEFAULT_NAMESPACE, max_chars=MAX_LABEL_CHARS),
        project=f.string("project", "", max_chars=MAX_LABEL_CHARS, min_chars=0),
        kind=f.string("kind", "document", max_chars=MAX_LABEL_CHARS),
        created_at=f.number("created_at", None),
        metadata=metadata_json(f.value("metadata", {}), "args.metadata"),
        chunk_chars=f.integer("chunk_chars", None, lo=100, hi=20_000),
        chunk_overlap=f.integer("chunk_overlap", None, lo=0, hi=5_000),
        on_duplicate=f.choice("on_duplicate", ("skip", "store"), "skip"),
    )
    if not args.text.strip():
        raise ProtocolError(BAD_REQUEST, "args.text: the document is blank")
    f.done()
    return args

"""What both node clients share: errors, CURVE keys and socket options, and the
typed ops (``health``, ``search``, ...), written once.

Each op turns its arguments into an ``OpRequest`` (op, args, timeout, how to read the
result); the client it is called on sends it, so ``NodeClient.search`` returns a
coroutine and ``BlockingNodeClient.search`` the result, with the same parameters
(``Op`` tells the two apart by the client's ``blocking`` flag). The transports are
in ``node_daemon.client``.

Standard library, zmq and msgpack only: the TUI imports this.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    overload,
)

import zmq
import zmq.auth

from node_daemon.protocol import (
    IDEMPOTENT_OPS,
    CompactResult,
    GetResult,
    HealthResult,
    IngestResult,
    Item,
    Reply,
    SearchResult,
    UpsertResult,
    pack_vectors,
    unpack_vectors,
)

KeySource = bytes | str | os.PathLike[str]
Vector = bytes | Sequence[float]
P = ParamSpec("P")
T = TypeVar("T")


class NodeUnavailable(ConnectionError):
    """The node did not answer (down, unreachable, or refused our key) after every try."""

    def __init__(self, endpoint: str, op: str, tries: int, timeout_s: float) -> None:
        super().__init__(
            f"node at {endpoint} did not answer {op!r} ({tries} "
            f"{'try' if tries == 1 else 'tries'} of {timeout_s:g} s)"
        )
        self.endpoint, self.op, self.tries, self.timeout_s = endpoint, op, tries, timeout_s


class NodeError(RuntimeError):
    """The node answered with an error: ``code`` is one of protocol.ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


# -- keys and sockets ------------------------------------------------------------------


def load_curve_keys(
    server_public_key: KeySource | None, client_secret_key_file: KeySource | None
) -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret) as Z85, or None for plain TCP.

    ``server_public_key``: the server's ``server.key`` file (or its Z85 text).
    ``client_secret_key_file``: this machine's ``client.key_secret`` from keygen.
    """
    if not server_public_key and not client_secret_key_file:
        return None
    if not server_public_key or not client_secret_key_file:
        raise ValueError(
            "CURVE needs both the server's public key file and this machine's client "
            "secret key file (see `tars-node keygen`)"
        )
    server = _public_key(server_public_key)
    path = Path(os.fsdecode(client_secret_key_file)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"client secret key {path}: no such file")
    public, secret = zmq.auth.load_certificate(path)
    if not secret:
        raise ValueError(f"{path} holds no secret key; give the client.key_secret file")
    return server, public, secret


def _public_key(value: KeySource) -> bytes:
    if isinstance(value, bytes) and len(value) == 40 and not os.path.exists(value):
        return value
    text = os.fsdecode(value)
    path = Path(text).expanduser()
    if path.is_file():
        public, _ = zmq.auth.load_certificate(path)
        return public
    if len(text) == 40:
        return text.encode("ascii")  # the Z85 key itself
    raise FileNotFoundError(f"server public key {text!r}: no such file")


def configure_socket(sock: zmq.Socket[Any], keys: tuple[bytes, bytes, bytes] | None) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys


# -- the typed ops, for both clients ---------------------------------------------------


def _as_sent(result: Any) -> Any:
    return result


@dataclass(frozen=True, slots=True)
class OpRequest(Generic[T]):
    """One typed op, ready to send: ``parse`` turns the node's result into ``T``."""

    op: str
    args: dict[str, Any] | None = None
    timeout_s: float | None = None
    parse: Callable[[Any], T] = _as_sent


class _AsyncClient(Protocol):
    blocking: ClassVar[Literal[False]]


class _BlockingClient(Protocol):
    blocking: ClassVar[Literal[True]]


class Op(Generic[P, T]):
    """A typed op written once. Read from a client whose class says ``blocking = False``
    (``NodeClient``) it is a coroutine function; from one with ``blocking = True``
    (``BlockingNodeClient``), a plain one; with the same parameters either way."""

    def __init__(self, build: Callable[Concatenate[Any, P], OpRequest[T]]) -> None:
        self._build = build
        self.__name__ = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Op[P, T]: ...
    @overload
    def __get__(
        self, client: _AsyncClient, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, client: _BlockingClient, owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, client: Any, owner: type[Any]) -> Any:
        if client is None:
            return self
        build, send = self._build, client._send

        def op(*args: P.args, **kwargs: P.kwargs) -> Any:
            return send(build(client, *args, **kwargs))

        op.__name__ = op.__qualname__ = self.__name__
        op.__doc__ = self.__doc__
        return op


def _drop_none(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


class Filters(TypedDict, total=False):
    """Which items an op looks at (search, delete, count); None is no filter. ``kind``
    may name several kinds; ``since``/``until`` bound ``created_at``."""

    namespace: str | None
    project: str | None
    kind: str | Sequence[str] | None
    since: float | None
    until: float | None


def _filters(filters: Filters) -> dict[str, Any]:
    found: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    kind = found.get("kind")
    if kind is not None and not isinstance(kind, str):
        kinds = list(kind)
        found["kind"] = kinds[0] if len(kinds) == 1 else kinds
    return found


def _embed_result(result: Any) -> list[list[float]]:
    if not result["count"]:
        return []
    return unpack_vectors(result["vectors"], int(result["dim"]))


def _deleted(result: Any) -> int:
    return int(result["deleted"])


def _counted(result: Any) -> int:
    return int(result["count"])


class ClientBase:
    """What both clients share: settings, request ids and retries, and the typed ops."""

    def __init__(
        self,
        endpoint: str,
        server_public_key: KeySource | None,
        client_secret_key_file: KeySource | None,
        timeout_s: float,
        retries: int,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = max(1, retries)
        self.last_rtt_ms: float | None = None
        self._keys = load_curve_keys(server_public_key, client_secret_key_file)

    @property
    def curve(self) -> bool:
        return self._keys is not None

    def _tries(self, op: str, timeout_s: float | None) -> tuple[float, list[str]]:
        """The timeout per try and one request id per try (a retry is ``<id>.<n>``)."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        base = uuid.uuid4().hex[:16]
        tries = self.retries if op in IDEMPOTENT_OPS else 1
        return timeout, [base if n == 1 else f"{base}.{n}" for n in range(1, tries + 1)]

    @staticmethod
    def _result(reply: Reply) -> Any:
        if reply.ok:
            return reply.result
        raise NodeError(reply.error_code, reply.error_message)

    def _bulk_timeout(self, timeout_s: float | None, n: int) -> float:
        """Big batches take longer to embed (MiniLM: ~360 texts/s on 2 cores)."""
        return timeout_s or max(self.timeout_s, 2.0 + 0.02 * n)

    # -- typed ops -------------------------------------------------------------------------

    @Op
    def health(self, *, timeout_s: float | None = None) -> OpRequest[HealthResult]:
        return OpRequest("health", None, timeout_s)

    @Op
    def stats(self, *, timeout_s: float | None = None) -> OpRequest[dict[str, Any]]:
        return OpRequest("stats", None, timeout_s)

    @Op
    def embed(
        self, texts: Sequence[str], *, timeout_s: float | None = None
    ) -> OpRequest[list[list[float]]]:
        t = self._bulk_timeout(timeout_s, len(texts))
        return OpRequest("embed", {"texts": list(texts)}, t, _embed_result)

    @Op
    def upsert(
        self, items: Sequence[Item], *, on_duplicate: str = "skip", timeout_s: float | None = None
    ) -> OpRequest[UpsertResult]:
        args = {"items": [dict(it) for it in items], "on_duplicate": on_duplicate}
        return OpRequest("upsert", args, self._bulk_timeout(timeout_s, len(items)))

    @Op
    def search(
        self,
        query: str | None = None,
        *,
        vector: Vector | None = None,
        like_id: str | None = None,
        k: int = 10,
        mode: str | None = None,
        timeout_s: float | None = None,
        **filters: Unpack[Filters],
    ) -> OpRequest[SearchResult]:
        if vector is not None and not isinstance(vector, bytes):
            vector = pack_vectors([vector])
        args = _drop_none(query=query, vector=vector, like_id=like_id, k=k, mode=mode)
        args.update(_filters(filters))
        return OpRequest("search", args, timeout_s)

    @Op
    def get(self, ids: Sequence[str], *, timeout_s: float | None = None) -> OpRequest[GetResult]:
        return OpRequest("get", {"ids": list(ids)}, timeout_s)

    @Op
    def delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        timeout_s: float | None = None,
        **filters: Unpack[Filters],
    ) -> OpRequest[int]:
        args = _drop_none(ids=None if ids is None else list(ids))
        args.update(_filters(filters))
        return OpRequest("delete", args, timeout_s, _deleted)

    @Op
    def count(
        self, *, timeout_s: float | None = None, **filters: Unpack[Filters]
    ) -> OpRequest[int]:
        args = _filters(filters)
        return OpRequest("count", args, timeout_s, _counted)

    @Op
    def ingest(
        self,
        name: str,
        text: str,
        *,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: float | None = None,
        chunk_chars: int | None = None,
        chunk_overlap: int | None = None,
        on_duplicate: str = "skip",
        timeout_s: float | None = 120.0,
    ) -> OpRequest[IngestResult]:
        args = _drop_none(
            name=name,
            text=text,
            namespace=namespace,
            project=project,
            kind=kind,
            metadata=metadata,
            created_at=created_at,
            chunk_chars=chunk_chars,
            chunk_overlap=chunk_overlap,
            on_duplicate=on_duplicate,
        )
        return OpRequest("ingest", args, timeout_s)

    @Op
    def compact(self, *, timeout_s: float | None = 600.0) -> OpRequest[CompactResult]:
        return OpRequest("compact", None, timeout_s)

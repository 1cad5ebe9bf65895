"""Clients for the node: ``NodeClient`` (zmq.asyncio, for the TUI) and ``BlockingNodeClient``.

Both follow the Lazy Pirate pattern from the ZeroMQ guide: a DEALER with
``LINGER=0`` and ``IMMEDIATE``, ZMTP heartbeats, a timeout per call; on a timeout
the socket is closed and reopened and an idempotent op is sent again, a bounded
number of times, before :class:`NodeUnavailable`. Replies are matched by request
id; strays (late replies to an abandoned try) are dropped. Every call measures
its round trip into ``last_rtt_ms``. ``NodeClient`` multiplexes: many coroutines
may call at once over one socket.

Standard library, zmq and msgpack only: the TUI imports this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import zmq
import zmq.asyncio
import zmq.auth

from node_daemon.protocol import (
    IDEMPOTENT_OPS,
    CompactResult,
    GetResult,
    HealthResult,
    IngestResult,
    Item,
    ProtocolError,
    Reply,
    SearchResult,
    UpsertResult,
    decode_reply,
    encode_request,
    pack_vectors,
    unpack_vectors,
)

KeySource = bytes | str | os.PathLike[str]
Vector = bytes | Sequence[float]


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


class _SocketReset(Exception):
    """Another call replaced the socket while this one waited: send again."""


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


def _configure(sock: zmq.Socket[Any], keys: tuple[bytes, bytes, bytes] | None) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys


# -- request builders shared by both clients -------------------------------------------------


def _drop_none(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _vector_bytes(vector: Vector) -> bytes:
    return vector if isinstance(vector, bytes) else pack_vectors([vector])


def _filters(
    namespace: str | None,
    project: str | None,
    kind: str | Sequence[str] | None,
    since: float | None,
    until: float | None,
) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else (list(kind) if kind is not None else None)
    if kinds is not None and len(kinds) == 1:
        return _drop_none(
            namespace=namespace, project=project, kind=kinds[0], since=since, until=until
        )
    return _drop_none(namespace=namespace, project=project, kind=kinds, since=since, until=until)


def _bulk_timeout(default: float, n: int) -> float:
    """Big batches take longer to embed (MiniLM: ~360 texts/s on 2 cores)."""
    return max(default, 2.0 + 0.02 * n)


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _embed_result(result: Any) -> list[list[float]]:
    if not result["count"]:
        return []
    return unpack_vectors(result["vectors"], int(result["dim"]))


class NodeClient:
    """asyncio client. Create it anywhere; it binds to the running loop at the first call."""

    def __init__(
        self,
        endpoint: str,
        *,
        server_public_key: KeySource | None = None,
        client_secret_key_file: KeySource | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = max(1, retries)
        self.last_rtt_ms: float | None = None
        self._keys = load_curve_keys(server_public_key, client_secret_key_file)
        self._ctx = context if context is not None else zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._closed = False

    @property
    def curve(self) -> bool:
        return self._keys is not None

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket. Safe from any thread: from outside the loop the client runs
        in, the closing is handed to that loop (ZeroMQ sockets are not thread-safe)."""
        self._closed = True
        loop = self._loop
        if loop is not None and loop.is_running() and not _running_in(loop):
            loop.call_soon_threadsafe(self._reset)
        else:
            self._reset()

    def _socket(self) -> zmq.asyncio.Socket:
        loop = asyncio.get_running_loop()
        if self._sock is not None and self._loop is not loop:
            self._reset()
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            _configure(sock, self._keys)
            sock.connect(self.endpoint)
            self._sock, self._loop = sock, loop
            self._reader = loop.create_task(self._read(sock), name=f"node-client {self.endpoint}")
        return self._sock

    def _reset(self) -> None:
        """Lazy Pirate: drop the socket (and whatever it still holds); the next call reopens."""
        if self._reader is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._reader.cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
        for fut in self._pending.values():
            if not fut.done():
                with contextlib.suppress(RuntimeError):
                    fut.set_exception(_SocketReset())
        self._pending.clear()
        self._sock, self._reader, self._loop = None, None, None

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                return  # closed under us by _reset
            try:
                reply = decode_reply(frames[-1])
            except ProtocolError:
                continue
            fut = self._pending.pop(reply.id, None)
            if fut is not None and not fut.done():  # else a stray: dropped
                fut.set_result(reply)

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Send one request; its result, or NodeError / NodeUnavailable."""
        if self._closed:
            raise RuntimeError("NodeClient is closed")
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        tries = self.retries if op in IDEMPOTENT_OPS else 1
        base = uuid.uuid4().hex[:16]
        loop = asyncio.get_running_loop()
        for attempt in range(1, tries + 1):
            rid = base if attempt == 1 else f"{base}.{attempt}"
            body = encode_request(rid, op, args)
            sock = self._socket()
            fut: asyncio.Future[Reply] = loop.create_future()
            self._pending[rid] = fut
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    await sock.send(body)
                    reply = await fut
            except TimeoutError:
                self._reset()
                continue
            except _SocketReset:
                continue
            except asyncio.CancelledError:
                # pyzmq cancels a pending send when another call resets the socket;
                # only a cancellation of this task itself goes on up.
                task = asyncio.current_task()
                if (task is not None and task.cancelling()) or sock is self._sock:
                    raise
                continue
            finally:
                self._pending.pop(rid, None)
                if fut.done() and not fut.cancelled():
                    fut.exception()  # a reset may have landed before we awaited it
            self.last_rtt_ms = 1000 * (time.perf_counter() - t0)
            if reply.ok:
                return reply.result
            raise NodeError(reply.error_code, reply.error_message)
        raise NodeUnavailable(self.endpoint, op, tries, timeout)

    # -- typed ops -------------------------------------------------------------------------

    async def health(self, *, timeout_s: float | None = None) -> HealthResult:
        return cast(HealthResult, await self.call("health", timeout_s=timeout_s))

    async def stats(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.call("stats", timeout_s=timeout_s))

    async def embed(
        self, texts: Sequence[str], *, timeout_s: float | None = None
    ) -> list[list[float]]:
        t = timeout_s or _bulk_timeout(self.timeout_s, len(texts))
        return _embed_result(await self.call("embed", {"texts": list(texts)}, timeout_s=t))

    async def upsert(
        self, items: Sequence[Item], *, on_duplicate: str = "skip", timeout_s: float | None = None
    ) -> UpsertResult:
        args = {"items": [dict(it) for it in items], "on_duplicate": on_duplicate}
        t = timeout_s or _bulk_timeout(self.timeout_s, len(items))
        return cast(UpsertResult, await self.call("upsert", args, timeout_s=t))

    async def search(
        self,
        query: str | None = None,
        *,
        vector: Vector | None = None,
        like_id: str | None = None,
        k: int = 10,
        mode: str | None = None,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        timeout_s: float | None = None,
    ) -> SearchResult:
        args = _drop_none(
            query=query,
            vector=None if vector is None else _vector_bytes(vector),
            like_id=like_id,
            k=k,
            mode=mode,
        )
        args.update(_filters(namespace, project, kind, since, until))
        return cast(SearchResult, await self.call("search", args, timeout_s=timeout_s))

    async def get(self, ids: Sequence[str], *, timeout_s: float | None = None) -> GetResult:
        return cast(GetResult, await self.call("get", {"ids": list(ids)}, timeout_s=timeout_s))

    async def delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        args = _drop_none(ids=None if ids is None else list(ids))
        args.update(_filters(namespace, project, kind, since, until))
        return int((await self.call("delete", args, timeout_s=timeout_s))["deleted"])

    async def count(
        self,
        *,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        args = _filters(namespace, project, kind, since, until)
        return int((await self.call("count", args, timeout_s=timeout_s))["count"])

    async def ingest(
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
    ) -> IngestResult:
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
        return cast(IngestResult, await self.call("ingest", args, timeout_s=timeout_s))

    async def compact(self, *, timeout_s: float | None = 600.0) -> CompactResult:
        return cast(CompactResult, await self.call("compact", timeout_s=timeout_s))


class BlockingNodeClient:
    """The same API, blocking, for CLIs and threads (one call at a time per client)."""

    def __init__(
        self,
        endpoint: str,
        *,
        server_public_key: KeySource | None = None,
        client_secret_key_file: KeySource | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = max(1, retries)
        self.last_rtt_ms: float | None = None
        self._keys = load_curve_keys(server_public_key, client_secret_key_file)
        self._ctx: zmq.Context[Any] = context if context is not None else zmq.Context.instance()
        self._sock: zmq.Socket[Any] | None = None

    @property
    def curve(self) -> bool:
        return self._keys is not None

    def __enter__(self) -> BlockingNodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _socket(self) -> zmq.Socket[Any]:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            _configure(sock, self._keys)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        tries = self.retries if op in IDEMPOTENT_OPS else 1
        base = uuid.uuid4().hex[:16]
        for attempt in range(1, tries + 1):
            rid = base if attempt == 1 else f"{base}.{attempt}"
            reply = self._exchange(rid, encode_request(rid, op, args), timeout)
            if reply is None:
                self.close()  # Lazy Pirate: a fresh socket for the next try
                continue
            if reply.ok:
                return reply.result
            raise NodeError(reply.error_code, reply.error_message)
        raise NodeUnavailable(self.endpoint, op, tries, timeout)

    def _exchange(self, rid: str, body: bytes, timeout: float) -> Reply | None:
        sock = self._socket()
        t0 = time.perf_counter()
        deadline = t0 + timeout
        # IMMEDIATE: with no live connection the send would block; wait for one.
        if not sock.poll(max(0, int(1000 * (deadline - time.perf_counter()))), zmq.POLLOUT):
            return None
        sock.send(body, zmq.NOBLOCK)
        while (left := deadline - time.perf_counter()) > 0:
            if not sock.poll(max(1, int(1000 * left)), zmq.POLLIN):
                return None
            try:
                reply = decode_reply(sock.recv_multipart()[-1])
            except ProtocolError:
                continue
            if reply.id == rid:
                self.last_rtt_ms = 1000 * (time.perf_counter() - t0)
                return reply
        return None

    # -- typed ops -------------------------------------------------------------------------

    def health(self, *, timeout_s: float | None = None) -> HealthResult:
        return cast(HealthResult, self.call("health", timeout_s=timeout_s))

    def stats(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("stats", timeout_s=timeout_s))

    def embed(self, texts: Sequence[str], *, timeout_s: float | None = None) -> list[list[float]]:
        t = timeout_s or _bulk_timeout(self.timeout_s, len(texts))
        return _embed_result(self.call("embed", {"texts": list(texts)}, timeout_s=t))

    def upsert(
        self, items: Sequence[Item], *, on_duplicate: str = "skip", timeout_s: float | None = None
    ) -> UpsertResult:
        args = {"items": [dict(it) for it in items], "on_duplicate": on_duplicate}
        t = timeout_s or _bulk_timeout(self.timeout_s, len(items))
        return cast(UpsertResult, self.call("upsert", args, timeout_s=t))

    def search(
        self,
        query: str | None = None,
        *,
        vector: Vector | None = None,
        like_id: str | None = None,
        k: int = 10,
        mode: str | None = None,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        timeout_s: float | None = None,
    ) -> SearchResult:
        args = _drop_none(
            query=query,
            vector=None if vector is None else _vector_bytes(vector),
            like_id=like_id,
            k=k,
            mode=mode,
        )
        args.update(_filters(namespace, project, kind, since, until))
        return cast(SearchResult, self.call("search", args, timeout_s=timeout_s))

    def get(self, ids: Sequence[str], *, timeout_s: float | None = None) -> GetResult:
        return cast(GetResult, self.call("get", {"ids": list(ids)}, timeout_s=timeout_s))

    def delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        args = _drop_none(ids=None if ids is None else list(ids))
        args.update(_filters(namespace, project, kind, since, until))
        return int(self.call("delete", args, timeout_s=timeout_s)["deleted"])

    def count(
        self,
        *,
        namespace: str | None = None,
        project: str | None = None,
        kind: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        timeout_s: float | None = None,
    ) -> int:
        args = _filters(namespace, project, kind, since, until)
        return int(self.call("count", args, timeout_s=timeout_s)["count"])

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
    ) -> IngestResult:
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
        return cast(IngestResult, self.call("ingest", args, timeout_s=timeout_s))

    def compact(self, *, timeout_s: float | None = 600.0) -> CompactResult:
        return cast(CompactResult, self.call("compact", timeout_s=timeout_s))

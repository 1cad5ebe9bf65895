"""Clients for the node: ``NodeClient`` (zmq.asyncio, for the TUI) and ``BlockingNodeClient``.

Both follow the Lazy Pirate pattern from the ZeroMQ guide: a DEALER with
``LINGER=0`` and ``IMMEDIATE``, ZMTP heartbeats, a timeout per call; on a timeout
the socket is closed and reopened and an idempotent op is sent again, a bounded
number of times, before :class:`NodeUnavailable`. Replies are matched by request
id; strays (late replies to an abandoned try) are dropped. Every call measures
its round trip into ``last_rtt_ms``. ``NodeClient`` multiplexes: many coroutines
may call at once over one socket.

The typed ops (``health``, ``search``, ...) are written once, in
``node_daemon.client_base``; this module holds the two transports (``call``).

Standard library, zmq and msgpack only: the TUI imports this.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, ClassVar, Literal, TypeVar

import zmq
import zmq.asyncio

from node_daemon.client_base import (
    ClientBase,
    KeySource,
    NodeError,
    NodeUnavailable,
    OpRequest,
    Vector,
    configure_socket,
    load_curve_keys,
)
from node_daemon.protocol import ProtocolError, Reply, decode_reply, encode_request

__all__ = [
    "BlockingNodeClient",
    "KeySource",
    "NodeClient",
    "NodeError",
    "NodeUnavailable",
    "Vector",
    "load_curve_keys",
]

T = TypeVar("T")
SEND_RETRY_S = 0.01  # between sends that found no connected peer (see _send_when_connected)


async def _send_when_connected(sock: zmq.asyncio.Socket, body: bytes) -> None:
    """Send once a peer is connected (IMMEDIATE), however long the caller's timeout allows.

    pyzmq can find the socket writable while a connection attempt comes and goes (nobody
    listening yet) and the send then fails with EAGAIN; that is "not connected yet", the
    same as a send still waiting, not an error of the call.
    """
    while True:
        try:
            await sock.send(body)
            return
        except zmq.Again:
            await asyncio.sleep(SEND_RETRY_S)


class _SocketReset(Exception):
    """Another call replaced the socket while this one waited: send again."""


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class NodeClient(ClientBase):
    """asyncio client. Create it anywhere; it binds to the running loop at the first call."""

    blocking: ClassVar[Literal[False]] = False

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
        super().__init__(endpoint, server_public_key, client_secret_key_file, timeout_s, retries)
        self._ctx = context if context is not None else zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._closed = False

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
            configure_socket(sock, self._keys)
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
        timeout, rids = self._tries(op, timeout_s)
        loop = asyncio.get_running_loop()
        for rid in rids:
            body = encode_request(rid, op, args)
            sock = self._socket()
            fut: asyncio.Future[Reply] = loop.create_future()
            self._pending[rid] = fut
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    await _send_when_connected(sock, body)
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
            return self._result(reply)
        raise NodeUnavailable(self.endpoint, op, len(rids), timeout)

    async def _send(self, request: OpRequest[T]) -> T:
        return request.parse(await self.call(request.op, request.args, timeout_s=request.timeout_s))


class BlockingNodeClient(ClientBase):
    """The same API, blocking, for CLIs and threads (one call at a time per client)."""

    blocking: ClassVar[Literal[True]] = True

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
        super().__init__(endpoint, server_public_key, client_secret_key_file, timeout_s, retries)
        self._ctx: zmq.Context[Any] = context if context is not None else zmq.Context.instance()
        self._sock: zmq.Socket[Any] | None = None

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
            configure_socket(sock, self._keys)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def call(
        self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Send one request; its result, or NodeError / NodeUnavailable."""
        timeout, rids = self._tries(op, timeout_s)
        for rid in rids:
            reply = self._exchange(rid, encode_request(rid, op, args), timeout)
            if reply is not None:
                return self._result(reply)
            self.close()  # Lazy Pirate: a fresh socket for the next try
        raise NodeUnavailable(self.endpoint, op, len(rids), timeout)

    def _exchange(self, rid: str, body: bytes, timeout: float) -> Reply | None:
        sock = self._socket()
        t0 = time.perf_counter()
        deadline = t0 + timeout
        # IMMEDIATE: with no live connection the send would block; wait for one. The
        # socket can look writable while a connection attempt comes and goes, and the
        # send then finds no peer (EAGAIN): wait again (see _send_when_connected).
        while True:
            left_ms = max(0, int(1000 * (deadline - time.perf_counter())))
            if not sock.poll(left_ms, zmq.POLLOUT):
                return None
            try:
                sock.send(body, zmq.NOBLOCK)
                break
            except zmq.Again:
                if time.perf_counter() >= deadline:
                    return None
                time.sleep(SEND_RETRY_S)
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

    def _send(self, request: OpRequest[T]) -> T:
        return request.parse(self.call(request.op, request.args, timeout_s=request.timeout_s))

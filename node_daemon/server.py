"""`tars-node serve`: the ROUTER socket, request routing, replies, logging and shutdown.

The socket binds before the model loads, so `health` answers at once (with
``ready: false``) and other ops get ``busy`` until the node is ready. Each
request runs as its own task; a malformed one gets an error reply and nothing
else is disturbed (every frame is read inside the error handling; past
MAX_INFLIGHT only its id is read, for the ``busy`` reply); a frame over
``max_message_bytes`` is dropped by libzmq together with its connection
(MAXMSGSIZE). SIGTERM/SIGINT (or the parent process going away, with
--parent-pid) finish the requests in flight, save the FAISS index and exit 0.
SIGHUP re-reads the authorised client keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import io
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from node_daemon import keys
from node_daemon.logs import setup_logging
from node_daemon.protocol import (
    BAD_REQUEST,
    BUSY,
    INTERNAL,
    ProtocolError,
    decode_request,
    encode_error,
    encode_result,
    peek_request_id,
)
from node_daemon.service import Node
from tars_core.settings.server import ServerConfig

log = logging.getLogger("tars_node.server")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BIND, EXIT_LOCKED = 0, 1, 2, 3, 4
MAX_INFLIGHT = 512
QUIET_OPS = frozenset({"health", "stats"})  # polled every second by the TUI: debug level


@dataclass(frozen=True)
class ServeOptions:
    cfg: ServerConfig
    data_dir: Path
    bind: str
    curve: bool
    keys_dir: Path
    authorized_dir: Path
    endpoint_file: Path | None = None
    parent_pid: int | None = None
    log_stderr: bool = True


class DataDirLock:
    """One daemon per data directory: a second one would fork the index."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "node.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for life
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            # A read-only data directory: nobody can write to it, so nothing can fork
            # it; lock the file if it exists (flock needs no write access) and go on,
            # so that the node can say what is wrong instead of failing to start.
            if not self.path.is_file():
                log.warning("no lock: the data directory is read-only", extra={"error": str(exc)})
                return
            f = open(self.path, encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise RuntimeError(
                f"another tars-node (pid {holder}) is using {self.path.parent}"
            ) from None
        with contextlib.suppress(OSError, io.UnsupportedOperation):
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def serve(opts: ServeOptions) -> int:
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(opts.data_dir)
    try:
        lock.acquire()
    except RuntimeError as exc:
        print(f"tars-node: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    try:
        setup_logging(opts.data_dir / "logs", opts.cfg.log_level, stderr=opts.log_stderr)
        return asyncio.run(Server(opts).run())
    finally:
        lock.release()


class Server:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.node = Node(opts.cfg, opts.data_dir, curve=opts.curve)
        self.stop = asyncio.Event()
        self.exit_code = EXIT_OK
        self._tasks: set[asyncio.Task[None]] = set()
        self._auth: AsyncioAuthenticator | None = None

    async def run(self) -> int:
        opts = self.opts
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.MAXMSGSIZE, opts.cfg.max_message_bytes)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 5000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)
        sock.setsockopt(zmq.LINGER, 1000)
        try:
            if opts.curve:
                self._start_curve(ctx, sock)
            sock.bind(opts.bind)
        except (zmq.ZMQError, OSError, ValueError) as exc:
            log.error("cannot listen", extra={"bind": opts.bind, "error": str(exc)})
            sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
            ctx.term()
            return EXIT_BIND
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.node.endpoint = endpoint
        if opts.endpoint_file is not None:
            tmp = opts.endpoint_file.with_name(opts.endpoint_file.name + ".tmp")
            tmp.write_text(endpoint, encoding="utf-8")
            os.replace(tmp, opts.endpoint_file)
        log.info(
            "listening",
            extra={
                "endpoint": endpoint,
                "curve": opts.curve,
                "pid": os.getpid(),
                "data_dir": str(opts.data_dir),
            },
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        if self._auth is not None:
            loop.add_signal_handler(signal.SIGHUP, self._reload_keys)
        background = [loop.create_task(self._load(), name="load")]
        if opts.parent_pid is not None:
            background.append(loop.create_task(self._watch_parent(opts.parent_pid)))
        receiver = loop.create_task(self._receive(sock), name="receive")
        receiver.add_done_callback(self._receiver_done)
        await self.stop.wait()
        receiver.cancel()
        for task in background:
            task.cancel()
        await asyncio.gather(receiver, *background, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.node.close()
        sock.close(linger=500)
        if self._auth is not None:
            self._auth.stop()
        ctx.term()
        log.info("stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _start_curve(self, ctx: zmq.asyncio.Context, sock: zmq.asyncio.Socket) -> None:
        public, secret = keys.load_server_secret(self.opts.keys_dir)
        self.opts.authorized_dir.mkdir(parents=True, exist_ok=True)
        auth = AsyncioAuthenticator(ctx, log=logging.getLogger("tars_node.auth"))
        auth.start()
        auth.configure_curve(domain="*", location=str(self.opts.authorized_dir))
        self._auth = auth
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        n = keys.authorized_count(self.opts.authorized_dir)
        if n == 0:
            log.warning("no client key is authorised", extra={"dir": str(self.opts.authorized_dir)})
        log.info("curve on", extra={"authorized_keys": n})

    def _reload_keys(self) -> None:
        if self._auth is not None:
            self._auth.configure_curve(domain="*", location=str(self.opts.authorized_dir))
            log.info(
                "authorised keys reloaded",
                extra={"authorized_keys": keys.authorized_count(self.opts.authorized_dir)},
            )

    def _request_stop(self, why: str) -> None:
        log.info("stopping", extra={"why": why})
        self.stop.set()

    async def _load(self) -> None:
        try:
            await self.node.load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("start failed", extra={"error": str(exc)})
            self.exit_code = EXIT_FAILED
            self.stop.set()

    async def _watch_parent(self, pid: int) -> None:
        while True:
            await asyncio.sleep(0.5)
            if os.getppid() != pid:
                self._request_stop(f"parent process {pid} is gone")
                return

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError:
                log.exception("receive failed")
                await asyncio.sleep(0.1)
                continue
            try:
                await self._dispatch(sock, frames)
            except Exception:  # a bug here must never end the receive loop
                log.exception("a message could not be dispatched")

    async def _dispatch(self, sock: zmq.asyncio.Socket, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        if self.node.inflight >= MAX_INFLIGHT:
            # Read nothing but the id: a flood must cost little, and may be hostile.
            envelope, bodies = split_frames(frames)
            reply = encode_error(
                peek_request_id(bodies[0]),
                BUSY,
                f"more than {MAX_INFLIGHT} requests in flight; try again",
            )
            await self._reply(sock, envelope, reply)
            return
        self.node.inflight += 1  # here, not in the task: it may not start for a while
        task = asyncio.get_running_loop().create_task(self._handle(sock, frames))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receiver_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the receive loop died", exc_info=task.exception())
            self.exit_code = EXIT_FAILED
            self.stop.set()

    async def _handle(self, sock: zmq.asyncio.Socket, frames: list[bytes]) -> None:
        t0 = time.perf_counter()
        envelope, bodies = split_frames(frames)
        body = bodies[0]
        rid, op, code = "", "(invalid)", ""
        try:
            if len(bodies) > 1:
                raise ProtocolError(
                    BAD_REQUEST, "a request is exactly one frame", peek_request_id(body)
                )
            req = decode_request(body)
            rid, op = req.id, req.op
            result: Any = await self.node.handlers[op](req.args)
            reply = encode_result(rid, result)
        except ProtocolError as exc:
            code = exc.code
            reply = encode_error(exc.request_id or rid, exc.code, exc.message)
        except Exception as exc:
            code = INTERNAL
            known = await self.node.explain(exc)
            if known is not None:  # a storage fault: the node logged it once, with its cause
                reply = encode_error(rid, INTERNAL, known.message)
            else:
                log.exception("request failed", extra={"rid": rid, "op": op})
                reply = encode_error(rid, INTERNAL, f"internal error ({type(exc).__name__}: {exc})")
        finally:
            self.node.inflight -= 1
        await self._reply(sock, envelope, reply)
        ms = 1000 * (time.perf_counter() - t0)
        self.node.metrics.record(op, ms, not code)
        level = logging.WARNING if code in (INTERNAL,) else logging.INFO
        if op in QUIET_OPS and not code:
            level = logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "request",
                extra={
                    "rid": rid,
                    "op": op,
                    "ms": round(ms, 3),
                    "outcome": code or "ok",
                    "bytes_in": len(body),
                    "bytes_out": len(reply),
                },
            )

    async def _reply(self, sock: zmq.asyncio.Socket, envelope: list[bytes], body: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the client went away: nothing to do
            await sock.send_multipart([*envelope, body])


def split_frames(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(routing envelope, body frames) of what a ROUTER received: the peer's identity,
    then a REQ socket's empty delimiter (echoed back so REQ accepts the reply)."""
    if len(frames) > 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]

"""The llama.cpp engine in a child process, so the UI's GIL never stalls decoding.

``ProcessEngine`` has the public surface of ``LLMEngine``; the child simply runs
an ``LLMEngine``. The child is spawned (never forked from a Textual process) on
the first ``load()``, is a daemon, and exits when its pipe closes or its parent
disappears. Messages are msgpack maps over a ``multiprocessing`` pipe, each with
the id of the request it answers.

Streaming: the child generates at full speed and sends the first piece at once,
then the pieces gathered at most every ``batch_interval_s``; the last message
carries any unsent tail, the child's metrics and how the reply ended.
Cancelling sets a shared event the child's ``should_stop`` checks before every
token; the reply keeps exactly the text the child generated.

A child that dies on its own (kill -9, out of memory) is noticed at once
(``on_death``); a reply it was streaming ends with :class:`ModelProcessDied`, and
the next request, or ``revive()``, starts a new child with the model it had.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, cast

import msgpack  # type: ignore[import-untyped]

from memory.conversation_store import ReplyMetrics
from tars_assistant.child_watch import ChildWatch, exit_code, reaped_code
from tars_assistant.llm import (
    ChatMessage,
    EngineBase,
    FittedPrompt,
    LLMEngine,
    ModelError,
    Reply,
    Sampling,
    check_fits,
    check_gguf,
    resolve_model_path,
)
from tars_core.config import LLMConfig

POLL_S = 0.02  # how often the parent checks should_stop while waiting for pieces
START_TIMEOUT_S = 60.0  # spawn + import llama_cpp
DRAIN_TIMEOUT_S = 10.0  # after a cancel, how long the child may take to end the reply
CLOSE_TIMEOUT_S = 2.0
PARENT_CHECK_S = 0.5


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(data, raw=False)
    if not isinstance(obj, dict):
        raise ValueError("not a msgpack map")
    return cast(dict[str, Any], obj)


def _metrics_to_wire(m: ReplyMetrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "ttft_ms": m.ttft_ms,
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "tokens_per_s": m.tokens_per_s,
        "total_ms": m.total_ms,
        "stages": dict(m.stages),
    }


def _metrics_from_wire(d: dict[str, Any] | None) -> ReplyMetrics | None:
    if d is None:
        return None
    return ReplyMetrics(
        ttft_ms=d["ttft_ms"],
        prompt_tokens=d["prompt_tokens"],
        completion_tokens=d["completion_tokens"],
        tokens_per_s=d["tokens_per_s"],
        total_ms=d["total_ms"],
        stages={str(k): float(v) for k, v in d["stages"].items()},
    )


# -- the child -------------------------------------------------------------------------


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (reparented), even mid-generation."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(0)


def _child_main(
    conn: Connection, cancel: MpEvent, cfg_bytes: bytes, parent_pid: int, interval: float
) -> None:
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    engine = LLMEngine(LLMConfig(**_unpack(cfg_bytes)))
    try:
        while True:
            try:
                req = _unpack(conn.recv_bytes())
            except (EOFError, OSError):
                return  # the parent closed the pipe or died
            op, rid = req.get("op"), req.get("id")
            if op == "quit":
                return
            if op == "stream":
                _child_stream(engine, conn, cancel, req, interval)
                continue
            try:
                value = _child_call(engine, req)
            except ModelError as exc:
                conn.send_bytes(_pack({"id": rid, "t": "error", "message": str(exc)}))
            except Exception as exc:  # reported to the parent, the child lives on
                message = f"the model process failed: {type(exc).__name__}: {exc}"
                conn.send_bytes(_pack({"id": rid, "t": "error", "message": message}))
            else:
                conn.send_bytes(_pack({"id": rid, "t": "ok", "value": value}))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return
    finally:
        engine.close()


def _child_call(engine: LLMEngine, req: dict[str, Any]) -> object:
    op = req["op"]
    if op == "load":
        engine.cfg = LLMConfig(**req["cfg"])
        path = engine.load(Path(req["path"]))
        return {"path": str(path), "eos": engine.eos_token_id}
    if op == "count_tokens":
        return engine.count_tokens(req["text"])
    if op == "format_tokens":
        return engine.format_tokens(req["messages"])
    if op == "fit":
        fitted = engine.fit(req["system"], req["history"])
        return {
            "tokens": fitted.tokens,
            "messages": fitted.messages,
            "dropped": fitted.dropped_messages,
            "max_new": fitted.max_new_tokens,
        }
    raise ValueError(f"unknown request {op!r}")


def _child_stream(
    engine: LLMEngine, conn: Connection, cancel: MpEvent, req: dict[str, Any], interval: float
) -> None:
    rid = req["id"]
    bias = {int(t): float(b) for t, b in req["logit_bias"]} if req["logit_bias"] else None
    wire = req.get("sampling")
    sampling = Sampling(**{**wire, "stop": tuple(wire["stop"])}) if wire else None
    reply = Reply()
    pending: list[str] = []
    last = float("-inf")
    try:
        for piece in engine.stream(
            req["system"],
            req["history"],
            should_stop=cancel.is_set,
            reply=reply,
            logit_bias=bias,
            sampling=sampling,
        ):
            pending.append(piece)
            now = time.monotonic()
            if now - last >= interval:  # the first piece goes at once
                last = now
                conn.send_bytes(_pack({"id": rid, "t": "piece", "text": "".join(pending)}))
                pending.clear()
    except ModelError as exc:
        conn.send_bytes(_pack({"id": rid, "t": "error", "message": str(exc)}))
        return
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception as exc:
        message = f"the model process failed: {type(exc).__name__}: {exc}"
        conn.send_bytes(_pack({"id": rid, "t": "error", "message": message}))
        return
    end = {
        "id": rid,
        "t": "end",
        "text": "".join(pending),
        "cancelled": reply.cancelled,
        "finish_reason": reply.finish_reason,
        "metrics": _metrics_to_wire(reply.metrics),
    }
    conn.send_bytes(_pack(end))


# -- the parent ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    path: Path
    eos: int


class _ChildDied(Exception):
    pass


class ModelProcessDied(ModelError):
    """The model's process ended under a request; the next request starts a new one."""


def _alive(proc: SpawnProcess | None) -> bool:
    try:
        return proc is not None and proc.is_alive()
    except ValueError:  # closed by another thread meanwhile
        return False


class ProcessEngine(EngineBase):
    """``LLMEngine``'s surface, generating in a spawned child process.

    One request at a time (a lock), like ``LLMEngine``: a model switch waits for
    a streaming reply to end. ``on_death`` (set by the app) is called from a
    watcher thread, with what happened, when the child dies without being asked.
    """

    def __init__(self, cfg: LLMConfig, *, batch_interval_s: float = 0.05) -> None:
        self.cfg = cfg
        self.batch_interval_s = batch_interval_s
        self._model: _Model | None = None
        self._ready = threading.Event()
        self._load_error: ModelError | None = None
        self._lock = threading.RLock()
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: SpawnProcess | None = None
        self._conn: Connection | None = None
        self._cancel: MpEvent | None = None
        self._watch: ChildWatch | None = None
        # The model a dead child had: the next request (or revive()) loads it again.
        self._lost: Path | None = None
        self.on_death: Callable[[str], None] | None = None
        self._ids = itertools.count(1)
        # Start multiprocessing's resource tracker now, while stderr is the real one:
        # started lazily from inside a running Textual app, it would be handed
        # Textual's stand-in for stderr (fileno -1) and the spawn would fail.
        resource_tracker.ensure_running()

    # -- the child process -----------------------------------------------------------

    def _start_child(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        cancel = self._ctx.Event()
        proc = self._ctx.Process(
            target=_child_main,
            args=(
                child_conn,
                cancel,
                _pack(dataclasses.asdict(self.cfg)),
                os.getpid(),
                self.batch_interval_s,
            ),
            name="tars-llm",
            daemon=True,
        )
        proc.start()
        child_conn.close()  # so the parent sees EOF when the child dies
        self._proc, self._conn, self._cancel = proc, parent_conn, cancel
        self._watch = ChildWatch(proc, self._report_death)

    def _report_death(self, what: str) -> None:
        callback = self.on_death
        if callback is not None:
            callback(f"the model process {what}")

    def _stop_child(self, *, graceful: bool, asked: bool = True) -> None:
        proc, conn, watch = self._proc, self._conn, self._watch
        self._proc = self._conn = self._cancel = self._watch = None
        if watch is not None and asked:
            watch.asked_to_stop()
        if conn is not None:
            if graceful and proc is not None and proc.is_alive():
                with contextlib.suppress(OSError):
                    conn.send_bytes(_pack({"op": "quit"}))
            conn.close()
        if proc is not None:
            proc.join(CLOSE_TIMEOUT_S if graceful else 0)
            if proc.is_alive():
                proc.kill()
                proc.join(CLOSE_TIMEOUT_S)
            # ChildWatch's thread may reap the child at the same moment (two waitpid
            # calls race; the loser sees "still running" once): the process is gone
            # either way, and close() only frees the object's handles. The code is
            # handed to the watcher first: after close() it can no longer read it.
            if watch is not None:
                watch.record(exit_code(proc))
            with contextlib.suppress(ValueError):
                proc.close()

    def _died(self, reason: str | None = None) -> ModelProcessDied:
        """Forget the dead (or hung: ``reason``) child and remember its model for the
        next request; waiters get the returned error."""
        watch, proc = self._watch, self._proc
        what = reason or "died"
        if proc is not None and reason is None:
            with contextlib.suppress(ValueError):
                proc.join(CLOSE_TIMEOUT_S)  # it is dying: wait for its exit code
        if watch is not None:
            if proc is not None and watch.code is None:
                watch.record(reaped_code(proc) if reason is None else exit_code(proc))
            watch.reason = reason
            what = watch.death_message()
        if self._model is not None:
            self._lost = self._model.path
        self._stop_child(graceful=False, asked=False)
        self._model = None
        err = ModelProcessDied(f"the model process {what}")
        self._load_error = err
        self._ready.set()
        return err

    def revive(self) -> Path | None:
        """Start a new child with the model a dead one had. Blocks; returns the
        model's path, or None if no child had died. ModelError if it fails to load."""
        # Under the lock only: a death being handled by the streaming thread has no
        # process and no lost model for a moment, which reads as "nothing died".
        with self._lock:
            if self._model is not None and not _alive(self._proc):
                self._died()
            lost = self._lost
            if lost is None or self._model is not None:
                return None
            return self.load(lost)

    @property
    def is_ready(self) -> bool:
        return self._model is not None and _alive(self._proc)

    @property
    def model_name(self) -> str:
        """The loaded model's file name; after a death, the model the child had (what
        revive() reloads), which may not be the configured one after a /model switch."""
        lost = self._lost if self._model is None else None
        return lost.name if lost is not None else super().model_name

    @property
    def child_pid(self) -> int | None:
        """The child's process id (None before the first load and after close)."""
        return self._proc.pid if self._proc is not None else None

    def _send(self, msg: dict[str, Any]) -> int:
        if self._conn is None or self._proc is None or not self._proc.is_alive():
            raise _ChildDied
        rid = next(self._ids)
        try:
            self._conn.send_bytes(_pack({**msg, "id": rid}))
        except OSError:
            raise _ChildDied from None
        return rid

    def _recv(self, rid: int, timeout: float | None) -> dict[str, Any] | None:
        """The next message for request ``rid``; None if none came within ``timeout``."""
        conn = self._conn
        if conn is None:
            raise _ChildDied
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                if not conn.poll(left):
                    return None
                msg = _unpack(conn.recv_bytes())
            except (EOFError, OSError):
                raise _ChildDied from None
            if msg.get("id") == rid:
                return msg

    def _call(self, msg: dict[str, Any], *, timeout: float | None = None) -> Any:
        """One request and its answer (the lock held by the caller)."""
        try:
            rid = self._send(msg)
            while True:
                answer = self._recv(rid, 1.0)
                if answer is not None:
                    break
                if self._proc is None or not self._proc.is_alive():
                    raise _ChildDied
                if timeout is not None:
                    timeout -= 1.0
                    if timeout <= 0:
                        raise self._died("stopped answering and was stopped")
        except _ChildDied:
            raise self._died() from None
        if answer["t"] == "error":
            raise ModelError(answer["message"])
        return answer["value"]

    # -- loading ---------------------------------------------------------------------

    def _loaded_path(self) -> Path | None:
        return self._model.path if self._model else None

    def load(self, path: Path | None = None) -> Path:
        """Load ``path`` (default: the configured or bundled model) in the child. Blocks.

        Starts the child if needed (also after it died). On failure the previous
        model, if any, stays loaded and ModelError is raised.
        """
        try:
            target = path if path is not None else resolve_model_path(self.cfg)
            check_gguf(target)
            check_fits(target, self.cfg)  # here, so a refusal needs no child
            with self._lock:
                if self._proc is None or not self._proc.is_alive():
                    if self._proc is not None:
                        self._died()
                    self._start_child()
                info = self._call(
                    {"op": "load", "path": str(target), "cfg": dataclasses.asdict(self.cfg)}
                )
                self._model = _Model(path=target, eos=int(info["eos"]))
                self._lost = None
                self._load_error = None
                self._ready.set()
        except ModelError as exc:
            if self._model is None:
                self._load_error = exc
                self._ready.set()  # wake waiters so they report the error
            raise
        return target

    def _require(self) -> _Model:
        self.revive()
        self.wait_ready()
        assert self._model is not None
        return self._model

    @property
    def eos_token_id(self) -> int:
        return self._require().eos

    def close(self) -> None:
        """Stop the child (a streaming reply is cancelled first)."""
        if self._cancel is not None:
            self._cancel.set()
        locked = self._lock.acquire(timeout=CLOSE_TIMEOUT_S)
        try:
            self._stop_child(graceful=locked)
            self._model = self._lost = None
            self._ready.clear()
        finally:
            if locked:
                self._lock.release()

    # -- tokens and context ----------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        self._require()
        with self._lock:
            return int(self._call({"op": "count_tokens", "text": text}))

    def format_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The exact prompt tokens the model sees for ``messages``."""
        self._require()
        with self._lock:
            return [int(t) for t in self._call({"op": "format_tokens", "messages": messages})]

    def fit(self, system: str, history: Sequence[ChatMessage]) -> FittedPrompt:
        """``LLMEngine.fit``, computed in the child."""
        self._require()
        with self._lock:
            d = self._call({"op": "fit", "system": system, "history": list(history)})
        return FittedPrompt(
            tokens=d["tokens"],
            messages=d["messages"],
            dropped_messages=d["dropped"],
            max_new_tokens=d["max_new"],
        )

    # -- generation ------------------------------------------------------------------

    def stream(
        self,
        system: str,
        history: Sequence[ChatMessage],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        reply: Reply | None = None,
        logit_bias: dict[int, float] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Yield reply text pieces (each possibly several tokens) as the child makes them.

        ``should_stop`` is polled while waiting and after every piece; when it
        returns True the child stops before its next token. ``reply`` ends with
        exactly the text yielded, the child's metrics and its finish reason.
        """
        reply = reply if reply is not None else Reply()
        t_start = time.perf_counter()
        self.revive()
        self.wait_ready()
        waited_ms = (time.perf_counter() - t_start) * 1000
        with self._lock:
            self._require()
            if self._cancel is not None:
                self._cancel.clear()
            bias = [[int(t), float(b)] for t, b in logit_bias.items()] if logit_bias else None
            request = {"op": "stream", "system": system, "history": list(history)}
            wire = dataclasses.asdict(sampling) if sampling is not None else None
            try:
                rid = self._send({**request, "logit_bias": bias, "sampling": wire})
            except _ChildDied:
                raise self._died() from None
            ended = False
            stopping = False
            try:
                while True:
                    if not stopping and should_stop():
                        stopping = True
                        if self._cancel is not None:
                            self._cancel.set()
                    try:
                        msg = self._recv(rid, POLL_S)
                    except _ChildDied:
                        ended = True
                        raise self._died() from None
                    if msg is None:
                        continue
                    kind = msg["t"]
                    if kind == "piece":
                        reply.text += msg["text"]
                        yield msg["text"]
                        continue
                    ended = True
                    if kind == "error":
                        raise ModelError(msg["message"])
                    self._finish(reply, msg, waited_ms)
                    tail: str = msg["text"]
                    if tail:
                        reply.text += tail
                        yield tail
                    return
            finally:
                if not ended:  # the consumer closed the generator (or should_stop raised)
                    reply.cancelled = True
                    self._abandon(rid, reply, waited_ms)

    def _finish(self, reply: Reply, end: dict[str, Any], waited_ms: float) -> None:
        reply.cancelled = reply.cancelled or bool(end["cancelled"])
        reply.finish_reason = end["finish_reason"]
        metrics = _metrics_from_wire(end["metrics"])
        if metrics is not None and waited_ms >= 1:
            metrics = dataclasses.replace(
                metrics, stages={**metrics.stages, "model_wait_ms": waited_ms}
            )
        reply.metrics = metrics

    def _abandon(self, rid: int, reply: Reply, waited_ms: float) -> None:
        """Cancel the child's reply and read up to its end, so the next request starts clean."""
        if self._cancel is not None:
            self._cancel.set()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                msg = self._recv(rid, POLL_S)
                if msg is None or msg["t"] == "piece":
                    continue
                if msg["t"] == "end":
                    self._finish(reply, msg, waited_ms)
                    reply.cancelled = True
                return
            self._died("would not stop its reply and was stopped")
        except _ChildDied:
            self._died()


# What the app and the session accept: the TUI uses the child process, plain mode
# and `tars ask` (no UI to contend with) the in-process engine.
Engine = LLMEngine | ProcessEngine

"""The OpenAI-compatible HTTP engine: any server that speaks ``/v1/chat/completions``.

llama.cpp's ``llama-server``, Ollama (``:11434/v1``), vLLM, LM Studio, a cloud
endpoint, or another TARS's ``tars serve``. It has the surface of the llama.cpp
engines (``EngineBase``): streaming with cancel, stop strings, usage, TTFT and tok/s,
the model's window; and it carries tool calls through (``tools=``, ``Reply.tool_calls``).

The request runs on an event loop in a thread of its own (``LoopThread``); the
blocking ``stream()`` reads its pieces from a queue and checks ``should_stop`` every
``POLL_S``, so a cancel closes the connection at once even while the server is
still reading the prompt, and the server sees the client go and stops generating.

The window is not the server's tokenizer: prompts are measured with
``approx_tokens`` (an upper bound), so a fitted prompt never overflows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from memory.context import approx_tokens
from memory.conversation_store import ReplyMetrics
from memory.loop import LoopThread
from tars_assistant.backend_errors import BackendError
from tars_assistant.llm import (
    TRUNCATED_MARK,
    ChatMessage,
    EngineBase,
    FittedPrompt,
    ModelError,
    Reply,
    Sampling,
)
from tars_assistant.profiles import api_key, key_setting
from tars_core.config import ModelProfile

POLL_S = 0.02
PER_MESSAGE_TOKENS = 8  # role markers and separators of any chat template
MAX_ERROR_BODY = 4096
MAX_LINE = 1 << 20  # one SSE line; a server sending more is not speaking SSE
CANCEL_WAIT_S = 1.0
PROBE_TIMEOUT_S = 5.0
MAX_STOPS = 4  # OpenAI's limit on stop strings


def normalise_base_url(url: str) -> str:
    """The API root that ``/chat/completions`` hangs off.

    ``http://host:8080`` and ``http://host:8080/`` mean ``…/v1``; Ollama's native
    ``…/api`` means its OpenAI-compatible ``…/v1`` (the usual /v1-vs-/api mix-up).
    """
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if path in ("", "/api"):
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def server_root(base_url: str) -> str:
    """``http://host:8080/v1`` -> ``http://host:8080`` (for /props, /api/show)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass
class ToolCall:
    """One tool call the model asked for, as OpenAI streams it (arguments as JSON text)."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _StreamEnd:
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


class OpenAIEngine(EngineBase):
    """One profile's server; ``load()`` checks it answers and learns its model and window."""

    def __init__(self, profile: ModelProfile) -> None:
        self.profile = profile
        self.cfg = profile.llm
        self.base_url = normalise_base_url(profile.base_url)
        self.root = server_root(self.base_url)
        host = urlsplit(self.base_url).netloc.rpartition("@")[2]
        self.server = f"the model server at {host}"
        self._ready = threading.Event()
        self._load_error: ModelError | None = None
        self._served: str | None = None  # the model's id on the server
        self._n_ctx: int | None = None
        self._lock = threading.Lock()  # one load at a time
        self._loop_lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._client: httpx.AsyncClient | None = None
        self.on_death: Callable[[str], None] | None = None  # never dies: no process here

    # -- the surface every engine has ---------------------------------------------------

    def _loaded_path(self) -> Path | None:
        return None

    @property
    def model_path(self) -> Path | None:
        return None

    @property
    def model_name(self) -> str:
        """The model as the server names it (llama-server names it by its file path:
        the file's name then)."""
        name = self._served or self.profile.model or self.profile.name
        return name.rsplit("/", 1)[-1] if name.lower().endswith(".gguf") else name

    @property
    def is_ready(self) -> bool:
        return self._served is not None

    @property
    def n_ctx(self) -> int:
        return self._n_ctx or self.cfg.n_ctx

    def wait_ready(self, timeout: float | None = None) -> None:
        self.load()

    def revive(self) -> None:
        return None

    def close(self) -> None:
        loop, client = self._loop, self._client
        self._loop = self._client = None
        if loop is not None:
            if client is not None:
                with contextlib.suppress(TimeoutError, RuntimeError):
                    loop.run(client.aclose(), timeout=2.0)
            loop.close()

    def load(self, path: Path | None = None) -> None:
        """Ask the server for its models and the model's window. Blocks; BackendError
        when it cannot be used (the next call tries again)."""
        if path is not None:
            raise ModelError(
                f"[models.{self.profile.name}] runs the model of {self.server}; "
                "/model PATH.gguf switches to a local file"
            )
        with self._lock:
            if self._served is not None:
                return
            try:
                served, n_ctx = self._run(self._probe(), PROBE_TIMEOUT_S + self.profile.timeout_s)
            except ModelError as exc:
                self._load_error = exc
                self._ready.set()
                raise
            self._served, self._n_ctx = served, n_ctx
            self._load_error = None
            self._ready.set()

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def fit(self, system: str, history: Sequence[ChatMessage]) -> FittedPrompt:
        """The system prompt and the latest messages that fit the window (estimated)."""
        n_ctx = self.n_ctx
        reserve = min(self.cfg.max_tokens, n_ctx // 2)
        budget = n_ctx - reserve
        head: list[ChatMessage] = [{"role": "system", "content": system}] if system else []

        def cost(msgs: Sequence[ChatMessage]) -> int:
            return sum(approx_tokens(m["content"]) + PER_MESSAGE_TOKENS for m in msgs)

        msgs = list(history)
        start = 0
        while start < len(msgs) - 1 and cost(head + msgs[start:]) > budget:
            start += 1
        while start < len(msgs) - 1 and msgs[start]["role"] != "user":
            start += 1
        kept = msgs[start:]
        if kept and cost(head + kept) > budget:
            room = max(budget - cost(head + kept[:-1]) - PER_MESSAGE_TOKENS, 16)
            last = kept[-1]
            kept[-1] = {"role": last["role"], "content": _cut(last["content"], room)}
        if head and cost(head + kept) > budget:
            head = [{"role": "system", "content": _cut(system, budget // 4)}]
        used = cost(head + kept)
        if used > budget:
            raise ModelError(f"the prompt does not fit the model's {n_ctx}-token window")
        return FittedPrompt(
            tokens=[],
            messages=head + kept,
            dropped_messages=start,
            max_new_tokens=max(1, min(self.cfg.max_tokens, n_ctx - used)),
        )

    # -- generation ---------------------------------------------------------------------

    def stream(
        self,
        system: str,
        history: Sequence[ChatMessage],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        reply: Reply | None = None,
        logit_bias: dict[int, float] | None = None,
        sampling: Sampling | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text as the server streams it; see ``LLMEngine.stream``.

        ``tools`` (OpenAI's function schemas) are sent along; the calls the model
        makes land on ``reply.tool_calls``.
        """
        reply = reply if reply is not None else Reply()
        t_start = time.perf_counter()
        self.load()
        waited_ms = (time.perf_counter() - t_start) * 1000
        fitted = self.fit(system, history)
        body = self._body(fitted, sampling or Sampling(), logit_bias, tools)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        finished = threading.Event()
        t0 = time.perf_counter()
        future = self._loop_thread().submit(self._pump(body, events.put, finished))
        t_first: float | None = None
        t_last = t0
        pieces = 0
        end = _StreamEnd()
        calls: dict[int, ToolCall] = {}
        held: list[tuple[str, Any]] = []  # an event read while gathering pieces
        try:
            while True:
                if should_stop():
                    reply.cancelled = True
                    break
                try:
                    kind, payload = held.pop() if held else events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if kind == "piece":
                    # Pieces that arrived while the reader was busy go on as one: a slow
                    # reader (an API stream, a repaint) never falls behind the server.
                    count = 1
                    while True:
                        try:
                            more = events.get_nowait()
                        except queue.Empty:
                            break
                        if more[0] != "piece":
                            held.append(more)
                            break
                        payload += more[1]
                        count += 1
                    pieces += count
                    t_last = time.perf_counter()
                    if t_first is None:
                        t_first = t_last
                    reply.text += payload
                    yield payload
                elif kind == "tool":
                    _merge_tool_call(calls, payload)
                elif kind == "error":
                    raise payload
                else:
                    end = payload
                    reply.finish_reason = end.finish_reason
                    break
        except GeneratorExit:
            reply.cancelled = True
            raise
        finally:
            if reply.cancelled and not future.done():
                future.cancel()  # closes the connection: the server stops generating
            finished.wait(CANCEL_WAIT_S)
            reply.tool_calls = [calls[i] for i in sorted(calls)]
            reply.metrics = _metrics(end, t0, t_first, t_last, pieces, fitted, waited_ms)

    def _body(
        self,
        fitted: FittedPrompt,
        s: Sampling,
        logit_bias: dict[int, float] | None,
        tools: Sequence[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        max_new = fitted.max_new_tokens
        if s.max_tokens is not None:
            max_new = max(1, min(s.max_tokens, max_new))
        body: dict[str, Any] = {
            "model": self._served,
            "messages": fitted.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_new,
            "temperature": self.cfg.temperature if s.temperature is None else s.temperature,
            "top_p": self.cfg.top_p if s.top_p is None else s.top_p,
        }
        if s.stop:
            body["stop"] = list(s.stop[:MAX_STOPS])
        if self.cfg.seed >= 0:
            body["seed"] = self.cfg.seed
        if logit_bias:
            body["logit_bias"] = {str(t): b for t, b in logit_bias.items()}
        if tools:
            body["tools"] = list(tools)
        return body

    # -- the event loop's side ---------------------------------------------------------

    def _loop_thread(self) -> LoopThread:
        with self._loop_lock:
            if self._loop is None:
                self._loop = LoopThread(name=f"tars-http-{self.profile.name}")
            return self._loop

    def _http(self) -> httpx.AsyncClient:
        """The connection pool; made on the loop (httpx binds to the loop it is used in)."""
        if self._client is None:
            t = self.profile.timeout_s
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(t, connect=min(t, 10.0)),
                headers=self._headers(),
                follow_redirects=False,
                trust_env=False,  # a proxy from the environment must not see local traffic
            )
        return self._client

    def _headers(self) -> dict[str, str]:
        key = api_key(self.profile)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _run(self, coro: Any, timeout: float) -> Any:
        try:
            return self._loop_thread().run(coro, timeout)
        except TimeoutError:
            raise BackendError(
                f"{self.server} did not answer within {timeout:g} s", kind="timeout"
            ) from None

    async def _probe(self) -> tuple[str, int | None]:
        models = await self._models()
        ids = list(models)
        wanted = self.profile.model
        if wanted and ids and wanted not in ids:
            raise self._unknown_model(wanted, ids)
        served = wanted or (ids[0] if ids else "")
        if not served:
            raise BackendError(
                f"{self.server} lists no models: set [models.{self.profile.name}] model",
                kind="model",
            )
        n_ctx = self.profile.context_window or await self._context_window(served, models)
        return served, n_ctx

    async def _model_ids(self) -> list[str]:
        return list(await self._models())

    async def _models(self) -> dict[str, dict[str, Any]]:
        """The server's model list (``/models``): each model's entry by its id."""
        try:
            resp = await self._http().get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if resp.status_code == 404:
            raise BackendError(
                f"no OpenAI-compatible API at {self.base_url}: check "
                f"[models.{self.profile.name}] base_url (llama-server, vLLM and LM Studio "
                "serve under …/v1; Ollama under http://HOST:11434/v1)",
                kind="request",
                status=404,
            )
        if resp.status_code >= 400:
            raise self._status_error(resp.status_code, resp.text[:MAX_ERROR_BODY])
        try:
            data = resp.json().get("data", [])
            return {str(m["id"]): m for m in data if isinstance(m, dict) and "id" in m}
        except (ValueError, AttributeError, TypeError):
            raise BackendError(
                f"{self.server} answered /models with something that is not a model list",
                kind="malformed",
            ) from None

    async def _context_window(self, model: str, models: dict[str, dict[str, Any]]) -> int | None:
        """Asked where the server says: llama-server's /props, Ollama's /api/show, the
        model list's own fields (``models``, already fetched: vLLM's max_model_len).
        None when it does not say."""
        client = self._http()
        try:
            resp = await client.get(f"{self.root}/props", timeout=PROBE_TIMEOUT_S)
            if resp.status_code == 200:
                data = resp.json()
                settings = data.get("default_generation_settings") or {}
                n = settings.get("n_ctx") or data.get("n_ctx")
                if isinstance(n, int) and n > 0:
                    return n
            resp = await client.post(
                f"{self.root}/api/show", json={"model": model}, timeout=PROBE_TIMEOUT_S
            )
            if resp.status_code == 200:
                return _ollama_context(resp.json())
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            pass
        entry = models.get(model, {})
        n = entry.get("max_model_len") or entry.get("context_length")
        return n if isinstance(n, int) and n > 0 else None

    async def _pump(
        self,
        body: dict[str, Any],
        put: Callable[[tuple[str, Any]], None],
        finished: threading.Event,
    ) -> None:
        """Send the request and put its pieces, then ("end", _StreamEnd) or ("error", exc)."""
        try:
            async with self._http().stream(
                "POST", f"{self.base_url}/chat/completions", json=body
            ) as resp:
                if resp.status_code >= 400:
                    text = (await resp.aread())[:MAX_ERROR_BODY].decode("utf-8", "replace")
                    if resp.status_code == 404:
                        put(("error", await self._not_found(text)))
                    else:
                        put(("error", self._status_error(resp.status_code, text)))
                    return
                if "application/json" in resp.headers.get("content-type", ""):
                    await self._whole(resp, put)  # a server that does not stream
                    return
                put(("end", await self._read_events(resp, put)))
        except asyncio.CancelledError:
            raise
        except BackendError as exc:
            put(("error", exc))
        except httpx.HTTPError as exc:
            put(("error", self._transport_error(exc)))
        except Exception as exc:  # never leave the reader waiting
            put(("error", BackendError(f"{self.server}: {type(exc).__name__}", kind="malformed")))
        finally:
            finished.set()

    async def _read_events(
        self, resp: httpx.Response, put: Callable[[tuple[str, Any]], None]
    ) -> _StreamEnd:
        end = _StreamEnd()
        done = False
        async for line in resp.aiter_lines():
            if len(line) > MAX_LINE:
                raise self._malformed("a line longer than 1 MiB")
            if not line or line.startswith(":") or line.startswith(("event:", "id:", "retry:")):
                continue
            if not line.startswith("data:"):
                raise self._malformed(f"{line[:40]!r} where a 'data:' line belongs")
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                event = json.loads(data)
            except ValueError:
                raise self._malformed(f"{data[:40]!r}, not JSON") from None
            if not isinstance(event, dict):
                raise self._malformed("an event that is not a JSON object")
            if "error" in event:
                raise BackendError(
                    f"{self.server} stopped the reply: {_error_text(event['error'])}",
                    kind="server",
                )
            _read_event(event, end, put)
        if not done and end.finish_reason is None:
            raise BackendError(
                f"{self.server} ended the stream before the reply was complete", kind="closed"
            )
        return end

    async def _whole(self, resp: httpx.Response, put: Callable[[tuple[str, Any]], None]) -> None:
        try:
            data = json.loads(await resp.aread())
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise self._malformed("a reply without choices") from None
        text = message.get("content") or ""
        if text:
            put(("piece", str(text)))
        for i, call in enumerate(message.get("tool_calls") or []):
            put(("tool", {**call, "index": i}))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        put(("end", _StreamEnd(choice.get("finish_reason"), usage or {}, {}, data.get("model"))))

    # -- errors --------------------------------------------------------------------------

    def _malformed(self, what: str) -> BackendError:
        return BackendError(f"{self.server} sent a malformed stream: {what}", kind="malformed")

    def _transport_error(self, exc: httpx.HTTPError) -> BackendError:
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(
                f"{self.server} timed out (nothing for {self.profile.timeout_s:g} s; "
                f"[models.{self.profile.name}] timeout_s)",
                kind="timeout",
            )
        if isinstance(exc, httpx.ConnectError):
            what = "refused the connection" if _refused(exc) else "is unreachable"
            return BackendError(f"{self.server} {what} (is it running?)", kind="unreachable")
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return BackendError(f"{self.server} closed the connection mid-reply", kind="closed")
        return BackendError(f"{self.server}: {type(exc).__name__}: {exc}", kind="unreachable")

    def _status_error(self, status: int, body: str) -> BackendError:
        detail = _error_text(_json_or(body)) if body else ""
        detail = f": {detail}" if detail else ""
        if status in (401, 403):
            has_key = bool(self.profile.api_key_env or self.profile.api_key_file)
            fix = (
                f"check the key in {key_setting(self.profile)}"
                if has_key
                else f"it needs an API key: set {key_setting(self.profile)}"
            )
            return BackendError(
                f"{self.server} refused the request ({status}){detail}; {fix}",
                kind="auth",
                status=status,
            )
        if status >= 500 or status == 429:
            return BackendError(
                f"{self.server} failed ({status}){detail}", kind="server", status=status
            )
        return BackendError(
            f"{self.server} rejected the request ({status}){detail}", kind="request", status=status
        )

    async def _not_found(self, body: str) -> BackendError:
        try:
            ids = await self._model_ids()
        except BackendError as exc:
            return exc
        model = self._served or self.profile.model
        if model in ids:  # the model is there: it is the path that is not
            return BackendError(
                f"{self.server} has no chat completions at {self.base_url}/chat/completions: "
                f"check [models.{self.profile.name}] base_url",
                kind="request",
                status=404,
            )
        return self._unknown_model(model, ids)

    def _unknown_model(self, model: str | None, ids: Sequence[str]) -> BackendError:
        has = ", ".join(ids[:20]) + (" …" if len(ids) > 20 else "") if ids else "none"
        return BackendError(
            f"model {model!r} is not on {self.server}; it has: {has} "
            f"(set [models.{self.profile.name}] model)",
            kind="model",
            status=404,
        )


# -- helpers -----------------------------------------------------------------------------


def _read_event(
    event: dict[str, Any], end: _StreamEnd, put: Callable[[tuple[str, Any]], None]
) -> None:
    if isinstance(event.get("usage"), dict):
        end.usage = event["usage"]
    if isinstance(event.get("timings"), dict):  # llama-server's own figures
        end.timings = event["timings"]
    if isinstance(event.get("model"), str):
        end.model = event["model"]
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices:
        return
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BackendError("a model server sent a choice that is not an object", kind="malformed")
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise BackendError("a model server sent a delta that is not an object", kind="malformed")
    content = delta.get("content")
    if isinstance(content, str) and content:
        put(("piece", content))
    for call in delta.get("tool_calls") or []:
        if isinstance(call, dict):
            put(("tool", call))
    if choice.get("finish_reason"):
        end.finish_reason = str(choice["finish_reason"])


def _merge_tool_call(calls: dict[int, ToolCall], delta: dict[str, Any]) -> None:
    index = delta.get("index", len(calls))
    index = index if isinstance(index, int) else len(calls)
    call = calls.setdefault(index, ToolCall())
    call.id = str(delta.get("id") or call.id)
    fn = delta.get("function") or {}
    if isinstance(fn, dict):
        call.name += str(fn.get("name") or "")
        args = fn.get("arguments")
        call.arguments += args if isinstance(args, str) else (json.dumps(args) if args else "")


def _metrics(
    end: _StreamEnd,
    t0: float,
    t_first: float | None,
    t_last: float,
    pieces: int,
    fitted: FittedPrompt,
    waited_ms: float,
) -> ReplyMetrics:
    t_end = time.perf_counter()
    completion = end.usage.get("completion_tokens")
    n = completion if isinstance(completion, int) and completion > 0 else pieces
    decode_s = t_last - (t_first or t_last)
    ttft = ((t_first or t_end) - t0) * 1000
    stages: dict[str, float] = {}
    if waited_ms >= 1:
        stages["model_wait_ms"] = waited_ms
    prompt_ms = end.timings.get("prompt_ms")
    if isinstance(prompt_ms, int | float) and t_first is not None:
        # What the server spent reading the prompt; the rest of the TTFT is the network
        # and the server's queue.
        stages["server_prompt_ms"] = float(prompt_ms)
        stages["network_ms"] = max(0.0, ttft - float(prompt_ms))
    prompt = end.usage.get("prompt_tokens")
    return ReplyMetrics(
        ttft_ms=ttft,
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        completion_tokens=n,
        tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
        total_ms=(t_end - t0) * 1000,
        stages=stages,
    )


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was a refusal (nothing listens) somewhere in its chain."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _ollama_context(show: Any) -> int | None:
    """Ollama's /api/show: the ``num_ctx`` it runs with, else the model's trained length."""
    if not isinstance(show, dict):
        return None
    for line in str(show.get("parameters") or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return int(value.strip())
    info = show.get("model_info")
    if isinstance(info, dict):
        for key, value in info.items():
            if key.endswith(".context_length") and isinstance(value, int) and value > 0:
                return value
    return None


def _json_or(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


def _error_text(err: Any) -> str:
    """The message inside an OpenAI-style error body, short."""
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("type") or "")[:300]
        return str(inner)[:300]
    return str(err).strip()[:300]


def _cut(text: str, max_tokens: int) -> str:
    """The head and tail of ``text`` within about ``max_tokens`` (approx_tokens' measure)."""
    budget = max(max_tokens, 8) * 3
    raw = text.encode("utf-8")
    if len(raw) <= budget:
        return text
    half = budget // 2
    head = raw[:half].decode("utf-8", "ignore")
    tail = raw[-half:].decode("utf-8", "ignore")
    return head + TRUNCATED_MARK + tail


__all__ = ["OpenAIEngine", "ToolCall", "normalise_base_url", "server_root"]

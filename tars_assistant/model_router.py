"""The one place every front-end gets its model from: profiles, switching, fallback.

``ModelRouter`` is an engine itself (``EngineBase``): the session, memory, voice and
the API call it as they would call llama.cpp, and it passes each call to the engine
of the active profile — llama.cpp in a child process (the TUI, ``tars serve``) or in
this process (plain mode, ``tars ask``), or an OpenAI-compatible server
(``OpenAIEngine``). ``select(NAME)`` switches at run time, keeping the previous
model if the new one fails; ``fallback_engine()`` is ``[llm] fallback``, built and
loaded on first need, which the session uses when the active one fails transiently.

Privacy: nothing leaves this machine unless a remote profile is active. The first
use of each remote profile in a session has a notice (``privacy_notice``), and a
profile with ``send_memory = false`` is kept from recalled memories (``sends_memory``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path

from tars_assistant import profiles
from tars_assistant.http_engine import OpenAIEngine
from tars_assistant.llm import (
    ChatMessage,
    EngineBase,
    FittedPrompt,
    LLMEngine,
    ModelError,
    Reply,
    Sampling,
)
from tars_assistant.llm_process import ProcessEngine
from tars_assistant.profiles import Where
from tars_core.config import Config, ModelProfile

BackendEngine = LLMEngine | ProcessEngine | OpenAIEngine


@dataclass(frozen=True)
class Loaded:
    """What a load or a switch produced, for the "model loaded" line."""

    name: str  # the model's name as its backend says it
    profile: str
    where: Where
    path: Path | None  # a GGUF file, for llama.cpp
    seconds: float


def build_engine(
    profile: ModelProfile, *, process: bool = True, batch_interval_s: float = 0.05
) -> BackendEngine:
    """A new, unloaded engine for ``profile``."""
    if profile.backend == "openai":
        return OpenAIEngine(profile)
    if process:
        return ProcessEngine(profile.llm, batch_interval_s=batch_interval_s)
    return LLMEngine(profile.llm)


class ModelRouter(EngineBase):
    def __init__(
        self,
        config: Config,
        *,
        engine: BackendEngine | None = None,
        process: bool = True,
        batch_interval_s: float = 0.05,
        profile: str | None = None,
    ) -> None:
        self.config = config
        self._process = process
        if process:
            # A llama.cpp child may be spawned later, from inside a running Textual app:
            # multiprocessing's helper must start now (see ProcessEngine.__init__).
            resource_tracker.ensure_running()
        self._batch_interval_s = batch_interval_s
        if engine is not None:  # a caller's own engine (tests, benchmarks): `local`'s
            self.profile = profiles.default_profile(config)
            self.current: BackendEngine = engine
            self._owned: set[int] = set()
        else:
            self.profile = profiles.resolve(config, profile)
            self.current = self._build(self.profile)
            self._owned = {id(self.current)}
        self.cfg = self.profile.llm
        self._fallback: tuple[ModelProfile, BackendEngine] | None = None
        self._fallback_lock = threading.Lock()
        self._switch_lock = threading.Lock()
        self._announced: set[str] = set()
        self._on_death: Callable[[str], None] | None = None

    def _build(self, profile: ModelProfile) -> BackendEngine:
        return build_engine(profile, process=self._process, batch_interval_s=self._batch_interval_s)

    # -- what the active profile is -------------------------------------------------------

    @property
    def where(self) -> Where:
        return profiles.where(self.profile)

    @property
    def sends_memory(self) -> bool:
        return self.profile.send_memory

    @property
    def label(self) -> str:
        """For the header: the model, and where it runs when that is not here."""
        mark = "" if not self.where.remote else f" ⇄ {self.where.label}"
        return f"{self.model_name}{mark}"

    def privacy_notice(self) -> str | None:
        """Once per remote profile and session: what leaves this machine, and to where."""
        if not self.where.remote or self.profile.name in self._announced:
            return None
        self._announced.add(self.profile.name)
        memory = (
            "and the memories recalled for them"
            if self.sends_memory
            else "but not your memories (send_memory = false)"
        )
        return (
            f"Model {self.profile.name!r} runs on {self.where.label}, not on this machine: "
            f"your messages {memory} are sent there."
        )

    # -- the engine surface, passed on ----------------------------------------------------

    @property
    def _ready(self) -> threading.Event:  # type: ignore[override]
        return self.current._ready

    @property
    def _load_error(self) -> ModelError | None:  # type: ignore[override]
        return self.current.load_error

    def _loaded_path(self) -> Path | None:
        return self.current.model_path

    @property
    def model_path(self) -> Path | None:
        return self.current.model_path

    @property
    def model_name(self) -> str:
        return self.current.model_name

    @property
    def is_ready(self) -> bool:
        return self.current.is_ready

    @property
    def load_error(self) -> ModelError | None:
        return self.current.load_error

    @property
    def on_death(self) -> Callable[[str], None] | None:
        return self._on_death

    @on_death.setter
    def on_death(self, callback: Callable[[str], None] | None) -> None:
        self._on_death = callback
        self.current.on_death = callback

    @property
    def child_pid(self) -> int | None:
        return self.current.child_pid if isinstance(self.current, ProcessEngine) else None

    @property
    def eos_token_id(self) -> int:
        if isinstance(self.current, OpenAIEngine):
            raise ModelError("a model server's token ids are its own")
        return self.current.eos_token_id

    def wait_ready(self, timeout: float | None = None) -> None:
        self.current.wait_ready(timeout)

    def count_tokens(self, text: str) -> int:
        return self.current.count_tokens(text)

    def fit(self, system: str, history: Sequence[ChatMessage]) -> FittedPrompt:
        return self.current.fit(system, history)

    def revive(self) -> Path | None:
        engine = self.current
        return engine.revive() if isinstance(engine, ProcessEngine) else None

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
        return self.current.stream(
            system,
            history,
            should_stop=should_stop,
            reply=reply,
            logit_bias=logit_bias,
            sampling=sampling,
        )

    # -- loading and switching -------------------------------------------------------------

    def load(self, path: Path | None = None) -> Loaded:
        """Load the active profile's model (or, with ``path``, that GGUF file instead).
        Blocks. On failure the previous model stays in use and ModelError is raised."""
        if path is not None and not isinstance(self.current, LLMEngine | ProcessEngine):
            return self.select_file(path)
        started = time.perf_counter()
        return self.describe(self.current.load(path), started)

    def describe(self, path: Path | None, started: float) -> Loaded:
        """The active model, loaded from ``path`` (a GGUF file, or None for a server)
        since ``started`` (perf_counter)."""
        return Loaded(
            name=self.current.model_name,
            profile=self.profile.name,
            where=self.where,
            path=path,
            seconds=time.perf_counter() - started,
        )

    def select(self, name: str) -> Loaded:
        """Make profile ``name`` the active one and load it. Blocks; the previous model
        keeps answering until the new one is loaded, and stays if it fails."""
        return self._switch(profiles.resolve(self.config, name))

    def select_file(self, path: Path) -> Loaded:
        """A GGUF file through llama.cpp here, under the ``local`` profile's settings."""
        local = profiles.with_llm(profiles.default_profile(self.config), model_path=str(path))
        return self._switch(local)

    def _switch(self, profile: ModelProfile) -> Loaded:
        with self._switch_lock:
            started = time.perf_counter()
            same_kind = profile.backend == "llama.cpp" and isinstance(
                self.current, LLMEngine | ProcessEngine
            )
            if same_kind and profile.llm.n_ctx == self.current.cfg.n_ctx:
                # The same child process takes another GGUF (a failed load keeps the old).
                engine = self.current
                before, engine.cfg = engine.cfg, profile.llm
                try:
                    path = engine.load(
                        Path(profile.llm.model_path).expanduser()
                        if profile.llm.model_path
                        else None
                    )
                except ModelError:
                    engine.cfg = before
                    raise
                self.profile, self.cfg = profile, profile.llm
                return self.describe(path, started)
            new = self._build(profile)
            new.on_death = self._on_death
            try:
                path = new.load()
            except ModelError:
                new.close()
                raise
            old, self.current = self.current, new
            self.profile, self.cfg = profile, profile.llm
            if id(old) in self._owned:
                self._owned.discard(id(old))
                old.on_death = None
                old.close()
            self._owned.add(id(new))
            return self.describe(path, started)

    # -- the fallback ------------------------------------------------------------------------

    @property
    def fallback_name(self) -> str | None:
        name = self.config.llm.fallback
        return name if name and name != self.profile.name else None

    def fallback_engine(self) -> EngineBase | None:
        """``[llm] fallback``'s engine, loaded (blocks the first time); None when there is
        none, or it is the active profile. ModelError if it cannot load either."""
        name = self.fallback_name
        if name is None:
            return None
        with self._fallback_lock:
            if self._fallback is None or self._fallback[0].name != name:
                profile = profiles.resolve(self.config, name)
                self._fallback = (profile, self._build(profile))
            engine = self._fallback[1]
        if not engine.is_ready:
            engine.load()
        return engine

    def close(self) -> None:
        with self._fallback_lock:
            fallback, self._fallback = self._fallback, None
        if fallback is not None:
            fallback[1].close()
        if id(self.current) in self._owned:
            self.current.close()


__all__ = ["BackendEngine", "Loaded", "ModelRouter", "build_engine"]

"""The Textual app: wiring of engine, store, session, telemetry and screens."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from memory.context import approx_tokens
from memory.conversation_store import ConversationStore
from memory.service import Memory
from node_daemon import sysinfo
from node_daemon.local import NodeStartError
from node_daemon.sysinfo import SystemReading
from tars_assistant.builds import pc1_builds
from tars_assistant.llm import ModelError
from tars_assistant.memory_link import open_memory
from tars_assistant.model_router import BackendEngine, ModelRouter
from tars_assistant.node_link import NodeLink
from tars_assistant.session import ChatSession
from tars_assistant.telemetry import SnapshotFn, SystemSampler
from tars_assistant.voice.capture import FILE_DEVICE_PREFIX
from tars_assistant.voice.commands import voice_problems
from tars_assistant.voice.events import ErrorEvent, VoiceEvent
from tars_assistant.voice.ptt import PushToTalk
from tars_core.config import Config
from tars_tui.messages import (
    KeyReleased,
    KeyReleasesReported,
    ModelDied,
    ModelLoaded,
    ModelLoadFailed,
    NodeStarted,
    NodeStartFailed,
    SystemSampled,
    VoiceChecked,
    VoiceEventPosted,
)
from tars_tui.palette import SlashCommands
from tars_tui.screens.chat import ChatScreen
from tars_tui.voice.driver import driver_class, push_to_talk_keys

NODE_POLL_S = 2.0
# A model process that dies this often is not reloaded again by itself (like systemd's
# StartLimitBurst): RELOAD_BURST deaths within RELOAD_WINDOW_S.
RELOAD_BURST, RELOAD_WINDOW_S = 3, 60.0


class TarsApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "TARS"
    COMMANDS = App.COMMANDS | {SlashCommands}
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        config: Config,
        *,
        engine: BackendEngine | None = None,
        store: ConversationStore | None = None,
        snapshot: SnapshotFn | None = None,
        node: NodeLink | None = None,
        config_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        # Hold-to-talk where the terminal reports key releases (tars_tui/voice/driver.py).
        self.driver_class = driver_class(push_to_talk_keys(config.voice.ptt_key), self.driver_class)
        self.hold_to_talk = False
        # The model generates in a child process: Textual's rendering and llama.cpp's
        # per-token Python would otherwise share one GIL (measured on 2 cores: 0.82-0.89
        # of the engine's speed through the UI in-process, 0.92-0.98 from a child;
        # bench/ui_stream.py). Or a model server: the router picks ([llm] model, /model).
        self.engine = ModelRouter(config, engine=engine, process=True)
        self.store = store or ConversationStore(config.data_dir / "tars.db")
        self.session = ChatSession(config, self.engine, self.store)
        self.sampler = SystemSampler(
            self._sampled,
            interval_s=config.ui.telemetry_interval_s,
            snapshot=snapshot,
        )
        self.node = node or NodeLink(config, config_path=config_path)
        self.memory: Memory | None = open_memory(
            config,
            self.store,
            self.node,
            count_tokens=self._count_tokens,
            on_pending=self._outbox_changed,
        )
        self.voice: PushToTalk | None = None
        self.voice_error: str | None = (
            None if config.voice.enabled else "voice is off in the config ([voice] enabled)"
        )
        self.chat: ChatScreen | None = None
        # After the model's process dies: a reload runs / failed (then /model is needed).
        self._reloading = False
        self._reload_failed = False
        self._deaths: deque[float] = deque(maxlen=RELOAD_BURST)

    def _count_tokens(self, text: str) -> int:
        # The engine's tokenizer blocks until the model is loaded; estimate until then.
        return self.engine.count_tokens(text) if self.engine.is_ready else approx_tokens(text)

    def _outbox_changed(self, pending: int) -> None:
        # Called from whichever thread wrote to or drained the outbox.
        if self.chat is not None:
            self.call_later(self.chat.set_status)

    def _sampled(self, reading: SystemReading) -> None:
        self.post_message(SystemSampled(reading))

    def on_mount(self) -> None:
        self.session.reopen_last()
        self.chat = ChatScreen(self.session)
        self.push_screen(self.chat)
        self.engine.on_death = self._model_died
        wanted = self.session.wanted_model()  # the reopened project's own model
        if wanted is not None:
            self.load_model(wanted)
        elif not self.engine.is_ready:
            self.load_model()
        self.sampler.start()
        self.read_builds()
        if self.config.voice.enabled:
            self.check_voice()
        if self.node.enabled:
            self.start_node()
            self.set_interval(NODE_POLL_S, self.poll_node, name="node-poll")
        if self.memory is not None:
            self.run_worker(
                self.memory.semantic.run_delivery(),
                name="memory-delivery",
                group="memory-delivery",
                exit_on_error=False,
            )

    def on_unmount(self) -> None:
        self.engine.on_death = None
        self.session.model_gate.close()  # a summary waiting for the model gives up
        if self.voice is not None:
            self.voice.close()
        self.sampler.stop()
        self.node.stop()
        if self.memory is not None:
            self.memory.close()
        self.store.close()
        self.engine.close()  # a child process ends with it (a caller's own engine stays)

    @work(thread=True, exclusive=True, group="builds", exit_on_error=False)
    def read_builds(self) -> None:
        """Which llama.cpp and Whisper builds run here, for the PC1 panel (loading their
        libraries takes a moment, so off the UI thread)."""
        for part, description in pc1_builds(self.config.llm, self.config.voice).items():
            sysinfo.set_build(part, description)

    # -- voice ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="voice", exit_on_error=False)
    def check_voice(self) -> None:
        """Look for the microphone and Whisper off the UI thread (PortAudio can be slow)."""
        cfg = self.config.voice
        from_file = cfg.input_device.startswith(FILE_DEVICE_PREFIX)
        self.post_message(VoiceChecked(voice_problems(cfg, check_microphone=not from_file)))

    def on_voice_checked(self, message: VoiceChecked) -> None:
        if message.problems:
            self.voice_error = "; ".join(message.problems)
            if self.chat is not None:
                self.chat.say(f"Voice is off: {self.voice_error}. Everything else works.")
            return
        self.voice = PushToTalk(self.config.voice, self._voice_event)
        self.voice.preload()  # Whisper loads in its own thread; the first press is quick

    def _voice_event(self, event: VoiceEvent) -> None:
        self.post_message(VoiceEventPosted(event))

    def push_to_talk_down(self) -> None:
        """From the driver's input thread (tars_tui/voice/driver.py EarlyKeys): silence TARS now."""
        chat = self.chat
        if chat is not None:
            chat.speech.stop()

    def on_key_releases_reported(self, message: KeyReleasesReported) -> None:
        self.hold_to_talk = message.supported

    def on_key_released(self, message: KeyReleased) -> None:
        if self.chat is not None:
            self.chat.talk.released(message.key)

    def on_voice_event_posted(self, message: VoiceEventPosted) -> None:
        if isinstance(message.event, ErrorEvent) and message.event.unavailable:
            self.voice = None
            self.voice_error = message.event.message
        if self.chat is not None:
            self.chat.on_voice(message.event)

    # -- the node (PC2, or the embedded one) -------------------------------------

    @work(thread=True, exclusive=True, group="node", exit_on_error=False)
    def start_node(self, restart: bool = False) -> None:
        try:
            endpoint = self.node.restart_local() if restart else self.node.start()
        except (NodeStartError, OSError, ValueError) as exc:
            self.post_message(NodeStartFailed(str(exc)))
            return
        self.post_message(NodeStarted(endpoint, restarted=restart))

    def on_node_started(self, message: NodeStarted) -> None:
        if self.memory is not None:
            self.memory.semantic.kick(force=True)  # deliver what waited for the node
        if self.chat is not None:
            where = (
                "restarted"
                if message.restarted
                else ("started locally" if self.node.embedded else "connected")
            )
            if self.node.shared_by is not None:
                where = f"of another tars (pid {self.node.shared_by}) in use"
            self.chat.say(f"Node {where} at {message.endpoint}.")
            self.chat.show_node(self.node.status())

    def on_node_start_failed(self, message: NodeStartFailed) -> None:
        if self.chat is not None:
            self.chat.say(
                f"⚠ {message.error}. Chat works; long-term memory waits for the node "
                "(see `tars doctor` and the node log).",
                "error",
            )
            self.chat.show_node(self.node.status())

    async def poll_node(self) -> None:
        was = self.node.state
        status = await self.node.poll()
        if status.rtt_ms is not None:
            self.session.latency.record("node_rtt_ms", status.rtt_ms)
        if self.chat is not None:
            self.chat.show_node(status)
            if status.state == "unreachable" and was in ("local", "remote"):
                self.chat.say(
                    f"⚠ The node stopped answering ({status.error}). Chat goes on "
                    "without long-term memory.",
                    "error",
                )
        if self.node.should_restart():
            self.start_node(restart=True)

    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def load_model(self, target: Path | str | None = None) -> None:
        """Load the active profile's model, a GGUF file (a Path) or profile (a name)."""
        first = not self.engine.is_ready
        try:
            if isinstance(target, str):
                loaded = self.engine.select(target)
            else:
                loaded = self.engine.load(target)
        except ModelError as exc:
            self.post_message(ModelLoadFailed(str(exc), first_load=first))
            return
        self.post_message(ModelLoaded(loaded))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self._reloading = self._reload_failed = False
        loaded = message.loaded
        if self.chat is not None:
            self.chat.set_status()
            done = "reloaded" if message.reloaded else "loaded"
            here = f" on {loaded.where.label}" if loaded.where.remote else ""
            self.chat.say(f"Model {loaded.name}{here} {done} in {loaded.seconds:.2f} s.")
            notice = self.engine.privacy_notice()
            if notice is not None:
                self.chat.say(f"⚠ {notice}", "error")

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        reload, self._reloading = self._reloading, False
        self._reload_failed = reload
        if self.chat is not None:
            self.chat.set_status()
            if reload:
                self.chat.say(
                    f"⚠ The model did not reload: {message.error}. /model loads one.", "error"
                )
                return
            hint = "" if message.first_load else " The previous model is still in use."
            self.chat.say(f"⚠ {message.error}.{hint}", "error")

    # -- the model's process dying under us ----------------------------------------

    def _model_died(self, error: str) -> None:
        self.post_message(ModelDied(error))  # from the engine's watcher thread

    def on_model_died(self, message: ModelDied) -> None:
        """Say so and load the model again, once: a model that fails to load (or a
        process that dies while loading) waits for the user's /model."""
        if self.chat is not None:
            self.chat.set_status()
        if self._reloading or self._reload_failed:
            return
        self._deaths.append(time.monotonic())
        error = f"{message.error[:1].upper()}{message.error[1:]}"
        burst = len(self._deaths) == RELOAD_BURST
        if burst and self._deaths[-1] - self._deaths[0] < RELOAD_WINDOW_S:
            self._reload_failed = True
            if self.chat is not None:
                self.chat.say(
                    f"⚠ {error}, {RELOAD_BURST} times in a row; it is not reloaded again "
                    "by itself. /model loads it (see `tars doctor`).",
                    "error",
                )
            return
        self._reloading = True
        if self.chat is not None:
            self.chat.say(f"⚠ {error}; reloading {self.engine.model_name}…", "error")
        self.reload_model()

    @work(thread=True, exclusive=True, group="model-reload", exit_on_error=False)
    def reload_model(self) -> None:
        started = time.perf_counter()
        try:
            # A prompt sent meanwhile may have revived it already: then None.
            revived = self.engine.revive()
        except ModelError as exc:
            self.post_message(ModelLoadFailed(str(exc), first_load=True))
            return
        path = revived or self.engine.model_path
        if path is None:
            error = self.engine.load_error or ModelError("no model loaded")
            self.post_message(ModelLoadFailed(str(error), first_load=True))
            return
        self.post_message(ModelLoaded(self.engine.describe(path, started), reloaded=True))

    def on_system_sampled(self, message: SystemSampled) -> None:
        if self.chat is not None:
            self.chat.show_system(message.reading)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place unexpected worker failures are shown, never swallowed."""
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{event.worker.name} failed: {error}", severity="error", timeout=10)
            if self.chat is not None:
                self.chat.say(f"⚠ {event.worker.name} failed: {error!r}", "error")


def make_app(
    config: Config,
    *,
    engine: BackendEngine | None = None,
    store: ConversationStore | None = None,
    snapshot: SnapshotFn | None = None,
    node: NodeLink | None = None,
    config_path: Path | None = None,
) -> TarsApp:
    """The app factory shared by the CLI, the tests and the benchmarks."""
    return TarsApp(
        config, engine=engine, store=store, snapshot=snapshot, node=node, config_path=config_path
    )

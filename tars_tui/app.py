"""The Textual app: wiring of engine, store, session, telemetry and screens."""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from memory.conversation_store import ConversationStore
from node_daemon.sysinfo import SystemReading
from tars_tui.config import Config
from tars_tui.llm import LLMEngine, ModelError
from tars_tui.messages import ModelLoaded, ModelLoadFailed, SystemSampled
from tars_tui.palette import SlashCommands
from tars_tui.screens.chat import ChatScreen
from tars_tui.session import ChatSession
from tars_tui.telemetry import SnapshotFn, SystemSampler
from tars_tui.widgets.panels import SystemPanel


class TarsApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "TARS"
    COMMANDS = App.COMMANDS | {SlashCommands}
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        config: Config,
        *,
        engine: LLMEngine | None = None,
        store: ConversationStore | None = None,
        snapshot: SnapshotFn | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.engine = engine or LLMEngine(config.llm)
        self.store = store or ConversationStore(config.data_dir / "tars.db")
        self.session = ChatSession(config, self.engine, self.store)
        self.sampler = SystemSampler(
            self._sampled,
            interval_s=config.ui.telemetry_interval_s,
            snapshot=snapshot,
        )
        self.chat: ChatScreen | None = None

    def _sampled(self, reading: SystemReading) -> None:
        self.post_message(SystemSampled(reading))

    def on_mount(self) -> None:
        self.session.reopen_last()
        self.chat = ChatScreen(self.session)
        self.push_screen(self.chat)
        if not self.engine.is_ready:
            self.load_model()
        self.sampler.start()

    def on_unmount(self) -> None:
        self.sampler.stop()
        self.store.close()

    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def load_model(self, path: Path | None = None) -> None:
        first = not self.engine.is_ready
        started = time.perf_counter()
        try:
            loaded = self.engine.load(path)
        except ModelError as exc:
            self.post_message(ModelLoadFailed(str(exc), first_load=first))
            return
        self.post_message(ModelLoaded(loaded, time.perf_counter() - started))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        if self.chat is not None:
            self.chat.set_status()
            self.chat.say(f"Model {message.path.name} loaded in {message.seconds:.2f} s.")

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        if self.chat is not None:
            self.chat.set_status()
            hint = "" if message.first_load else " The previous model is still in use."
            self.chat.say(f"⚠ {message.error}.{hint}", "error")

    def on_system_sampled(self, message: SystemSampled) -> None:
        if self.chat is not None and self.chat.is_mounted:
            self.chat.query_one("#system", SystemPanel).show(message.reading)

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
    engine: LLMEngine | None = None,
    store: ConversationStore | None = None,
    snapshot: SnapshotFn | None = None,
) -> TarsApp:
    """The app factory shared by the CLI, the tests and the benchmarks."""
    return TarsApp(config, engine=engine, store=store, snapshot=snapshot)

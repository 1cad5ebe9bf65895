"""The chat screen: transcript, prompt, panels; the TUI's command host."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState, get_current_worker

from memory.conversation_store import Conversation
from memory.service import Memory
from node_daemon.sysinfo import SystemReading
from tars_assistant.backend_errors import BackendError
from tars_assistant.llm import ModelError
from tars_assistant.llm_process import ModelProcessDied
from tars_assistant.model_gate import Claim
from tars_assistant.node_link import NodeStatus
from tars_assistant.session import ChatSession, TurnResult
from tars_assistant.voice.events import (
    ErrorEvent,
    FinalEvent,
    LevelEvent,
    PartialEvent,
    StateEvent,
    VoiceEvent,
)
from tars_tui import commands
from tars_tui.batching import ChunkBatcher
from tars_tui.commands import Style
from tars_tui.host import ChatHost
from tars_tui.memory_views import View
from tars_tui.messages import (
    ReplyChunk,
    ReplyFailed,
    ReplyFinished,
    ReplyInterrupted,
    ReplyRerouted,
    SpeakerOpened,
    SpeechEventPosted,
    SpeechLevelPosted,
)
from tars_tui.panels_control import PanelsControl
from tars_tui.screens.history import HistoryScreen
from tars_tui.screens.memory import push_memory_view
from tars_tui.voice.driver import push_to_talk_keys
from tars_tui.voice.speech_control import SpeechControl
from tars_tui.voice.talk import TalkControl
from tars_tui.voice.widgets import SpeechBar, VoicePrompt
from tars_tui.widgets.panels import PanelSummary, SidePanels
from tars_tui.widgets.prompt import CompletionList, PromptInput
from tars_tui.widgets.transcript import AssistantMessage, Transcript


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; color: $text-muted; }
    """


class ChatScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "cancel", "Stop reply"),
        Binding("f1", "help", "Help"),
        Binding("f2", "toggle_panels", "Panels"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+o", "history", "History"),
        Binding("f3", "copy_code", "Copy code"),
        Binding("f4", "toggle_speech", "Speak"),
        Binding("f6", "hands_free", "Hands-free"),
    ]

    def __init__(self, session: ChatSession) -> None:
        super().__init__()
        self.session = session
        # A priority binding runs in the app's own handling of the key, not behind the
        # screen's queue of reply chunks: barge-in stays quick while a reply renders.
        ptt = ",".join(push_to_talk_keys(session.config.voice.ptt_key))
        self._bindings.bind(ptt, "voice", "Talk", priority=True)
        self.speech = SpeechControl(self)  # spoken replies
        self.talk = TalkControl(self, self.speech)  # push-to-talk keys, hands-free /talk
        self._stop = threading.Event()
        self._reply: AssistantMessage | None = None
        self.generating = False
        # The turn's hold on the model, from send to shown: summaries step aside.
        self._claim: Claim | None = None
        self._user_text = ""
        self._focus_message: int | None = None
        # Samplers, the node poll and the outbox report from outside this screen;
        # they are shown only between mount and unmount.
        self.ready = False
        self._early_notes: list[tuple[str, Style]] = []
        self.node_label = ""
        self.panels = PanelsControl(self, session.latency, node_enabled=False)

    @property
    def tars(self) -> ChatHost:
        return cast("ChatHost", self.app)

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Transcript(id="transcript")
                yield PanelSummary(self.session.latency, id="summary")
                yield StatusLine("", id="status")
                yield CompletionList(id="completions")
                yield SpeechBar(id="speech")
                yield VoicePrompt(id="voice")
                yield PromptInput(id="prompt")
            yield SidePanels(self.session.latency, node_enabled=self.tars.node.enabled, id="side")
        yield Footer()

    async def on_mount(self) -> None:
        self.set_class(not self.session.config.ui.show_panels, "-panels-hidden")
        self.node_label = self.tars.node.status().label
        self.panels.node_enabled = self.tars.node.enabled
        self.panels.show_node(None)
        self.panels.fit_width(self.size.width)
        self.query_one(PromptInput).focus()
        await self.render_conversation()
        self.ready = True
        for text, style in self._early_notes:
            self.say(text, style)
        self._early_notes.clear()
        self.set_status()
        self.speech.prepare()

    def on_unmount(self) -> None:
        self.ready = False
        self.speech.close()

    def show_system(self, reading: SystemReading) -> None:
        if self.ready:
            self.panels.show_system(reading)

    # -- status and header ---------------------------------------------------

    def set_status(self, text: str | None = None) -> None:
        if not self.ready:
            return
        if text is None:
            engine = self.session.engine
            if engine.is_ready:
                text = "ready"
            elif engine.load_error is not None:
                text = f"⚠ no model: {engine.load_error}"
            else:
                text = f"loading {engine.model_name}… (you can type already)"
        memory = self.tars.memory
        pending = memory.semantic.pending_count() if memory is not None else 0
        outbox = f"  ·  {pending} memories waiting for the node" if pending else ""
        with contextlib.suppress(NoMatches):  # at exit, as in show_system
            self.query_one(StatusLine).update(f"{text}  ·  {self.node_label}{outbox}")
        conv = self.session.conversation
        title = conv.title if conv and conv.title else "new conversation"
        self.title = "TARS"
        self.sub_title = f"{self.session.engine.label} · {self.session.project_name} · {title}"

    def show_node(self, status: NodeStatus) -> None:
        self.node_label = status.label
        if not self.ready:
            return
        self.panels.show_node(status)
        if not self.generating:
            self.set_status()

    # -- rendering -----------------------------------------------------------

    async def render_conversation(self) -> None:
        transcript = self.query_one(Transcript)
        await transcript.clear()
        focus: Widget | None = None
        for m in self.session.messages():
            widget: Widget
            if m.role == "user":
                widget = transcript.add_user(m.text)
            elif m.role == "assistant":
                widget = reply = transcript.add_assistant(m.text)
                await reply.finish(
                    m.metrics,
                    cancelled=m.status == "cancelled",
                    error=(m.error or "failed") if m.status == "error" else None,
                    interrupted=m.error if m.interrupted else None,
                )
            else:
                continue
            if m.id == self._focus_message:
                focus = widget
        self._focus_message = None
        if focus is not None:
            focus.add_class("-found")
            self.call_after_refresh(transcript.scroll_to_widget, focus, animate=False, top=True)
        else:
            transcript.scroll_end(animate=False)

    # -- CommandHost ---------------------------------------------------------

    def say(self, text: str, style: Style = "info") -> None:
        if not self.ready:
            self._early_notes.append((text, style))
            return
        self.query_one(Transcript).add_note(text, style)

    def focus_message(self, message_id: int) -> None:
        self._focus_message = message_id

    def clear_view(self) -> None:
        self.run_worker(self.query_one(Transcript).clear(), group="view")

    def reload_view(self) -> None:
        self.run_worker(self.render_conversation(), group="view")
        self.set_status()

    def choose_conversation(self, conversations: list[Conversation]) -> None:
        def opened(conv_id: int | None) -> None:
            if conv_id is not None:
                self.session.open(conv_id)
                self.reload_view()

        self.app.push_screen(HistoryScreen(conversations), opened)

    def switch_model(self, target: Path | str) -> None:
        if self.generating:
            self.say(
                "Wait for the reply to finish (or press Esc) before switching models.", "error"
            )
            return
        self.say(f"Loading {target}…")
        self.tars.load_model(target)

    def in_background(self, job: Callable[[], str]) -> None:
        self._background_note(job)

    @work(thread=True, group="command", exit_on_error=False)
    def _background_note(self, job: Callable[[], str]) -> None:
        text = job()
        self.app.call_from_thread(self.say, text, "markdown")

    def quit(self) -> None:
        self.app.exit()

    # -- MemoryHost (the memory commands) --------------------------------------

    @property
    def memory(self) -> Memory | None:
        return self.tars.memory

    def run_async(self, job: Coroutine[Any, Any, None], name: str) -> None:
        self.run_worker(job, name=name, group="memory", exit_on_error=False)

    def show_view(self, view: View) -> bool:
        return push_memory_view(self, view)

    # -- sending -------------------------------------------------------------

    @on(PromptInput.Submitted)
    def submitted(self, event: PromptInput.Submitted) -> None:
        self.query_one(CompletionList).close()
        event.prompt.completion_open = False
        if commands.dispatch(self, event.text):
            return
        self.send(event.text)

    def send(self, text: str) -> None:
        self.speech.stop()  # a new prompt silences the last reply at once
        if self.generating:
            self.notify(
                "A reply is still streaming: wait, or press Esc to stop it.", severity="warning"
            )
            self.query_one(PromptInput).load_text(text)
            return
        transcript = self.query_one(Transcript)
        notice = self.session.engine.privacy_notice()
        if notice is not None:
            self.say(f"⚠ {notice}", "error")
        transcript.add_user(text)
        self._reply = transcript.add_assistant()
        transcript.scroll_end(animate=False)
        self.generating = True
        self._claim = self.session.model_gate.claim()
        self._user_text = text
        self._stop.clear()
        self.speech.begin_reply()
        self.recall_then_generate(text)

    def _end_turn(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None
        self.generating = False

    @work(exclusive=True, group="recall", exit_on_error=False)
    async def recall_then_generate(self, text: str) -> None:
        """Long-term memory first (in this loop: zmq.asyncio), then the model (a thread)."""
        context, stages = "", {}
        memory = self.tars.memory
        if memory is not None and self.session.engine.sends_memory:
            self.set_status("remembering…  Esc stops")
            conv = self.session.conversation
            recall = await memory.semantic.recall(
                text, self.session.project_id, conversation_id=conv.id if conv else None
            )
            if recall.error:
                self.say(
                    f"⚠ Long-term memory is unavailable ({recall.error}); replying without it.",
                    "error",
                )
            elif recall.used_ids or recall.summary_used:
                self.query_one(Transcript).add_remembered(
                    recall.summary_line(), recall.details_markdown(), before=self._reply
                )
            context, stages = recall.context_text, recall.stages
        if not self.session.engine.is_ready:
            self.set_status("waiting for the model to load…  Esc stops")
        else:
            self.set_status("generating…  Esc stops")
        self.generate(text, context, stages)

    @work(thread=True, exclusive=True, group="llm", exit_on_error=False)
    def generate(
        self, text: str, context: str = "", stages: dict[str, float] | None = None
    ) -> None:
        worker = get_current_worker()

        def emit(chunk: str) -> None:
            self.post_message(ReplyChunk(chunk))

        batcher = ChunkBatcher(self.session.config.ui.repaint_hz, emit)

        def rerouted(note: str) -> None:
            self.post_message(ReplyRerouted(note, batcher.drain()))

        try:
            result = self.session.run_turn(
                text,
                on_piece=self.speech.tee(batcher.add),  # spoken straight from this thread
                should_stop=lambda: self._stop.is_set() or worker.is_cancelled,
                on_notice=rerouted,
                context=context,
                stages=stages,
            )
        except ModelProcessDied as exc:
            self.post_message(ReplyInterrupted(str(exc), batcher.drain()))
            return
        except BackendError as exc:
            if exc.transient:  # cut off mid-reply: kept and marked, as a dead process
                self.post_message(ReplyInterrupted(str(exc), batcher.drain()))
            else:
                self.post_message(ReplyFailed(str(exc), batcher.drain()))
            return
        except ModelError as exc:
            self.post_message(ReplyFailed(str(exc), batcher.drain()))
            return
        self.post_message(ReplyFinished(result, batcher.drain()))

    async def on_reply_chunk(self, message: ReplyChunk) -> None:
        if self._reply is not None:
            await self._reply.append(message.text)

    async def on_reply_finished(self, message: ReplyFinished) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            await reply.append(message.tail)
            await reply.finish(message.result.metrics, cancelled=message.result.cancelled)
        self._remember(message.result)
        # Last: the turn is over only once it is shown and remembered.
        self._end_turn()
        self.refresh_figures()
        self.set_status()
        self.talk.reply_finished(self.speech.end_reply())

    def _remember(self, result: TurnResult) -> None:
        """A complete exchange becomes a memory of the active project (via the outbox)."""
        memory, conv = self.tars.memory, self.session.conversation
        if memory is None or conv is None or result.cancelled or not result.text.strip():
            return
        memory.semantic.remember_exchange(
            self._user_text,
            result.text,
            project_id=self.session.project_id,
            conversation_id=conv.id,
            message_id=result.message_id,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # An unexpected failure of a turn (the app reports it) must not leave the
        # prompt thinking a reply is still streaming.
        if event.worker.group in ("recall", "llm") and event.state is WorkerState.ERROR:
            self.post_message(ReplyFailed(f"internal error: {event.worker.error!r}"))

    async def on_reply_failed(self, message: ReplyFailed) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            if message.tail:
                await reply.append(message.tail)
            await reply.finish(None, cancelled=False, error=message.error)
        self._end_turn()
        self.set_status()
        self.talk.reply_finished(self.speech.end_reply())

    async def on_reply_rerouted(self, message: ReplyRerouted) -> None:
        """The model failed and the fallback answers: close the failed reply (kept,
        marked) and stream the fallback's into a new one."""
        reply = self._reply
        if reply is not None:
            await reply.append(message.tail)
            await reply.finish(None, cancelled=True, interrupted=message.note)
        transcript = self.query_one(Transcript)
        self._reply = transcript.add_assistant()
        transcript.scroll_end(animate=False)

    async def on_reply_interrupted(self, message: ReplyInterrupted) -> None:
        """The model's process died mid-reply: keep the text, marked (the app reloads)."""
        reply, self._reply = self._reply, None
        if reply is not None:
            await reply.append(message.tail)
            await reply.finish(None, cancelled=True, interrupted=message.error)
        self._end_turn()
        self.set_status()
        self.talk.reply_finished(self.speech.end_reply())

    # -- completion ------------------------------------------------------------

    @on(PromptInput.Changed)
    def prompt_changed(self, event: PromptInput.Changed) -> None:
        prompt = cast(PromptInput, event.text_area)
        completions = self.query_one(CompletionList)
        if prompt.browsing_history:  # up/down keep walking the history
            completions.close()
            prompt.completion_open = False
        else:
            prompt.completion_open = completions.show_for(prompt.text)

    @on(PromptInput.CompletionKey)
    def completion_key(self, event: PromptInput.CompletionKey) -> None:
        completions = self.query_one(CompletionList)
        prompt = self.query_one(PromptInput)
        if event.key == "up":
            completions.action_cursor_up()
        elif event.key == "down":
            completions.action_cursor_down()
        elif event.key == "escape":
            completions.close()
            prompt.completion_open = False
        else:  # tab or enter: take the highlighted command
            name = completions.chosen()
            completions.close()
            prompt.completion_open = False
            if name:
                prompt.load_text(f"/{name} ")
                prompt.move_cursor(prompt.document.end)

    # -- actions -------------------------------------------------------------

    def action_cancel(self) -> None:
        silenced = self.speech.stop()  # Esc stops speech at once, whatever else it does
        if self.talk.loop.active:
            self.talk.stop_hands_free()
            return
        if self.query_one(VoicePrompt).is_open:
            voice = self.tars.voice
            if voice is not None:
                voice.cancel()
            self.close_voice()
            self.notify("Voice input discarded.", timeout=2)
            return
        if self.generating:
            self.stop_reply()
        elif silenced:
            self.notify("Speech stopped.", timeout=2)

    def stop_reply(self) -> None:
        if self.generating:
            self._stop.set()
            self.set_status("stopping…")

    # -- voice ---------------------------------------------------------------

    def action_voice(self) -> None:
        """The push-to-talk key: start listening, or stop and transcribe (voice/talk.py)."""
        self.talk.pressed()

    def on_voice(self, event: VoiceEvent) -> None:
        # At exit a session's last events can come after the widgets have gone.
        with contextlib.suppress(NoMatches):
            if not self.talk.on_voice(event):  # hands-free takes its finals
                self._show_voice(event)

    def _show_voice(self, event: VoiceEvent) -> None:
        panel = self.query_one(VoicePrompt)
        if isinstance(event, LevelEvent):
            panel.show_level(event.dbfs)
        elif isinstance(event, StateEvent):
            if panel.is_open:
                panel.show_state(event.state)
        elif isinstance(event, PartialEvent):
            panel.show_partial(event.committed, event.tentative)
        elif isinstance(event, FinalEvent):
            self._final_voice(event)
        elif isinstance(event, ErrorEvent):
            self.close_voice()
            self.say(f"⚠ Voice: {event.message}", "error")

    def _final_voice(self, event: FinalEvent) -> None:
        if not self.query_one(VoicePrompt).is_open:
            return  # discarded with Esc while the final decode ran
        self.close_voice()
        self.record_stt(event)
        if not event.text:
            self.notify("No speech heard.", severity="warning", timeout=3)
            return
        prompt = self.query_one(PromptInput)
        before = prompt.text.rstrip()
        prompt.load_text(f"{before} {event.text}".strip())
        prompt.move_cursor(prompt.document.end)
        if self.session.config.voice.auto_send:
            prompt.action_submit()

    def record_stt(self, event: FinalEvent) -> None:
        if event.timings is not None:
            self.session.latency.record("stt_ms", event.timings.end_to_final_s * 1000)
            if event.timings.partial_interval_s is not None:
                self.session.latency.record(
                    "stt_partial_ms", event.timings.partial_interval_s * 1000
                )
            self.refresh_figures()

    def close_voice(self) -> None:
        self.query_one(VoicePrompt).close()
        prompt = self.query_one(PromptInput)
        prompt.display = True
        prompt.focus()

    # -- speech (tars_tui/voice/speech_control.py) -----------------------------------

    def on_speaker_opened(self, message: SpeakerOpened) -> None:
        self.speech.opened(message)

    def on_speech_event_posted(self, message: SpeechEventPosted) -> None:
        with contextlib.suppress(NoMatches):  # at exit, as in on_voice
            self.speech.on_event(message.event)

    def on_speech_level_posted(self, message: SpeechLevelPosted) -> None:
        with contextlib.suppress(NoMatches):
            self.speech.on_level(message.dbfs)

    def set_speaking(self, on: bool | None) -> None:
        self.speech.set_enabled(on)

    def toggle_hands_free(self) -> None:
        if self.talk.loop.active:
            self.talk.stop_hands_free()
        else:
            self.talk.start_hands_free()

    def action_toggle_speech(self) -> None:
        self.set_speaking(None)

    def action_hands_free(self) -> None:
        self.toggle_hands_free()

    # -- panels: a side column when there is room, else a line and an overlay --

    def on_resize(self, event: events.Resize) -> None:
        self.panels.fit_width(event.size.width)

    @property
    def narrow(self) -> bool:
        return self.panels.narrow

    def refresh_figures(self) -> None:
        self.panels.refresh()

    def action_toggle_panels(self) -> None:
        self.panels.toggle()

    def action_new_chat(self) -> None:
        commands.dispatch(self, "/new")

    def action_history(self) -> None:
        commands.dispatch(self, "/history")

    def action_help(self) -> None:
        commands.dispatch(self, "/help")

    def action_copy_code(self) -> None:
        reply = self.query_one(Transcript).last_reply
        code = reply.last_code if reply else None
        if code is None:
            self.notify("No code block in the last reply.", severity="warning")
            return
        self.app.copy_to_clipboard(code)
        self.notify("Code copied to the clipboard.", timeout=2)

    def run_command(self, line: str) -> None:
        """Entry point for the command palette."""
        commands.dispatch(self, line)

"""The talking side of the chat screen: the push-to-talk key (toggle or hold) and the
hands-free conversation loop (``/talk``), whose logic lives in
:mod:`tars_assistant.voice.hands_free`; this is its host.

Push-to-talk: a press starts listening and, where the terminal reports key
releases (tars_tui/voice/driver.py), letting go after holding it finishes the
utterance; a quick tap (under :data:`TAP_S`) latches, like the toggle every other
terminal gets, so the next press finishes. Either way the end of speech ends the
utterance by itself. Pressed while TARS speaks, it stops the speech first
(barge-in) and listens.
"""

from __future__ import annotations

import time

from tars_assistant.voice.echo import GuardedSource
from tars_assistant.voice.events import FinalEvent, VoiceEvent
from tars_assistant.voice.hands_free import HandsFree, Phase
from tars_tui.host import ChatView
from tars_tui.voice.speech_control import SpeechControl
from tars_tui.voice.widgets import SpeechBar, VoicePrompt
from tars_tui.widgets.prompt import PromptInput

TAP_S = 0.35  # a press released sooner than this latches instead of holding


class TalkControl:
    """Owned by the chat screen; all calls come from the UI thread."""

    def __init__(self, screen: ChatView, speech: SpeechControl) -> None:
        self.screen = screen
        self.speech = speech
        speech.listener = self
        self._pressed_at: float | None = None  # a hold in progress
        barge = screen.session.config.tts.barge_in
        self.loop = HandsFree(self, listen_while_speaking=barge == "voice")
        self.speech_ended_at: float | None = None  # the user's last hands-free utterance

    # -- push-to-talk ---------------------------------------------------------------

    @property
    def hold_supported(self) -> bool:
        """The terminal reports key releases (the app heard it from the driver)."""
        return self.screen.tars.hold_to_talk

    @property
    def hint(self) -> str:
        key = self.screen.session.config.voice.ptt_key
        if self.loop.active:
            return 'say "stop" or Esc ends the conversation'
        if self.hold_supported:
            return f"release {key} to finish (tap: {key} again) · Esc discards"
        return f"{key} again finishes · Esc discards"

    def pressed(self) -> None:
        """The push-to-talk key went down."""
        now = time.monotonic()
        self.speech.stop()  # barge-in: before anything else, so it is quick
        voice = self.screen.tars.voice
        if voice is None:
            why = self.screen.tars.voice_error or "still starting"
            self.screen.say(f"Voice is unavailable: {why}.", "error")
            return
        if self.loop.active:
            if self.loop.phase in (Phase.THINKING, Phase.SPEAKING):
                self.loop.barge_in()
            elif voice.active:
                voice.stop()  # done talking: finish the utterance now
            return
        if voice.active:
            voice.stop()
            return
        if voice.start():
            self._pressed_at = now if self.hold_supported else None
            self.open_voice()

    def released(self, key: str) -> None:
        """A push-to-talk key went up (terminals that report releases only)."""
        started, self._pressed_at = self._pressed_at, None
        voice = self.screen.tars.voice
        if started is None or voice is None or not voice.active:
            return
        if time.monotonic() - started >= TAP_S:
            voice.stop()

    def open_voice(self) -> None:
        panel = self.screen.query_one(VoicePrompt)
        panel.hint = self.hint
        panel.open()
        self.screen.query_one(PromptInput).display = False

    # -- hands-free -------------------------------------------------------------------

    def start_hands_free(self) -> bool:
        tars = self.screen.tars
        if tars.voice is None:
            why = tars.voice_error or "still starting"
            self.screen.say(f"Hands-free needs voice input, which is unavailable: {why}.", "error")
            return False
        if tars.voice.active:
            tars.voice.cancel()
            self.screen.close_voice()
        self.speech.hands_free = True  # /talk answers aloud even with /speak off
        self.speech.prepare()
        if self.loop.listen_while_speaking and not isinstance(
            tars.voice.source_factory, GuardedSource
        ):
            # The microphone stays open while TARS speaks: keep TARS out of it.
            tars.voice.source_factory = GuardedSource(tars.voice.source_factory, self.speech.levels)
        self.loop.start()
        return True

    def stop_hands_free(self) -> None:
        self.loop.cancel()

    def reply_finished(self, speech_pending: bool) -> None:
        self.loop.reply_finished(speech_pending=speech_pending)

    def speech_started(self) -> None:
        """TARS's answer is audible: the end of the user's speech to here is the
        latency a person feels in a spoken conversation."""
        ended, self.speech_ended_at = self.speech_ended_at, None
        if ended is not None and self.loop.active:
            self.screen.session.latency.record("talk_turn_ms", (time.monotonic() - ended) * 1000)
        self.loop.speech_started()

    def speech_finished(self) -> None:
        self.loop.speech_finished()

    def on_voice(self, event: VoiceEvent) -> bool:
        """Voice events reach the loop first; True when it took the event."""
        if not self.loop.active:
            return False
        self.loop.on_voice(event)
        if isinstance(event, FinalEvent):
            if event.text and event.timings is not None:
                self.speech_ended_at = time.monotonic() - event.timings.end_to_final_s
            if self.screen.query_one(VoicePrompt).is_open:
                self.screen.close_voice()
            self.screen.record_stt(event)
            return True
        return False  # the screen shows the state, level, partials and errors as usual

    # HandsFreeHost ---------------------------------------------------------------------

    def listen(self) -> bool:
        voice = self.screen.tars.voice
        if voice is None or not voice.start():
            return False
        self.open_voice()
        return True

    def stop_listening(self) -> None:
        voice = self.screen.tars.voice
        if voice is not None:
            voice.cancel()
        if self.screen.query_one(VoicePrompt).is_open:
            self.screen.close_voice()

    def send(self, text: str) -> None:
        self.screen.send(text)

    def interrupt(self) -> None:
        self.speech.stop()
        self.screen.stop_reply()

    def show(self, phase: Phase) -> None:
        self.screen.query_one(SpeechBar).show_phase(
            phase.value if phase is not Phase.OFF else None, self.hint
        )

    def ended(self, reason: str) -> None:
        self.speech.hands_free = False
        self.screen.query_one(SpeechBar).show_phase(None, "")
        self.screen.say(reason)
        self.screen.refresh_figures()

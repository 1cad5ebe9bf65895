"""Hands-free conversation: listen, send what was said, speak the reply, listen again.

A state machine with no UI and no threads of its own. A front end (the TUI's
``/talk``) implements :class:`HandsFreeHost` and feeds it, on one thread, the
voice events of its push-to-talk controller and the progress of each reply:

    LISTENING --speech--> HEARING --final text--> THINKING (host.send)
    THINKING --speech starts--> SPEAKING --reply and speech done--> LISTENING

It ends on :meth:`HandsFree.cancel` (Esc), on a spoken "stop" (see
:data:`STOP_PHRASES`), or when voice input fails.

While TARS answers, the microphone is either closed (``barge_in = "gate"``: TARS
cannot hear itself) or open behind an echo guard (``"voice"``,
:mod:`tars_assistant.voice.echo`): speech that rises above what the speakers play
stops the reply and becomes the next turn.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from tars_assistant.voice.agreement import normalise
from tars_assistant.voice.events import ErrorEvent, FinalEvent, StateEvent, VoiceEvent, VoiceState

# Said alone (case and punctuation ignored), these end the conversation.
STOP_PHRASES = frozenset(
    {
        "stop",
        "stop it",
        "stop listening",
        "stop talking",
        "stop conversation",
        "stop hands free",
        "that's all",
        "that is all",
        "goodbye",
        "bye",
        "bye bye",
        "exit",
        "quit",
    }
)


class Phase(StrEnum):
    OFF = "off"
    LISTENING = "listening"
    HEARING = "hearing you"
    THINKING = "thinking"
    SPEAKING = "speaking"


class HandsFreeHost(Protocol):
    """What the loop asks of the front end; every call comes from the loop's thread."""

    def listen(self) -> bool:
        """Open the microphone for one utterance; False if a session is still closing
        (the loop tries again on its ``IDLE``)."""
        ...

    def stop_listening(self) -> None: ...

    def send(self, text: str) -> None:
        """Send the words as a prompt; the reply's progress comes back through
        :meth:`HandsFree.reply_finished` and the speech methods."""
        ...

    def interrupt(self) -> None:
        """Stop the reply being generated and spoken (the user talked over it)."""
        ...

    def show(self, phase: Phase) -> None: ...

    def ended(self, reason: str) -> None:
        """The conversation is over; ``reason`` is for the user."""
        ...


def is_stop(text: str) -> bool:
    return normalise(text) in STOP_PHRASES


class HandsFree:
    """The loop; see the module docstring. ``listen_while_speaking`` is
    ``barge_in == "voice"``."""

    def __init__(self, host: HandsFreeHost, *, listen_while_speaking: bool = False) -> None:
        self.host = host
        self.listen_while_speaking = listen_while_speaking
        self.phase = Phase.OFF
        self.turns = 0  # prompts sent
        self._replying = False  # a reply is being generated
        self._speaking = False  # its speech is playing (or queued)
        self._listening = False  # a voice session is open (until its IDLE)
        self._closing = False  # ... and has delivered its final: it is ending
        self._want_listen = False  # open one as soon as the last has closed
        self._pending: str | None = None  # words heard over a reply, sent once it ends

    @property
    def active(self) -> bool:
        return self.phase is not Phase.OFF

    # -- the front end's commands ---------------------------------------------

    def start(self) -> None:
        if self.active:
            return
        self._set(Phase.LISTENING)
        self._listen()

    def cancel(self, reason: str = "Hands-free conversation ended.") -> None:
        """Esc: stop listening and speaking, end the loop."""
        if not self.active:
            return
        self._set(Phase.OFF)
        self._want_listen = False
        self._pending = None
        if self._listening:
            self.host.stop_listening()
        if self._replying or self._speaking:
            self.host.interrupt()
        self.host.ended(reason)

    def barge_in(self) -> None:
        """The push-to-talk key during a reply: stop it and listen now."""
        if self.phase not in (Phase.THINKING, Phase.SPEAKING):
            return
        self.host.interrupt()
        self._speaking = False
        self._set(Phase.LISTENING)
        self._listen()

    # -- what happened ------------------------------------------------------------

    def on_voice(self, event: VoiceEvent) -> None:
        if not self.active:
            return
        if isinstance(event, StateEvent):
            if event.state is VoiceState.HEARING:
                self._heard_speech()
            elif event.state is VoiceState.IDLE:
                self._listening = self._closing = False
                if self._want_listen:
                    self._listen()
        elif isinstance(event, FinalEvent):
            self._closing = True
            self._final(event.text.strip())
        elif isinstance(event, ErrorEvent):
            self.cancel(f"Hands-free conversation ended: {event.message}.")

    def speech_started(self) -> None:
        if not self.active:
            return
        self._speaking = True
        if self.phase is Phase.THINKING:
            self._set(Phase.SPEAKING)
            if self.listen_while_speaking:
                self._listen()

    def speech_finished(self) -> None:
        self._speaking = False
        self._maybe_turn_over()

    def reply_finished(self, *, speech_pending: bool = False) -> None:
        """The reply is complete; ``speech_pending``: some of it is still to be heard
        (its ``speech_finished`` follows), so the microphone stays shut until then."""
        self._replying = False
        if not self.active:
            return
        self._speaking = self._speaking or speech_pending
        if self._pending is not None:
            text, self._pending = self._pending, None
            self._send(text)
            return
        self._maybe_turn_over()

    # -- internals ------------------------------------------------------------------

    def _heard_speech(self) -> None:
        if self.phase in (Phase.THINKING, Phase.SPEAKING):  # talked over the reply
            self.host.interrupt()
            self._speaking = False
        self._set(Phase.HEARING)

    def _final(self, text: str) -> None:
        if not text:  # nothing (or only noise) heard: keep listening
            if self.phase is Phase.HEARING:
                self._set(Phase.LISTENING)
            if self.phase is Phase.LISTENING or (
                self.phase is Phase.SPEAKING and self.listen_while_speaking
            ):
                self._listen()
            return
        if is_stop(text):
            self.cancel("Hands-free conversation ended (you said stop).")
            return
        if self._replying:  # heard over a reply that is still stopping
            self._pending = text
            self._set(Phase.THINKING)
            return
        self._send(text)

    def _send(self, text: str) -> None:
        self.turns += 1
        self._replying = True
        self._want_listen = False
        self._set(Phase.THINKING)
        self.host.send(text)

    def _maybe_turn_over(self) -> None:
        if self.phase in (Phase.THINKING, Phase.SPEAKING) and not (
            self._replying or self._speaking
        ):
            self._set(Phase.LISTENING)
            self._listen()

    def _listen(self) -> None:
        if self._listening:
            # An open session goes on listening; one that is ending is replaced on IDLE.
            self._want_listen = self._closing
            return
        self._want_listen = not self.host.listen()
        if not self._want_listen:
            self._listening, self._closing = True, False

    def _set(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.host.show(phase)

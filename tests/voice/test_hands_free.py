"""The hands-free loop's logic, event by event (the TUI test drives it with real audio)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tars_assistant.voice.events import ErrorEvent, FinalEvent, StateEvent, VoiceState
from tars_assistant.voice.hands_free import HandsFree, Phase, is_stop


@dataclass
class Host:
    """Records what the loop asked for; ``busy`` makes listen() fail like a closing session."""

    calls: list[str] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    busy: bool = False

    def listen(self) -> bool:
        self.calls.append("listen" if not self.busy else "listen-refused")
        return not self.busy

    def stop_listening(self) -> None:
        self.calls.append("stop_listening")

    def send(self, text: str) -> None:
        self.calls.append(f"send {text}")

    def interrupt(self) -> None:
        self.calls.append("interrupt")

    def show(self, phase: Phase) -> None:
        self.phases.append(phase)

    def ended(self, reason: str) -> None:
        self.calls.append(f"ended {reason}")


HEARING = StateEvent(VoiceState.HEARING)


def phase(loop: HandsFree) -> Phase:
    return loop.phase  # a call, so that mypy does not narrow it between steps


IDLE = StateEvent(VoiceState.IDLE)


def utterance(loop: HandsFree, text: str) -> None:
    loop.on_voice(StateEvent(VoiceState.LISTENING))
    loop.on_voice(HEARING)
    loop.on_voice(StateEvent(VoiceState.TRANSCRIBING))
    loop.on_voice(FinalEvent(text, None))
    loop.on_voice(IDLE)


def test_two_turns_gated() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    utterance(loop, "What time is it?")
    assert host.calls == ["listen", "send What time is it?"]
    loop.speech_started()
    loop.reply_finished()
    assert phase(loop) is Phase.SPEAKING and host.calls[-1].startswith("send")  # mic stays shut
    loop.speech_finished()
    assert phase(loop) is Phase.LISTENING and host.calls[-1] == "listen"
    utterance(loop, "And tomorrow?")
    loop.reply_finished()  # nothing to say (speech off): straight back to listening
    assert host.calls[-2:] == ["send And tomorrow?", "listen"]
    assert loop.turns == 2
    assert host.phases == [
        Phase.LISTENING,
        Phase.HEARING,
        Phase.THINKING,
        Phase.SPEAKING,
        Phase.LISTENING,
        Phase.HEARING,
        Phase.THINKING,
        Phase.LISTENING,
    ]


def test_silence_and_noise_keep_listening_once_the_session_closed() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    loop.on_voice(FinalEvent("", None))  # the no-speech timeout, or a dropped hallucination
    assert host.calls == ["listen"]  # the old session is still closing
    loop.on_voice(IDLE)
    assert host.calls == ["listen", "listen"]


def test_refused_listen_is_retried_on_idle() -> None:
    host = Host(busy=True)
    loop = HandsFree(host)
    loop.start()
    host.busy = False
    loop.on_voice(IDLE)
    assert host.calls == ["listen-refused", "listen"]


def test_spoken_stop_ends_the_conversation() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    utterance(loop, "Stop.")
    assert not loop.active and loop.turns == 0
    assert host.calls[-1] == "ended Hands-free conversation ended (you said stop)."
    assert is_stop("OK, goodbye!") is False and is_stop("Goodbye!") and is_stop("stop listening")


def test_escape_while_speaking_interrupts() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    utterance(loop, "Tell me a story")
    loop.speech_started()
    loop.cancel()
    assert host.calls[-2:] == ["interrupt", "ended Hands-free conversation ended."]
    loop.reply_finished()
    loop.speech_finished()
    assert host.calls[-1].startswith("ended")  # nothing after the end


def test_voice_failure_ends_it() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    loop.on_voice(ErrorEvent("no microphone", unavailable=True))
    assert not loop.active and "no microphone" in host.calls[-1]


def test_push_to_talk_barge_in_stops_the_reply_and_listens() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    utterance(loop, "Tell me a story")
    loop.speech_started()
    loop.barge_in()
    assert host.calls[-2:] == ["interrupt", "listen"] and phase(loop) is Phase.LISTENING
    loop.reply_finished()  # the cancelled reply ends: already listening
    loop.speech_finished()
    assert host.calls[-1] == "listen"
    utterance(loop, "A shorter one")
    assert host.calls[-1] == "send A shorter one"


def test_voice_barge_in_listens_while_speaking() -> None:
    host = Host()
    loop = HandsFree(host, listen_while_speaking=True)
    loop.start()
    utterance(loop, "Tell me a story")
    loop.speech_started()
    assert phase(loop) is Phase.SPEAKING and host.calls[-1] == "listen"  # open over the reply
    loop.on_voice(HEARING)  # the user talks over it
    assert host.calls[-1] == "interrupt" and phase(loop) is Phase.HEARING
    loop.on_voice(FinalEvent("Never mind", None))  # before the cancelled reply has ended
    loop.on_voice(IDLE)
    assert host.calls[-1] == "interrupt"
    loop.reply_finished()
    assert host.calls[-1] == "send Never mind" and loop.turns == 2


def test_voice_mode_session_left_open_after_a_quiet_reply() -> None:
    host = Host()
    loop = HandsFree(host, listen_while_speaking=True)
    loop.start()
    utterance(loop, "Hello")
    loop.speech_started()  # opens a session that hears nothing
    loop.reply_finished()
    loop.speech_finished()
    assert phase(loop) is Phase.LISTENING
    assert host.calls.count("listen") == 2  # the open one goes on listening


def test_reply_done_before_its_speech_began_keeps_the_microphone_shut() -> None:
    host = Host()
    loop = HandsFree(host)
    loop.start()
    utterance(loop, "Hi")
    loop.reply_finished(speech_pending=True)  # the first sentence is still synthesising
    assert phase(loop) is Phase.THINKING and host.calls[-1] == "send Hi"
    loop.speech_started()
    loop.speech_finished()
    assert phase(loop) is Phase.LISTENING and host.calls[-1] == "listen"

"""The echo guard on real speech: TARS's own playback coming back into the microphone does
not open the VAD gate; a person talking over it does. (The TUI test runs it live.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tars_assistant.voice import synth
from tars_assistant.voice.capture import FRAME_S, FRAME_SAMPLES, Frame, FrameSource, frame_dbfs
from tars_assistant.voice.echo import EchoGuard, PlaybackLevels
from tars_assistant.voice.vad import VadGate
from tars_core.settings.voice import VoiceConfig

pytestmark = [
    pytest.mark.audio,
    pytest.mark.skipif(
        bool(synth.missing_tools()), reason=f"needs {', '.join(synth.missing_tools())}"
    ),
]
DELAY_FRAMES = 2  # the echo comes back 60 ms late


class Room(FrameSource):
    """A microphone in a room where ``playback`` plays from frame 0: each frame the
    speaker's level callback reports (as the speaker does, every other 30 ms block),
    then the microphone hears room noise, the echo and, from ``user_at``, the user."""

    def __init__(
        self,
        playback: Frame,
        levels: PlaybackLevels,
        *,
        echo_db: float,
        user: Frame | None = None,
        user_at_s: float = 0.0,
    ) -> None:
        self.levels = levels
        n = len(playback) + 2 * 16000
        mic = synth.noise(n / 16000, -62.0, "pink").astype(np.int32)
        delay = DELAY_FRAMES * FRAME_SAMPLES
        mic[delay : delay + len(playback)] += np.round(playback * 10 ** (echo_db / 20)).astype(
            np.int32
        )
        if user is not None:
            at = round(user_at_s * 16000)
            mic[at : at + len(user)] += user[: n - at]
        self.playback = playback
        self.mic = np.clip(mic, -32768, 32767).astype(np.int16)
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def frames(self) -> Iterator[Frame]:
        for i in range(len(self.mic) // FRAME_SAMPLES):
            block = self.playback[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            if len(block) and i % 2 == 0:
                self.levels.played(frame_dbfs(block), 2 * FRAME_S, at=i * FRAME_S)
            self.now = (i + 1) * FRAME_S
            yield self.mic[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]


def speech(text: str, level_db: float) -> Frame:
    return synth.speak(text, voice="en-us", speed=160, level_db=level_db)


def starts(frames: Iterator[Frame]) -> list[float]:
    """Where the VAD gate opens an utterance, in seconds."""
    gate = VadGate(VoiceConfig())
    return [i * FRAME_S for i, frame in enumerate(frames) if gate.push(frame).started]


def guarded(room: Room, levels: PlaybackLevels) -> Callable[[], Iterator[Frame]]:
    return lambda: EchoGuard(room, levels, clock=room.clock).frames()


REPLY = (
    "Paris is the capital of France. It is known for the Eiffel Tower, the Louvre, "
    "and its cafes along the river Seine."
)


def test_loud_echo_opens_the_gate_unguarded_and_not_guarded() -> None:
    playback = speech(REPLY, -6.0)
    for echo_db in (-6.0, -20.0):
        levels = PlaybackLevels()
        room = Room(playback, levels, echo_db=echo_db)
        assert starts(room.frames()), "the echo alone sounds like someone talking"
        levels = PlaybackLevels()
        room = Room(playback, levels, echo_db=echo_db)
        assert starts(guarded(room, levels)()) == [], f"echo at {echo_db} dB got through"
        assert -40.0 <= levels.coupling_db <= 0.0


def test_talking_over_the_reply_gets_through() -> None:
    playback = speech(REPLY, -12.0)
    user = speech("Stop, that is enough.", -3.0)
    levels = PlaybackLevels()
    room = Room(playback, levels, echo_db=-10.0, user=user, user_at_s=3.0)
    found = starts(guarded(room, levels)())
    assert found and 3.0 <= found[0] <= 3.6, found  # the user, within a few frames
    assert levels.coupling_db < -5.0  # learned from the echo before the user spoke


def test_nothing_playing_passes_everything() -> None:
    hello = speech("Hello", -6.0)

    def room() -> Room:
        return Room(np.zeros(0, np.int16), levels, echo_db=0.0, user=hello)

    levels = PlaybackLevels()
    source = EchoGuard(room(), levels, clock=lambda: 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(source.frames(), room().frames(), strict=True))
    assert source.rejected == source.passed == 0

"""The streaming speaker on the real voice: order of events, barge-in, levels, errors."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import pytest

from tars_assistant.speech.events import SpeechFailed, SpeechFinished, SpeechStarted
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.speech.sinks import WavFileSink
from tars_assistant.speech.speaker import Speaker
from tars_core.settings.tts import TTSConfig
from tests.speech.support import EventLog

pytestmark = pytest.mark.slow

LONG_REPLY = (
    "Here is a longer answer, so that there is something to interrupt. "
    "The first thing to know is that the machine has two cores. "
    "The second thing is that speech is made one sentence at a time. "
    "The third thing is that you can talk over me whenever you like. "
    "And the last thing is that I will stop the moment you do."
)


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def make_speaker(piper: PiperEngine, sink: WavFileSink, log: EventLog) -> Speaker:
    return Speaker(TTSConfig(), sink, engine=piper, on_event=log, on_level=log.level)


def test_a_reply_is_spoken_to_the_end_with_events_and_metrics(
    tmp_path: Path, piper: PiperEngine
) -> None:
    log = EventLog()
    sink = WavFileSink(tmp_path / "reply.wav", paced=True)
    speaker = make_speaker(piper, sink, log)
    try:
        reply = "Hello there. This is a short reply, spoken as it streams."
        for word in reply.split():
            speaker.feed(word + " ")
        assert speaker.busy
        speaker.end()
        assert speaker.wait(30)
    finally:
        speaker.close()
    assert log.kinds() == ["SpeechStarted", "SpeechFinished"]
    (done,) = log.of(SpeechFinished)
    assert isinstance(done, SpeechFinished) and not done.stopped and done.reply == 1
    m = done.metrics
    assert m.sentences == 2 and m.audio_s > 2.0 and m.rtf is not None and m.rtf < 1.0
    assert m.first_token_to_sentence_s is not None and m.sentence_to_audio_s is not None
    assert wav_seconds(sink.path) == pytest.approx(m.audio_s + 2 * 0.12, abs=0.05)
    # The meter moved while speaking and dropped to silence at the end.
    assert len(log.levels) > 10 and max(log.levels) > -30 and log.levels[-1] == -100.0
    assert not speaker.busy and not speaker.speaking


def test_stop_during_playback_silences_the_sink_within_100_ms(
    tmp_path: Path, piper: PiperEngine
) -> None:
    log = EventLog()
    sink = WavFileSink(tmp_path / "barge.wav", paced=True)
    speaker = make_speaker(piper, sink, log)
    try:
        speaker.say(LONG_REPLY)
        assert log.started.wait(30)
        time.sleep(0.6)
        assert speaker.speaking
        pressed = time.monotonic()
        speaker.stop()
        assert sink.stopped_at is not None
        latency = sink.stopped_at - pressed
        written = sink.written
        time.sleep(0.4)
        assert sink.written == written, "audio was written after stop()"
        assert latency <= 0.1, f"stop took {latency * 1000:.0f} ms"
        assert wav_seconds(sink.path) < 2.0  # what was heard, not the whole reply
        assert [type(e).__name__ for e, _ in log.events] == ["SpeechStarted", "SpeechFinished"]
        (done,) = log.of(SpeechFinished)
        assert isinstance(done, SpeechFinished) and done.stopped and done.metrics.stopped
        assert not speaker.busy and log.levels[-1] == -100.0

        # The next reply speaks normally, into a fresh file.
        log.finished.clear()
        speaker.say("I am listening.")
        assert speaker.wait(30)
        assert isinstance(log.of(SpeechFinished)[-1], SpeechFinished)
        assert len(log.of(SpeechStarted)) == 2
        assert 0.8 < wav_seconds(sink.path) < 3.0
    finally:
        speaker.close()


def test_stop_ends_a_long_synthesis_at_once(tmp_path: Path, piper: PiperEngine) -> None:
    """Barge-in does not wait for a long sentence to finish synthesising."""
    log = EventLog()
    sink = WavFileSink(tmp_path / "long.wav", paced=True)
    speaker = make_speaker(piper, sink, log)
    long_sentence = "This sentence has no breaks at all and " + "goes on and on " * 14 + "."
    try:
        probe = piper.synthesize(long_sentence)
        assert probe.compute_s > 0.3  # long enough to be worth cancelling
        speaker.say(long_sentence)
        time.sleep(0.1)
        assert speaker.stop() < 0.1
        started = time.monotonic()
        speaker.say("Yes?")
        assert log.started.wait(10)
        first_audio = log.events[-1][1] - started
        assert speaker.wait(10)
    finally:
        speaker.close()
    assert first_audio < probe.compute_s * 0.6, "the next reply waited for the old synthesis"
    assert [e.stopped for e in log.of(SpeechFinished) if isinstance(e, SpeechFinished)] == [
        True,
        False,
    ]


def test_text_without_words_finishes_without_audio(tmp_path: Path, piper: PiperEngine) -> None:
    log = EventLog()
    sink = WavFileSink(tmp_path / "none.wav")
    speaker = make_speaker(piper, sink, log)
    try:
        speaker.say("```python\nprint('not read')\n```\n")
        assert speaker.wait(10)
        speaker.say("🎉 --- 🎉")
        assert speaker.wait(10)
    finally:
        speaker.close()
    assert log.kinds() == ["SpeechStarted", "SpeechFinished", "SpeechFinished"]
    assert sink.path.is_file()  # "Code block in Python." was said


def test_a_broken_voice_is_reported_not_raised(tmp_path: Path) -> None:
    voice = tmp_path / "broken.onnx"
    voice.write_bytes(b"not a model")
    (tmp_path / "broken.onnx.json").write_text("{}")
    log = EventLog()
    speaker = Speaker(TTSConfig(voice=str(voice)), WavFileSink(tmp_path / "x.wav"), on_event=log)
    try:
        speaker.say("Hello.")
        assert speaker.wait(10)
    finally:
        speaker.close()
    (failed,) = log.of(SpeechFailed)
    assert isinstance(failed, SpeechFailed) and failed.unavailable
    assert "broken.onnx.json" in failed.message and not speaker.busy

"""With a reply from the real SmolLM2, speech starts before the reply has finished."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tars_assistant.llm import ChatMessage, LLMEngine
from tars_assistant.speech.events import SpeechFinished
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.speech.sinks import WavFileSink
from tars_assistant.speech.speaker import Speaker
from tars_core.config import load_config
from tars_core.settings.tts import TTSConfig
from tests.speech.support import EventLog

pytestmark = pytest.mark.slow

PROMPT = "Tell me a short story about a robot who learns to paint."


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMEngine]:
    cfg = dataclasses.replace(
        load_config(env={}).llm, n_ctx=1024, max_tokens=160, seed=7, temperature=0.0
    )
    engine = LLMEngine(cfg)
    engine.load()
    yield engine
    engine.close()


def test_first_sentence_is_heard_before_the_reply_ends(
    tmp_path: Path, llm: LLMEngine, piper: PiperEngine
) -> None:
    log = EventLog()
    sink = WavFileSink(tmp_path / "reply.wav")
    speaker = Speaker(TTSConfig(), sink, engine=piper, on_event=log)
    stamps: list[tuple[float, str]] = []
    try:
        history = [ChatMessage(role="user", content=PROMPT)]
        for piece in llm.stream(llm.cfg.system_prompt, history):
            stamps.append((time.monotonic(), piece))
            speaker.feed(piece)
        reply_done = time.monotonic()
        speaker.end()
        assert speaker.wait(60)
    finally:
        speaker.close()
    text = "".join(p for _, p in stamps)
    (done,) = log.of(SpeechFinished)
    assert isinstance(done, SpeechFinished) and not done.stopped
    m = done.metrics
    assert m.sentences >= 3, text
    assert sink.first_write_at is not None and log.started.is_set()
    ahead = reply_done - sink.first_write_at
    assert ahead > 0, (
        f"first audio came {-ahead * 1000:.0f} ms after the reply ended "
        f"({len(stamps)} tokens in {(reply_done - stamps[0][0]) * 1000:.0f} ms): {text!r}"
    )
    # The stages add up: first token -> first sentence -> its audio -> written.
    assert m.first_token_to_sentence_s is not None and m.sentence_to_audio_s is not None
    first_token = stamps[0][0]
    assert sink.first_write_at - first_token >= m.first_token_to_sentence_s
    assert m.first_token_to_audio_s == pytest.approx(
        m.first_token_to_sentence_s + m.sentence_to_audio_s
    )

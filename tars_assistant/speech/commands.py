"""What the `tars` command line and `tars doctor` call for speech. Each raises or returns
plain values; printing is the caller's business.

Importing this loads numpy and the speech modules, not piper or sounddevice."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tars_assistant.speech.events import (
    SpeechError,
    SpeechEvent,
    SpeechFailed,
    SpeechFinished,
    SpeechMetrics,
    SpeechUnavailable,
)
from tars_assistant.speech.piper import PiperEngine
from tars_assistant.speech.sinks import FILE_PREFIX, AudioSink, WavFileSink, open_sink
from tars_assistant.speech.speaker import Speaker
from tars_assistant.speech.voice_files import resolve_voice
from tars_core.settings.tts import TTSConfig

EMPTY = SpeechMetrics(None, None, None, None, 0.0, 0.0, 0, stopped=False)


def speak_text(
    text: str, config: TTSConfig, sink: AudioSink, *, engine: PiperEngine | None = None
) -> SpeechMetrics:
    """Speak ``text`` to ``sink`` and wait until it is heard (`tars say`); raises the
    :class:`SpeechError` that stopped it."""
    events: list[SpeechEvent] = []
    speaker = Speaker(config, sink, engine=engine, on_event=events.append)
    try:
        speaker.engine.load()
        speaker.say(text)
        speaker.wait()
    finally:
        speaker.close()
    for event in events:
        if isinstance(event, SpeechFailed):
            raise (SpeechUnavailable if event.unavailable else SpeechError)(event.message)
    finished = [e for e in events if isinstance(e, SpeechFinished)]
    if finished:
        return finished[-1].metrics
    return EMPTY


def say(text: str, config: TTSConfig, *, to: Path | None = None) -> tuple[str, SpeechMetrics]:
    """`tars say`: speak ``text`` (Markdown is fine) to ``to`` (a WAV file) or to
    ``[tts] output_device``; returns where it went and how it went.

    Raises :class:`SpeechError` (its :class:`SpeechUnavailable` kind without an
    output device, piper-tts or the voice) with a message for the user.
    """
    if not text.strip():
        raise SpeechError("nothing to say")
    sink = WavFileSink(to) if to is not None else open_sink(config.output_device)
    metrics = speak_text(text, config, sink)
    if metrics.sentences == 0:
        raise SpeechError("nothing to say: the text has no words to speak")
    return sink.name, metrics


def summary(where: str, metrics: SpeechMetrics) -> str:
    rtf = f", synthesis RTF {metrics.rtf:.2f}" if metrics.rtf is not None else ""
    return f"{where}: {metrics.audio_s:.1f} s of speech in {metrics.sentences} sentences{rtf}"


def speech_problems(config: TTSConfig, *, check_device: bool = True) -> list[str]:
    """What stops spoken replies from working here, for `tars doctor` (empty: all good).

    Cheap: the voice is located, not loaded; the output device is looked up, not opened.
    """
    problems = []
    for module, package in (("piper", "piper-tts"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is None:
            problems.append(f"{package} is missing: pip install 'tars[tts]'")
    try:
        resolve_voice(config)
    except SpeechError as exc:
        problems.append(str(exc))
    if check_device and not config.output_device.startswith(FILE_PREFIX):
        try:
            open_sink(config.output_device)
        except SpeechError as exc:
            problems.append(str(exc))
    return problems

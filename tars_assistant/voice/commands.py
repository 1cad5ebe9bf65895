"""What the `tars` command line calls for voice: transcribe a file, list microphones,
check that voice can work. Each raises or returns plain values; printing is the
caller's business."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from tars_assistant.voice.capture import (
    FileSource,
    VoiceError,
    VoiceUnavailable,
    import_sounddevice,
    list_input_devices,
    resolve_input_device,
)
from tars_assistant.voice.events import EventCallback, PartialEvent, VoiceEvent
from tars_assistant.voice.pipeline import Pipeline
from tars_assistant.voice.stt import WhisperEngine, model_location
from tars_core.settings.voice import VoiceConfig

PartialCallback = Callable[[str, str], None]


def transcribe_file(
    path: str | Path,
    config: VoiceConfig,
    on_partial: PartialCallback | None = None,
    *,
    on_event: EventCallback | None = None,
    engine: WhisperEngine | None = None,
    realtime: bool = False,
) -> str:
    """The final transcript of an audio file through the push-to-talk pipeline (VAD
    gate, partials, final decodes), read as fast as possible unless ``realtime``.

    ``on_partial(committed, tentative)`` receives each partial hypothesis;
    ``on_event`` every event. Utterances are joined with a space. Raises
    :class:`~tars_assistant.voice.capture.AudioFileError` for a missing or undecodable
    file and :class:`~tars_assistant.voice.capture.VoiceUnavailable` without a model.
    """

    def forward(event: VoiceEvent) -> None:
        if on_partial is not None and isinstance(event, PartialEvent):
            on_partial(event.committed, event.tentative)
        if on_event is not None:
            on_event(event)

    pipeline = Pipeline(config, engine or WhisperEngine(config), forward)
    finals = pipeline.run(FileSource(path, realtime=realtime))
    return " ".join(text for text in finals if text)


def devices_report() -> str:
    """The text of `tars devices`: input devices, the default marked with ``*``.

    Raises :class:`VoiceUnavailable` when PortAudio is missing.
    """
    devices = list_input_devices()
    if not devices:
        return (
            "no input devices found: connect a microphone (and check that your user may "
            "use audio devices, e.g. the 'audio' group)"
        )
    lines = ["input devices (* = default; set [voice] input_device to a name or index):"]
    lines += [str(device) for device in devices]
    return "\n".join(lines)


def voice_problems(config: VoiceConfig, *, check_microphone: bool = True) -> list[str]:
    """What stops voice from working here, for `tars doctor` (empty: all good).

    Cheap: nothing is loaded; the microphone is looked up, not opened.
    """
    problems = []
    for module, package in (("numpy", "numpy"), ("webrtcvad", "webrtcvad-wheels")):
        if importlib.util.find_spec(module) is None:
            problems.append(f"{package} is missing: pip install 'tars[voice]'")
    if importlib.util.find_spec("faster_whisper") is None:
        problems.append("faster-whisper is missing: pip install 'tars[voice]'")
    try:
        where = model_location(config)
        if config.model and not Path(where).is_dir() and "/" in where:
            problems.append(f"[voice] model {config.model!r} is not a directory")
    except VoiceError as exc:
        problems.append(str(exc))
    if check_microphone:
        try:
            resolve_input_device(import_sounddevice(), config.input_device)
        except VoiceUnavailable as exc:
            problems.append(str(exc))
    return problems

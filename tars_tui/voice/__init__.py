"""The TUI's own voice parts: the push-to-talk driver and keys (``driver``), hands-free
wiring (``talk``), spoken replies (``speech_control``) and the voice and speaking
widgets (``widgets``). The speech engines themselves (Whisper, VAD, Piper) live in
``tars_assistant``, so ``tars serve`` and the command line use them too."""

"""The `[voice]` config section. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting


@dataclass(frozen=True)
class VoiceConfig:
    enabled: bool = setting(True, "Push-to-talk voice input.")
    input_device: str = setting(
        "",
        "Microphone by name (substring) or index; empty = the system default; "
        "file:PATH plays an audio file as the microphone (demos, tests).",
    )
    ptt_key: str = setting("ctrl+space", "Key that starts and stops listening (F5 also works).")
    auto_send: bool = setting(False, "Send the final transcript at once instead of reviewing it.")
    vad_aggressiveness: int = setting(
        2, "webrtcvad aggressiveness, 0 (lenient) to 3.", min=0, max=3
    )
    start_frames: int = setting(
        3, "Voiced 30 ms frames in a row that start an utterance.", min=1, max=50
    )
    preroll_ms: int = setting(300, "Audio kept from before speech starts.", min=0, max=2000)
    hangover_ms: int = setting(600, "Silence that ends an utterance.", min=90, max=5000)
    max_utterance_s: float = setting(30.0, "Longest utterance.", min=1.0, max=300.0)
    noise_margin_db: float = setting(
        9.0, "Speech must be this far above the adaptive noise floor.", min=0.0, max=40.0
    )
    partial_interval_s: float = setting(
        0.5, "A partial transcript every this much new audio.", min=0.1, max=5.0
    )
    partial_window_s: float = setting(
        10.0,
        "Audio window of partial decodes: shorter is faster; 30 = Whisper's full window.",
        min=5.0,
        max=30.0,
    )
    speculative_final: bool = setting(
        True,
        "Start the final decode during the hangover silence (thrown away if speech resumes), "
        "so the text is ready when the utterance ends.",
    )
    no_speech_timeout_s: float = setting(
        10.0,
        "Stop listening when no speech starts within this time; 0 = never.",
        min=0.0,
        max=600.0,
    )
    model: str = setting(
        "",
        "A faster-whisper model directory (or a model name already in the Hugging Face "
        "cache); empty = the bundled tiny.en.",
    )
    device: str = setting("cpu", "Whisper device.", choices=("cpu", "cuda", "auto"))
    compute_type: str = setting(
        "int8", "CTranslate2 compute type: int8 on CPU, float16 or int8_float16 on a GPU."
    )
    cpu_threads: int = setting(
        0, "CPU threads per Whisper decode; 0 = CTranslate2's default.", min=0, max=256
    )
    language: str = setting(
        "en", "Spoken language code (multilingual models only); empty = detect it."
    )
    initial_prompt: str = setting("", "Text that primes Whisper (names, jargon).")
    hotwords: str = setting("", "Words Whisper should favour, space separated.")
    beam_size: int = setting(5, "Beam size of the final decode.", min=1, max=10)
    no_speech_threshold: float = setting(
        0.6, "Segments more likely silence than this are dropped.", min=0.0, max=1.0
    )

"""Voice: end of speech -> final text, streaming vs naive; Whisper compute with and
without the VAD gate; WER streaming vs one-shot. Prints one JSON object.

Utterances of 2-10 s are made with espeak-ng and sox (several voices and speeds),
with silence before and after and steady noise (white, pink or brown) under some.

- streaming: push-to-talk on a source that releases each 30 ms frame when it would
  have been recorded, so partial decoding happens while the audio arrives. Latency
  runs from the moment the frame that ends the utterance (after the hangover)
  would have arrived to the final text.
- naive: the whole recording transcribed in one call after it ends (same model,
  same beam search); latency is that call.
- compute: Whisper seconds per second of recording with the gate (the streaming
  pipeline) and without it (the same partial schedule and final over the whole
  recording), on the corpus and on one utterance with more and more noise around it.

Goals: streaming p50 <= 0.5 x naive and <= 400 ms with tiny.en on 2 CPU cores;
compute proportional to speech, not to recording length; WER no worse than
one-shot + 2 points.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from tars_assistant.voice import synth
from tars_assistant.voice.agreement import LocalAgreement
from tars_assistant.voice.capture import FRAME_S, ArraySource, Frame
from tars_assistant.voice.events import FinalEvent, VoiceEvent
from tars_assistant.voice.pipeline import Pipeline
from tars_assistant.voice.ptt import PushToTalk
from tars_assistant.voice.stt import WhisperEngine, model_location
from tars_core.settings.voice import VoiceConfig

# (text, voice, speed, lead silence s, noise dBFS or None)
UTTERANCES: list[tuple[str, str, int, float, float | None]] = [
    ("Good morning.", "en-us", 150, 0.5, None),
    ("Read my messages, please.", "en-gb", 160, 1.2, -60.0),
    ("Please remind me to call the dentist tomorrow morning.", "en-gb", 160, 0.8, None),
    ("What is the weather going to be like in London this weekend?", "en-us", 150, 1.5, -50.0),
    ("Open the project notes and read me the last few meetings.", "en-gb-scotland", 180, 0.6, None),
    ("How long does it take to drive to the airport?", "en-us+m3", 130, 1.0, -45.0),
    (
        "Can you explain how the memory index works on the second machine? "
        "I want to know where the vectors are stored.",
        "en-us-nyc",
        165,
        0.7,
        None,
    ),
    (
        "Turn off the lights in the kitchen and lock the front door. "
        "Then set an alarm for the morning.",
        "en-gb+f2",
        175,
        1.0,
        -55.0,
    ),
    (
        "Send a message to the team saying that the meeting is moved to the afternoon, "
        "and ask whether anyone needs the projector.",
        "en-us",
        160,
        0.9,
        None,
    ),
    (
        "Read the latest news about the football match, and then tell me "
        "what the weather will be like for the weekend trip to the mountains.",
        "en-gb-x-gbclan",
        150,
        1.3,
        -50.0,
    ),
    ("Set a timer and then play some quiet music.", "en-us+f3", 190, 0.8, None),
    (
        "Summarise what we discussed yesterday about the budget for the new office, "
        "and list the open questions.",
        "en-gb-x-rp",
        170,
        1.1,
        -60.0,
    ),
]
TRAIL_S = 2.0
NOISE_COLOURS = ("white", "pink", "brown")
PADDING_S = (0.0, 10.0, 25.0)  # noise before one utterance, for compute vs length


@dataclass
class Clip:
    samples: Frame
    text: str
    speech_start_s: float
    speech_end_s: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / 16000


def make_corpus(cache: Path) -> list[Clip]:
    clips = []
    for i, (text, voice, speed, lead, noise) in enumerate(UTTERANCES):
        speech = synth.speak(text, voice=voice, speed=speed, cache_dir=cache)
        colour = NOISE_COLOURS[i % len(NOISE_COLOURS)]
        made = synth.compose(
            speech,
            text,
            lead_s=lead,
            trail_s=TRAIL_S,
            noise_dbfs=noise,
            noise_colour=colour,
            seed=i,
        )
        clips.append(Clip(made.samples, text, made.speech_start_s, made.speech_end_s))
    return clips


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


@dataclass
class Streamed:
    text: str
    end_to_final_ms: float
    speech_end_to_final_ms: float
    final_compute_ms: float
    speculative: bool
    partials: int
    partial_interval_ms: float | None
    first_partial_ms: float | None
    compute_s: float


@dataclass
class Padded:
    recording_s: float
    speech_s: float
    gated: float
    ungated: float


@dataclass
class OneShot:
    text: str
    latency_ms: float


def streaming_run(clip: Clip, config: VoiceConfig, engine: WhisperEngine) -> Streamed:
    """One push-to-talk session on a real-time source; the final event and when it came."""
    finals: list[tuple[FinalEvent, float]] = []

    def on_event(event: VoiceEvent) -> None:
        if isinstance(event, FinalEvent):
            finals.append((event, time.monotonic()))

    source = ArraySource(clip.samples, realtime=True)
    ptt = PushToTalk(config, on_event, source_factory=lambda: source, engine=engine)
    ptt.start()
    ptt.wait(clip.duration_s + 30)
    final, at = finals[0]
    assert final.timings is not None and source.started_at is not None
    t = final.timings
    return Streamed(
        text=final.text,
        end_to_final_ms=t.end_to_final_s * 1000,
        speech_end_to_final_ms=(at - source.started_at - clip.speech_end_s) * 1000,
        final_compute_ms=t.final_compute_s * 1000,
        speculative=t.speculative,
        partials=t.partials,
        partial_interval_ms=None if t.partial_interval_s is None else t.partial_interval_s * 1e3,
        first_partial_ms=None if t.first_partial_s is None else t.first_partial_s * 1000,
        compute_s=t.compute_s,
    )


def gated_compute(samples: Frame, config: VoiceConfig, engine: WhisperEngine) -> float:
    """Whisper seconds the streaming pipeline spends on a recording (as fast as possible)."""
    spent: list[float] = []

    def on_event(event: VoiceEvent) -> None:
        if isinstance(event, FinalEvent) and event.timings is not None:
            spent.append(event.timings.compute_s)

    Pipeline(config, engine, on_event).run(ArraySource(samples))
    return sum(spent)


def ungated_compute(samples: Frame, config: VoiceConfig, engine: WhisperEngine) -> float:
    """The same schedule without the gate: a partial of everything so far every
    ``partial_interval_s``, and one final decode of the whole recording."""
    step = round(config.partial_interval_s / FRAME_S) * 480
    agreement = LocalAgreement()
    total = 0.0
    for end in range(step, len(samples), step):
        decoded = engine.decode(samples[:end], final=False, prefix=agreement.committed_text)
        agreement.update(decoded.text)
        total += decoded.compute_s
    return total + engine.decode(samples, final=True).compute_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=len(UTTERANCES), help="utterances to use")
    args = parser.parse_args()

    missing = synth.missing_tools()
    if missing:
        raise SystemExit(f"needs {', '.join(missing)}: apt-get install espeak-ng sox")
    config = VoiceConfig()
    engine = WhisperEngine(config)
    engine.load()
    with tempfile.TemporaryDirectory(prefix="tars-voice-bench-") as tmp:
        clips = make_corpus(Path(tmp))[: args.limit]
    # warm up: the first decodes of a process are slower
    for _ in range(2):
        engine.decode(clips[2].samples, final=True)
        engine.decode(clips[2].samples[:32000], final=False)

    # each utterance through both pipelines back to back, so machine load hits both alike
    streaming, naive = [], []
    for clip in clips:
        streaming.append(streaming_run(clip, config, engine))
        decoded = engine.decode(clip.samples, final=True)
        naive.append(OneShot(decoded.text, decoded.compute_s * 1000))

    recording_s = sum(c.duration_s for c in clips)
    speech_s = sum(c.speech_end_s - c.speech_start_s for c in clips)
    gated = sum(s.compute_s for s in streaming)
    ungated = sum(ungated_compute(c.samples, config, engine) for c in clips)
    one_shot = sum(n.latency_ms / 1000 for n in naive)

    base = clips[2]
    speech_only = base.samples[round((base.speech_start_s - 0.3) * 16000) :]
    padded = []
    for pad in PADDING_S:
        quiet = np.concatenate((np.zeros(round(pad * 16000), np.int16), speech_only))
        samples = synth.mix(quiet, synth.white_noise(len(quiet) / 16000, -50.0, seed=99))
        padded.append(
            Padded(
                recording_s=len(samples) / 16000,
                speech_s=base.speech_end_s - base.speech_start_s,
                gated=gated_compute(samples, config, engine),
                ungated=ungated_compute(samples, config, engine),
            )
        )

    refs = [c.text for c in clips]
    wer_stream = synth.word_error_rate(list(zip(refs, [s.text for s in streaming], strict=True)))
    wer_naive = synth.word_error_rate(list(zip(refs, [n.text for n in naive], strict=True)))
    lat = [s.end_to_final_ms for s in streaming]
    naive_lat = [n.latency_ms for n in naive]
    intervals = [s.partial_interval_ms for s in streaming if s.partial_interval_ms is not None]
    first = [s.first_partial_ms for s in streaming if s.first_partial_ms is not None]
    p50, naive_p50 = statistics.median(lat), statistics.median(naive_lat)
    growth = padded[-1].gated / max(padded[0].gated, 1e-9)

    result = {
        "bench": "voice_latency",
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "model": {
            "path": model_location(config),
            "device": config.device,
            "compute_type": config.compute_type,
            "load_s": round(engine.load_s or 0.0, 3),
        },
        "corpus": {
            "utterances": len(clips),
            "speech_s_min_max": [
                round(min(c.speech_end_s - c.speech_start_s for c in clips), 2),
                round(max(c.speech_end_s - c.speech_start_s for c in clips), 2),
            ],
            "recording_s_total": round(recording_s, 1),
            "speech_s_total": round(speech_s, 1),
        },
        "end_of_speech_to_final_ms": {
            "streaming_p50": round(p50, 1),
            "streaming_p95": round(percentile(lat, 95), 1),
            "naive_p50": round(naive_p50, 1),
            "naive_p95": round(percentile(naive_lat, 95), 1),
            "ratio_p50": round(p50 / naive_p50, 3),
            "streaming_final_decode_p50": round(
                statistics.median(s.final_compute_ms for s in streaming), 1
            ),
            "speculative_final_used": sum(s.speculative for s in streaming),
            "speech_end_to_final_p50_incl_hangover": round(
                statistics.median(s.speech_end_to_final_ms for s in streaming), 1
            ),
            "hangover_ms": config.hangover_ms,
        },
        "partials": {
            "interval_ms_p50": round(statistics.median(intervals), 1) if intervals else None,
            "first_after_speech_start_ms_p50": round(statistics.median(first), 1)
            if first
            else None,
            "per_utterance_mean": round(statistics.mean(s.partials for s in streaming), 1),
        },
        "whisper_compute_s_per_audio_s": {
            "gated_streaming": round(gated / recording_s, 4),
            "ungated_streaming": round(ungated / recording_s, 4),
            "ungated_one_shot": round(one_shot / recording_s, 4),
            "gated_streaming_per_speech_s": round(gated / speech_s, 4),
        },
        "compute_vs_recording_length": [
            {
                "recording_s": round(p.recording_s, 2),
                "speech_s": round(p.speech_s, 2),
                "gated_compute_s": round(p.gated, 3),
                "ungated_compute_s": round(p.ungated, 3),
            }
            for p in padded
        ],
        "wer": {
            "streaming": round(wer_stream, 4),
            "one_shot": round(wer_naive, 4),
            "delta_points": round((wer_stream - wer_naive) * 100, 2),
        },
        "goals": {
            "p50_le_half_naive": p50 <= 0.5 * naive_p50,
            "p50_le_400ms": p50 <= 400,
            "wer_within_2_points": (wer_stream - wer_naive) * 100 <= 2.0,
            "gated_compute_flat_with_length": growth < 1.25,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

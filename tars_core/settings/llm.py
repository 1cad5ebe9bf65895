"""The `[llm]` config section: the llama.cpp model and sampling. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting

DEFAULT_SYSTEM_PROMPT = (
    "You are TARS, a concise and helpful assistant running locally on the user's "
    "own machine. Answer clearly; use Markdown for code."
)


@dataclass(frozen=True)
class LLMConfig:
    model: str = setting(
        "",
        "The [models.NAME] profile that answers (or ollama:MODEL, found on Ollama's port); "
        "empty = llama.cpp with model_path below.",
    )
    fallback: str = setting(
        "",
        "A profile that answers the same turn when the model's server is down, refuses, "
        "times out or fails (after one retry); empty = none.",
    )
    ollama_url: str = setting(
        "http://127.0.0.1:11434",
        "Where to look for Ollama: its models appear as ollama:NAME profiles; empty = don't look.",
        pattern=(r"|https?://[^\s/]+/?", "empty, or Ollama's root URL like http://127.0.0.1:11434"),
    )
    model_path: str = setting("", "A GGUF file; empty = the bundled SmolLM2-135M-Instruct.")
    n_ctx: int = setting(4096, "Context window in tokens.", min=256, max=262144)
    n_threads: int = setting(
        0,
        "CPU threads for generation; 0 = physical cores less one (kept for the UI).",
        min=0,
        max=512,
    )
    n_gpu_layers: int = setting(
        0, "Layers offloaded to the GPU (-1 = all); needs a CUDA/Metal build.", min=-1, max=1000
    )
    temperature: float = setting(0.7, "Sampling temperature.", min=0.0, max=5.0)
    top_p: float = setting(0.9, "Nucleus sampling.", min=0.0, max=1.0)
    repeat_penalty: float = setting(1.1, "Penalty for repeated tokens.", min=0.5, max=3.0)
    max_tokens: int = setting(512, "Longest reply in tokens.", min=1, max=65536)
    seed: int = setting(-1, "Sampling seed; -1 = random.", min=-1, max=2**31 - 1)
    system_prompt: str = setting(DEFAULT_SYSTEM_PROMPT, "What the model is told first.")

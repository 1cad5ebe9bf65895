"""Which build each PC1 part runs: llama.cpp's backend and Whisper's device.

Shown by `tars doctor` and on the PC1 panel (the node reports its embeddings
build itself). Whisper's device under ``device = "auto"`` loads CTranslate2's
library: call from a worker thread, once.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from tars_assistant.model_memory import gpu_build
from tars_core.settings.llm import LLMConfig
from tars_core.settings.voice import VoiceConfig


def llama_build(config: LLMConfig) -> tuple[str, bool]:
    """("GPU offload build, all layers on the GPU", True) or ("CPU", True); False when
    unusable. Read from llama.cpp's library files, not by importing it: the TUI's own
    process never loads llama.cpp (its child does), nor a GPU runtime with it."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "not installed (run make)", False
    if not gpu_build():
        if config.n_gpu_layers:
            return "CPU build, but [llm] n_gpu_layers asks for the GPU (see doctor)", False
        return "CPU", True
    layers = config.n_gpu_layers
    where = "all layers" if layers < 0 else f"{layers} layers" if layers else "no layers"
    return f"GPU offload build, {where} on the GPU", True


def whisper_build(config: VoiceConfig) -> str:
    """The device and compute type Whisper will use, as the engine resolves them."""
    device = config.device
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except (ImportError, RuntimeError, OSError):
            device = "cpu"
    return f"{device} {config.compute_type}"


def torch_build() -> str | None:
    """The installed torch's build, read from its version string without importing it
    (PC1 never loads torch): "2.13.0+cpu" is a CPU build, "+cu128" a CUDA one."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    local = version.partition("+")[2]
    kind = "CPU" if local == "cpu" else f"CUDA {local[2:]}" if local.startswith("cu") else local
    return f"torch {version}" + (f" ({kind} build)" if kind else "")


def pc1_builds(llm: LLMConfig, voice: VoiceConfig) -> dict[str, str]:
    builds = {"llama.cpp": llama_build(llm)[0]}
    if voice.enabled:
        builds["whisper"] = whisper_build(voice)
    return builds

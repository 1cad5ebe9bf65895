"""`tars doctor`: what works on this machine, and how to fix what does not."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tars_core.config import Config


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    optional: bool = False


def run_checks(config: Config) -> list[Check]:
    return [
        _check_model(config),
        *_check_fallback(config),
        _check_llama(config),
        _check_gpu(),
        _check_builds(config),
        _check_audio(config),
        _check_speech(config),
        _check_data_dir(config),
        _check_node(config),
    ]


def _check_model(config: Config, name: str | None = None, label: str = "model") -> Check:
    """The profile's model: its GGUF file here, or its server answering (model_listing)."""
    from tars_assistant import profiles
    from tars_assistant.llm import ModelError, check_gguf, resolve_model_path
    from tars_assistant.model_listing import probe

    try:
        profile = profiles.resolve(config, name)
        if profile.backend == "openai":
            where = profiles.where(profile).label
            state = probe(profile)
            detail = f"profile {profile.name}: {profile.model or 'its first model'} on {where}"
            return Check(label, state == "answers", f"{detail}: {state}")
        path = resolve_model_path(profile.llm)
        check_gguf(path)
    except ModelError as exc:
        return Check(label, False, str(exc))
    size = path.stat().st_size / 2**20
    return Check(label, True, f"profile {profile.name}: {path} ({size:.0f} MiB)")


def _check_fallback(config: Config) -> list[Check]:
    if not config.llm.fallback:
        return []
    check = _check_model(config, config.llm.fallback, "fallback model")
    return [Check(check.name, check.ok, check.detail, optional=True)]


def _check_llama(config: Config) -> Check:
    try:
        import llama_cpp
    except ImportError as exc:
        return Check("llama.cpp", False, f"llama-cpp-python is not installed ({exc}); run make")
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    detail = f"llama-cpp-python {llama_cpp.__version__}, GPU offload {'yes' if gpu else 'no'}"
    if config.llm.n_gpu_layers and not gpu:
        detail += (
            " — [llm] n_gpu_layers is set but this build is CPU-only: reinstall with "
            "CMAKE_ARGS=-DGGML_CUDA=on"
        )
        return Check("llama.cpp", False, detail, optional=True)
    return Check("llama.cpp", True, detail)


def _check_builds(config: Config) -> Check:
    """Which build each part runs: llama.cpp, Whisper, and torch where the node runs here."""
    from tars_assistant.builds import llama_build, torch_build, whisper_build

    parts = [f"llama.cpp {llama_build(config.llm)[0]}"]
    if config.voice.enabled:
        parts.append(f"whisper {whisper_build(config.voice)}")
    torch = torch_build()
    if config.node.endpoint == "auto":
        parts.append(f"embeddings {torch}" if torch else "embeddings: torch not installed")
    elif torch:
        parts.append(f"local {torch} (the node in use is remote)")
    return Check("builds", True, "; ".join(parts))


def _check_gpu() -> Check:
    from node_daemon.sysinfo import snapshot

    reading = snapshot()
    if not reading.gpus:
        return Check("gpu", False, reading.gpu_error or "no NVIDIA GPU", optional=True)
    names = ", ".join(f"GPU{g.index} {g.name}" for g in reading.gpus)
    return Check("gpu", True, names)


def _check_audio(config: Config) -> Check:
    if not config.voice.enabled:
        return Check("voice", False, "disabled in config ([voice] enabled = false)", optional=True)
    from tars_assistant.voice.capture import FILE_DEVICE_PREFIX
    from tars_assistant.voice.commands import voice_problems

    from_file = config.voice.input_device.startswith(FILE_DEVICE_PREFIX)
    problems = voice_problems(config.voice, check_microphone=not from_file)
    if problems:
        return Check("voice", False, "; ".join(problems), optional=True)
    return Check("voice", True, "microphone and Whisper found; `tars devices` lists inputs")


def _check_speech(config: Config) -> Check:
    from tars_assistant.speech.commands import speech_problems

    to_file = config.tts.output_device.startswith("file:")
    problems = speech_problems(config.tts, check_device=not to_file)
    state = "on" if config.tts.enabled else "off until /speak on or F4 ([tts] enabled)"
    if problems:
        return Check("speech", False, "; ".join(problems), optional=True)
    return Check("speech", True, f"Piper voice and output found; spoken replies {state}")


def _check_data_dir(config: Config) -> Check:
    path = config.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Check("data", False, f"cannot create {path}: {exc.strerror}")
    if not os.access(path, os.W_OK):
        return Check("data", False, f"{path} is not writable")
    free = shutil.disk_usage(path).free / 2**30
    return Check("data", True, f"{path} ({free:.0f} GiB free)")


def _check_node(config: Config) -> Check:
    """The node's storage: the embedded node's data directory as found on disk (full,
    read-only, corrupt), or what a remote node's `health` says about its own."""
    from node_daemon.faults import check_data_dir

    endpoint = config.node.endpoint
    if endpoint == "off":
        return Check("node", False, "off: no long-term memory ([node] endpoint)", optional=True)
    if endpoint == "auto":
        server = config.server
        data = Path(server.data_dir).expanduser() if server.data_dir else config.data_dir / "node"
        problem = check_data_dir(data)
        if problem is not None:
            return Check("node", False, problem)
        return Check("node", True, f"auto: tars starts a local node on loopback ({data})")
    from node_daemon.client import BlockingNodeClient, NodeError, NodeUnavailable

    node = config.node
    try:
        with BlockingNodeClient(
            endpoint,
            server_public_key=node.server_public_key or None,
            client_secret_key_file=node.client_secret_key or None,
            timeout_s=min(node.timeout_s, 3.0),
            retries=1,
        ) as client:
            health = client.health()
    except (NodeUnavailable, NodeError, OSError, ValueError) as exc:
        return Check("node", False, f"remote node at {endpoint}: {exc}")
    problem = health.get("storage_error")  # None from a node older than this field
    if problem:
        return Check("node", False, f"remote node at {endpoint}: {problem}")
    return Check("node", True, f"remote node at {endpoint}")

"""The `[models.NAME]` profiles: which model answers, and where it runs. Standard library only.

A profile is either ``backend = "llama.cpp"`` (a GGUF file run by TARS itself, with
any `[llm]` key overriding the `[llm]` section for it) or ``backend = "openai"`` (any
OpenAI-compatible server: llama-server, Ollama, vLLM, LM Studio, a cloud endpoint).
The key itself never sits in config.toml: ``api_key_env`` names an environment
variable, ``api_key_file`` a file only its owner may read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tars_core.schema import setting
from tars_core.settings.llm import LLMConfig

BACKENDS = ("llama.cpp", "openai")
# The profile that is always there: llama.cpp here with the [llm] section itself.
DEFAULT_PROFILE = "local"
URL_PATTERN = (
    r"https?://[^\s/]+(/\S*)?",
    "an http:// or https:// URL, e.g. http://127.0.0.1:8080/v1",
)
# An OpenAI-compatible server runs the model: these [llm] keys mean nothing for it.
LOCAL_ONLY_KEYS = ("model_path", "n_ctx", "n_threads", "n_gpu_layers", "repeat_penalty")
# [llm] keys a profile may not set: they choose profiles, they are not part of one.
ROUTING_KEYS = ("model", "fallback", "ollama_url")


@dataclass(frozen=True)
class ModelProfile:
    backend: str = setting("llama.cpp", "Who runs the model.", choices=BACKENDS)
    base_url: str = setting(
        "",
        "openai: the server's API root (llama-server, vLLM, LM Studio: …/v1; "
        "Ollama: http://127.0.0.1:11434/v1).",
        pattern=(rf"|{URL_PATTERN[0]}", URL_PATTERN[1]),
    )
    model: str = setting("", "openai: the model's name on that server; empty = its first one.")
    api_key_env: str = setting(
        "", "openai: the environment variable holding the API key; empty = no key."
    )
    api_key_file: str = setting(
        "", "openai: a file (mode 0600) holding the API key, instead of api_key_env."
    )
    timeout_s: float = setting(
        60.0,
        "openai: longest wait for the server to connect, start a reply or send its next piece.",
        min=0.1,
        max=3600.0,
    )
    context_window: int = setting(
        0, "openai: the model's window in tokens; 0 = ask the server.", min=0, max=10_000_000
    )
    send_memory: bool = setting(
        True, "Send recalled memories and documents to this model (false keeps them here)."
    )
    # Filled in by the loader, not keys of the table.
    name: str = field(default="", metadata={"internal": True})
    # The effective [llm] settings for this profile: the section, then the profile's keys.
    llm: LLMConfig = field(default_factory=LLMConfig, metadata={"internal": True})


def profile_keys() -> dict[str, dataclasses.Field[object]]:
    """The keys a `[models.NAME]` table may hold of its own (the `[llm]` keys aside)."""
    return {f.name: f for f in dataclasses.fields(ModelProfile) if not f.metadata.get("internal")}


def llm_keys_for(backend: str) -> set[str]:
    """The `[llm]` keys a profile of ``backend`` may override."""
    names = {f.name for f in dataclasses.fields(LLMConfig)} - set(ROUTING_KEYS)
    return names - set(LOCAL_ONLY_KEYS) if backend == "openai" else names

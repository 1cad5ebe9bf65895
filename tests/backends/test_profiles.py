"""[models.NAME] profiles: the config's checks, where each runs, Ollama's discovery,
and what the router tells the user before anything leaves the machine."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tars_assistant import profiles
from tars_assistant.http_engine import OpenAIEngine
from tars_assistant.model_listing import list_profiles, text
from tars_assistant.model_router import ModelRouter
from tars_core.config import ConfigError, ModelProfile, load_config
from tests.backends.conftest import FaultServer, LlamaServer, free_port, send_json

Fault = Callable[[Callable[[BaseHTTPRequestHandler], None]], FaultServer]


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_profiles_take_their_own_keys_and_override_llm(tmp_path: Path) -> None:
    cfg = load_config(
        config_file(
            tmp_path,
            """
[llm]
model = "pc2"
temperature = 0.3
fallback = "small"

[models.pc2]
backend = "openai"
base_url = "http://pc2.lan:8080/v1"
api_key_env = "PC2_KEY"
max_tokens = 99
send_memory = false

[models.small]
model_path = "/models/small.gguf"
n_ctx = 2048
""",
        ),
        env={},
    )
    pc2, small = cfg.models["pc2"], cfg.models["small"]
    assert pc2.backend == "openai" and pc2.api_key_env == "PC2_KEY" and not pc2.send_memory
    assert pc2.llm.max_tokens == 99 and pc2.llm.temperature == 0.3  # the [llm] section's
    assert small.backend == "llama.cpp" and small.llm.n_ctx == 2048
    assert small.llm.model_path == "/models/small.gguf"
    assert profiles.resolve(cfg).name == "pc2"


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        ('[models.x]\nbackend = "openai"\n', "[models.x] base_url", "the server's URL"),
        ('[models.x]\nbackend = "vllm"\n', "[models.x] backend", "one of 'llama.cpp'"),
        (
            '[models.x]\nbackend = "openai"\nbase_url = "http://h/v1"\nn_gpu_layers = 3\n',
            "[models.x] n_gpu_layers",
            "one of the keys",
        ),
        ('[models.x]\nbase_url = "ftp://h"\n', "[models.x] base_url", "http:// or https://"),
        ('[models.x]\ncolour = "red"\n', "[models.x] colour", "one of the keys"),
        ('[llm]\nmodel = "nope"\n', "[llm] model", "a [models.NAME] profile (local)"),
        ('[llm]\nfallback = "local"\n', "[llm] fallback", "another profile than [llm] model"),
        (
            '[llm]\nmodel = "x"\nfallback = "x"\n[models.x]\nmodel_path = "/a.gguf"\n',
            "[llm] fallback",
            "another profile",
        ),
        (
            '[models.x]\nbackend = "openai"\nbase_url = "http://h"\napi_key_env = "A"\n'
            'api_key_file = "/k"\n',
            "[models.x] api_key_file",
            "not both",
        ),
        ('[models."bad name"]\nbackend = "openai"\n', "[models.bad name]", "a profile name"),
    ],
)
def test_a_bad_profile_names_the_file_the_key_and_what_was_expected(
    tmp_path: Path, body: str, key: str, expected: str
) -> None:
    path = config_file(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value) and key in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("url", "label", "remote", "cloud"),
    [
        ("http://127.0.0.1:8080/v1", "this machine (127.0.0.1:8080)", False, False),
        ("http://localhost:11434/v1", "this machine (localhost:11434)", False, False),
        ("http://192.168.1.20:8000/v1", "192.168.1.20:8000", True, False),
        ("http://pc2.lan:8080/v1", "pc2.lan:8080", True, False),
        ("http://gpubox:8080", "gpubox:8080", True, False),
        ("https://api.example.com/v1", "cloud (api.example.com)", True, True),
    ],
)
def test_where_a_profile_runs(url: str, label: str, remote: bool, cloud: bool) -> None:
    where = profiles.where(ModelProfile(name="p", backend="openai", base_url=url))
    assert (where.label, where.remote, where.cloud) == (label, remote, cloud)
    assert not profiles.where(ModelProfile(name="l")).remote


def test_a_remote_profile_is_announced_once_and_marked_in_the_header(tmp_path: Path) -> None:
    cfg = load_config(
        config_file(
            tmp_path,
            '[llm]\nmodel = "pc2"\n[models.pc2]\nbackend = "openai"\n'
            'base_url = "http://pc2.lan:8080/v1"\nsend_memory = false\n',
        ),
        env={},
    )
    router = ModelRouter(cfg)  # builds an engine; nothing is sent until load or stream
    try:
        assert "⇄ pc2.lan:8080" in router.label and not router.sends_memory
        notice = router.privacy_notice()
        assert notice is not None and "pc2.lan:8080" in notice and "not your memories" in notice
        assert router.privacy_notice() is None  # once a session
    finally:
        router.close()
    local = ModelRouter(load_config(env={}), process=False)
    try:
        assert local.privacy_notice() is None and "⇄" not in local.label
    finally:
        local.close()


def test_ollama_models_appear_as_profiles_and_its_window_is_read(
    tmp_path: Path, fault: Fault
) -> None:
    # A stand-in: Ollama itself cannot be installed here. It speaks the shape of Ollama's
    # /api/tags and /api/show (and its OpenAI-compatible /v1/models).
    asked: list[str] = []

    def ollama(h: BaseHTTPRequestHandler) -> None:
        asked.append(h.path)
        if h.path == "/api/tags":
            send_json(h, 200, {"models": [{"name": "llama3.2:3b"}, {"name": "qwen2.5:7b"}]})
        elif h.path == "/api/show":
            send_json(
                h,
                200,
                {"model_info": {"llama.context_length": 131072}, "parameters": "num_ctx 8192"},
            )
        elif h.path == "/props":
            send_json(h, 404, {"error": "not found"})
        elif h.path == "/v1/models":
            send_json(h, 200, {"data": [{"id": "llama3.2:3b"}, {"id": "qwen2.5:7b"}]})
        else:
            send_json(h, 404, {})

    server = ollama_server = fault(ollama)
    cfg = load_config(config_file(tmp_path, f'[llm]\nollama_url = "{server.url}"\n'), env={})
    names = [p.name for p in profiles.all_profiles(cfg)]
    assert names == ["local", "ollama:llama3.2:3b", "ollama:qwen2.5:7b"]
    rows = list_profiles(cfg, "local")
    assert {r.name: r.state for r in rows}["ollama:qwen2.5:7b"] == "answers"
    assert "ollama:llama3.2:3b" in text(rows)
    engine = OpenAIEngine(profiles.resolve(cfg, "ollama:qwen2.5:7b"))
    try:
        engine.load()
        assert engine.model_name == "qwen2.5:7b" and engine.n_ctx == 8192  # num_ctx
        assert "Authorization" not in json.dumps(asked)  # no key for a keyless server
    finally:
        engine.close()
    ollama_server.close()
    assert [p.name for p in profiles.all_profiles(cfg)] == ["local"]  # gone when it is


def test_model_listing_says_when_a_server_is_down(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    dead = free_port()
    cfg = load_config(
        config_file(
            tmp_path,
            f'[llm]\nollama_url = ""\n[models.up]\nbackend = "openai"\n'
            f'base_url = "{llama_server.v1}"\n[models.down]\nbackend = "openai"\n'
            f'base_url = "http://127.0.0.1:{dead}/v1"\n[models.keyless]\nbackend = "openai"\n'
            f'base_url = "{llama_server.v1}"\napi_key_env = "NOT_SET_ANYWHERE"\n',
        ),
        env={},
    )
    states = {r.name: r.state for r in list_profiles(cfg, "up")}
    assert states["local"] == "here" and states["up"] == "answers"
    assert states["down"].startswith("unreachable")
    assert states["keyless"].startswith("no key") and "NOT_SET_ANYWHERE" in states["keyless"]


def test_local_is_always_a_profile_for_model_and_fallback(tmp_path: Path) -> None:
    cfg = load_config(
        config_file(
            tmp_path,
            '[llm]\nmodel = "gpu"\nfallback = "local"\n'
            '[models.gpu]\nbackend = "openai"\nbase_url = "http://pc2.lan:8080/v1"\n',
        ),
        env={},
    )
    assert profiles.resolve(cfg, cfg.llm.fallback).backend == "llama.cpp"
    assert profiles.resolve(cfg, "local").llm == cfg.llm

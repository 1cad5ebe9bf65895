"""`tars serve` and `tars ask` on model servers: llama.cpp's own server in front of TARS's
memory, and one TARS as the `openai` backend of another, with a key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import Server, collect_sse, start_server, tars
from tests.backends.conftest import LlamaServer, free_port

pytestmark = pytest.mark.slow
SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"


def profile_toml(name: str, url: str, extra: str = "") -> str:
    return f'\n[models.{name}]\nbackend = "openai"\nbase_url = "{url}"\ntimeout_s = 10.0\n{extra}\n'


@pytest.fixture(scope="module")
def fronting(
    tmp_path_factory: pytest.TempPathFactory, llama_server: LlamaServer
) -> Iterator[Server]:
    """`tars serve` whose model is the llama.cpp server, with its own embedded node."""
    root = tmp_path_factory.mktemp("serve-on-backend")
    extra = profile_toml("gpu", llama_server.v1)
    server = start_server(
        root, node="auto", wait_node=True, llm_extra='model = "gpu"\nollama_url = ""', extra=extra
    )
    yield server
    server.stop()


def test_serve_in_front_of_a_model_server_chats_streams_and_remembers(fronting: Server) -> None:
    client = openai.OpenAI(base_url=fronting.v1, api_key=fronting.key, max_retries=0)
    with fronting.client() as http:
        assert http.post("/memory", json={"text": "My dog is called Biscuit."}).status_code < 300
    fronting.wait_outbox_empty()
    reply = client.chat.completions.create(
        model="gpu", messages=[{"role": "user", "content": "What is my dog called?"}]
    )
    assert reply.choices[0].message.content
    tars_field = reply.model_extra["tars"]  # type: ignore[index]
    assert tars_field["memory_ids"], "recalled memory went to the model server"
    chunks = list(
        client.chat.completions.create(
            model="tars",
            messages=[{"role": "user", "content": "Name a colour."}],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage is not None
    with fronting.client() as http:
        items = http.get("/conversations").json()["data"]
        assert items
        last = http.get(f"/conversations/{items[0]['id']}").json()
    models = [m.get("model") for m in last["messages"] if m["role"] == "assistant"]
    assert SMOLLM in models  # the conversation says which model wrote each reply


def test_a_cancelled_stream_stops_the_model_server(
    fronting: Server, llama_server: LlamaServer
) -> None:
    body = {
        "model": "gpu",
        "stream": True,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": "Write a very long story about a city."}],
    }
    with (
        httpx.Client(base_url=fronting.url, headers=fronting.headers(), timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        for n, _ in enumerate(resp.iter_lines()):
            if n > 6:
                break
    import time

    deadline = time.monotonic() + 5
    while llama_server.busy():
        assert time.monotonic() < deadline, "the model server kept generating"
        time.sleep(0.05)


def test_tars_is_the_openai_backend_of_another_tars(server: Server, tmp_path: Path) -> None:
    """`tars ask` whose profile is another `tars serve` (the shared one), with its key."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[llm]\nmodel = "other"\nollama_url = ""\nmax_tokens = 16\n'
        f'[node]\nendpoint = "off"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        + profile_toml("other", server.v1, 'api_key_env = "OTHER_TARS_KEY"'),
        encoding="utf-8",
    )
    env = {"OTHER_TARS_KEY": server.key}
    asked = tars_env(tmp_path, config, env, "ask", "Name a fruit.")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip()
    wrong = tars_env(tmp_path, config, {"OTHER_TARS_KEY": "tars_wrong"}, "ask", "hi")
    assert wrong.returncode == 1
    assert "$OTHER_TARS_KEY" in wrong.stderr and "tars_wrong" not in wrong.stderr
    listed = tars_env(tmp_path, config, env, "models")
    assert listed.returncode == 0, listed.stderr
    assert "other" in listed.stdout and "answers" in listed.stdout
    doctor = tars_env(tmp_path, config, env, "doctor")
    model_line = next(line for line in doctor.stdout.splitlines() if " model " in line)
    assert model_line.startswith("ok") and "profile other" in model_line, doctor.stdout


def test_ask_on_a_dead_server_uses_the_fallback(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[llm]\nmodel = "gone"\nfallback = "local"\nollama_url = ""\nmax_tokens = 16\n'
        f'[node]\nendpoint = "off"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        + profile_toml("gone", f"http://127.0.0.1:{free_port()}/v1"),  # local: [llm] here
        encoding="utf-8",
    )
    asked = tars_env(tmp_path, config, {}, "ask", "Say hi.")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() and "fallback" in asked.stderr and "refused" in asked.stderr


def tars_env(root: Path, config: Path, env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # tars() passes the environment on (without TARS_*)
    try:
        return tars(root, config, *args, timeout=120)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_sse_of_a_backend_reply_is_well_formed(fronting: Server) -> None:
    with httpx.Client(base_url=fronting.url, headers=fronting.headers(), timeout=60) as http:
        resp = http.post(
            "/v1/chat/completions",
            json={"model": "gpu", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        )
        events = collect_sse(resp)
    assert events and events[-1]["choices"][0]["finish_reason"] in ("stop", "length")  # type: ignore[index]

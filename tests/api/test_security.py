"""Keys on every bind (loopback too), the key commands, the Host allow-list against DNS
rebinding, CORS closed unless configured, and the refusal to bind beyond loopback
without a key. A server of its own (node off) with one allowed web origin."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Server, start_server, tars

pytestmark = pytest.mark.slow
ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("api-security"), extra=f'cors_origins = ["{ORIGIN}"]\n'
    )
    try:
        yield srv
    finally:
        srv.stop()


PROTECTED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/chat/query"),
    ("GET", "/conversations"),
    ("GET", "/conversations/1"),
    ("GET", "/memory/search?q=x"),
    ("POST", "/memory"),
    ("DELETE", "/memory/f123"),
    ("GET", "/projects"),
]


@pytest.mark.parametrize("key", [None, "tars-not-a-key", "Basic dXNlcjpwYXNz"])
def test_every_endpoint_but_health_needs_a_valid_key(guarded: Server, key: str | None) -> None:
    headers = {} if key is None else {"Authorization": key if " " in key else f"Bearer {key}"}
    with httpx.Client(base_url=guarded.url, headers=headers) as http:
        for method, path in PROTECTED:
            r = http.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] == "invalid_api_key"
        health = http.get("/health").json()
        assert health["status"] == "ok" and "pc1" not in health  # figures only with a key


def test_key_commands_new_list_revoke_and_a_revoked_key_stops_at_once(guarded: Server) -> None:
    made = tars(guarded.root, guarded.config_path, "api-key", "new", "editor")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("tars-") and "shown only this once" in made.stderr
    stored = Path(guarded.root / "keys.json").read_text()
    assert key not in stored and "sha256:" in stored  # only its hash is kept
    listed = tars(guarded.root, guarded.config_path, "api-key", "list")
    assert "editor" in listed.stdout and key not in listed.stdout
    again = tars(guarded.root, guarded.config_path, "api-key", "new", "editor")
    assert again.returncode != 0 and "exists" in again.stderr

    with guarded.client(key) as http:
        assert http.get("/v1/models").status_code == 200
        revoked = tars(guarded.root, guarded.config_path, "api-key", "revoke", "editor")
        assert revoked.returncode == 0, revoked.stderr
        r = http.get("/v1/models")
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert tars(guarded.root, guarded.config_path, "api-key", "revoke", "editor").returncode == 1


def test_foreign_host_headers_are_refused(guarded: Server) -> None:
    with guarded.client() as http:
        for host in ("evil.example", f"evil.example:{guarded.port}", "127.0.0.1.nip.io"):
            r = http.get("/v1/models", headers={"Host": host})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", host
            assert http.get("/health", headers={"Host": host}).status_code == 400
        for host in (f"localhost:{guarded.port}", f"127.0.0.1:{guarded.port}", "localhost"):
            assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_cors_only_for_configured_origins(guarded: Server, server: Server) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    with guarded.client() as http:
        ok = http.options("/v1/chat/completions", headers={"Origin": ORIGIN, **preflight})
        assert ok.status_code == 200
        assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
        bad = http.options(
            "/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight}
        )
        assert "Access-Control-Allow-Origin" not in bad.headers
        plain = http.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in plain.headers
    # By default (the shared server) CORS is closed: no origin is ever allowed.
    with server.client() as http:
        r = http.options("/v1/chat/completions", headers={"Origin": ORIGIN, **preflight})
        assert "Access-Control-Allow-Origin" not in r.headers
        r = http.get("/v1/models", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_docs_are_served(guarded: Server) -> None:
    assert "swagger" in httpx.get(f"{guarded.url}/docs").text.lower()
    spec = httpx.get(f"{guarded.url}/openapi.json").json()
    assert {"/v1/chat/completions", "/chat/query", "/memory/{memory_id}", "/health"} <= set(
        spec["paths"]
    )


def test_beyond_loopback_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[node]\nendpoint = "off"\n',
        encoding="utf-8",
    )
    r = tars(tmp_path, config, "serve", "--bind", "0.0.0.0", "--port", "0", timeout=30)
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0" in r.stderr and "tars api-key new" in r.stderr
    bad = tars(tmp_path, config, "serve", "--bind", "not a host", timeout=30)
    assert bad.returncode != 0


def test_the_keys_file_keeps_no_secret(guarded: Server) -> None:
    data = json.loads((guarded.root / "keys.json").read_text())
    assert guarded.key not in json.dumps(data)
    assert (guarded.root / "keys.json").stat().st_mode & 0o077 == 0


def test_doctor_checks_keys_and_the_port(guarded: Server, tmp_path: Path) -> None:
    from tars_api.probe import probe_api
    from tars_core.config import load_config

    text = guarded.config_path.read_text() + f"port = {guarded.port}\n"
    (tmp_path / "running.toml").write_text(text, encoding="utf-8")
    doctor = tars(guarded.root, tmp_path / "running.toml", "doctor")
    line = next(x for x in doctor.stdout.splitlines() if x.split()[1:2] == ["api"])
    assert line.startswith("ok ") and "1 API key" in line
    assert f"`tars serve` answers at http://127.0.0.1:{guarded.port} (ok)" in line

    with socket.socket() as taken:  # a port held by something that is not tars
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        keys = tmp_path / "none.json"
        (tmp_path / "other.toml").write_text(
            f'[api]\nport = {port}\nkeys_file = "{keys}"\n', encoding="utf-8"
        )
        probe = probe_api(load_config(tmp_path / "other.toml", env={}))
    assert not probe.ok
    assert "no API keys yet" in probe.detail and "taken by another program" in probe.detail

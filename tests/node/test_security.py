"""CURVE: keygen, the authorised client served, strangers and plaintext ignored; and the
daemon refusing to listen beyond loopback without encryption."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from node_daemon.client import BlockingNodeClient, NodeClient, NodeUnavailable
from tests.node.conftest import node_env, spawn, wait_ready


def tars_node(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_daemon", *args],
        env=node_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
async def test_curve_serves_only_authorised_clients(tmp_path: Path) -> None:
    data, home = tmp_path / "node", tmp_path / "home"
    made = tars_node(home, "keygen", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    keys = data / "keys"
    assert "server.key" in made.stdout and "client.key_secret" in made.stdout
    assert mode(keys / "server.key_secret") == mode(keys / "client.key_secret") == 0o600
    assert mode(keys) == 0o700 and (data / "authorized_keys" / "client.key").is_file()
    again = tars_node(home, "keygen", "--data-dir", str(data))
    assert again.returncode == 2 and "--force" in again.stderr
    server_before = (keys / "server.key").read_bytes()
    laptop = tars_node(home, "keygen", "--data-dir", str(data), "--client", "laptop")
    assert laptop.returncode == 0 and (keys / "server.key").read_bytes() == server_before
    assert len(list((data / "authorized_keys").glob("*.key"))) == 2

    daemon = spawn(data, home=home, args=("--curve",))
    try:
        good = {
            "server_public_key": str(keys / "server.key"),
            "client_secret_key_file": str(keys / "client.key_secret"),
        }
        wait_ready(daemon, **good)
        async with NodeClient(daemon.endpoint, timeout_s=10.0, **good) as client:  # type: ignore[arg-type]
            assert client.curve and (await client.health())["curve"] is True
            await client.upsert([{"id": "secret", "text": "The safe's code is 4711."}])
            hits = (await client.search("what opens the safe?", k=1))["hits"]
            assert hits[0]["id"] == "secret"
        with BlockingNodeClient(
            daemon.endpoint,
            server_public_key=keys / "server.key",
            client_secret_key_file=keys / "laptop.key_secret",
        ) as c:
            assert c.health()["ok"]

        rogue_dir = tmp_path / "rogue"
        rogue_dir.mkdir()
        _, rogue_secret = zmq.auth.create_certificates(rogue_dir, "rogue")
        strangers = [
            NodeClient(
                daemon.endpoint,
                server_public_key=keys / "server.key",
                client_secret_key_file=rogue_secret,
                timeout_s=1.0,
                retries=2,
            ),
            NodeClient(daemon.endpoint, timeout_s=1.0, retries=2),  # plaintext
        ]
        for stranger in strangers:
            with pytest.raises(NodeUnavailable):
                await stranger.health()
            stranger.close()

        status = tars_node(
            home,
            "status",
            daemon.endpoint,
            "--server-key",
            str(keys / "server.key"),
            "--client-key",
            str(keys / "client.key_secret"),
        )
        assert status.returncode == 0, status.stderr
        assert "curve on" in status.stdout and "ready" in status.stdout
        plain = tars_node(home, "status", daemon.endpoint, "--timeout", "0.5")
        assert plain.returncode == 1 and "did not answer" in plain.stderr
        assert "no CURVE keys" in plain.stderr
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-2000:]


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (("--bind", "tcp://0.0.0.0:*"), "", "refusing to listen on tcp://0.0.0.0:*"),
        ((), '[server]\nbind = "tcp://*:*"\n', "refusing to listen on tcp://*:*"),
        (("--curve",), "", "run `tars-node keygen` first"),
        ((), '[server]\nindex_type = "annoy"\n', "index_type"),
        ((), "[server]\nchunk_chars = 200\nchunk_overlap = 150\n", "chunk_overlap"),
        ((), '[server]\nembed_model = "/no/such/model"\n', "embed_model"),
        (("--bind", "nonsense"), "", "not a ZeroMQ endpoint"),
    ],
)
def test_serve_refuses_to_start_and_says_why(
    tmp_path: Path, args: tuple[str, ...], config: str, message: str
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config, encoding="utf-8")
    data = tmp_path / "node"
    result = tars_node(
        tmp_path / "home", "serve", "--data-dir", str(data), "--config", str(cfg), *args
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (data / "items.sqlite3").exists()


def test_insecure_bind_is_allowed_only_when_configured(tmp_path: Path) -> None:
    # allow_insecure = true gets past the check; a host that does not exist then fails
    # the bind (exit 3), so the test never listens on a real interface.
    cfg = tmp_path / "config.toml"
    cfg.write_text("[server]\nallow_insecure = true\n", encoding="utf-8")
    bind = "tcp://no-such-host.invalid:*"
    refused = tars_node(
        tmp_path / "home", "serve", "--data-dir", str(tmp_path / "node"), "--bind", bind
    )
    assert refused.returncode == 2 and "refusing" in refused.stderr
    result = tars_node(
        tmp_path / "home",
        "serve",
        "--data-dir",
        str(tmp_path / "node"),
        "--config",
        str(cfg),
        "--bind",
        bind,
        timeout=30,
    )
    assert result.returncode == 3, result.stderr
    assert "refusing" not in result.stderr and "cannot listen" in result.stderr


def test_status_of_a_node_that_is_not_there(tmp_path: Path) -> None:
    probe: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)  # now nothing listens there
    result = tars_node(tmp_path / "home", "status", f"tcp://127.0.0.1:{port}", "--timeout", "0.3")
    assert result.returncode == 1 and "did not answer 'stats'" in result.stderr

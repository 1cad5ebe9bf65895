"""CURVE keys (``tars-node keygen``) and the rule about where a daemon may listen.

Standard library and zmq only.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

SERVER = "server"


@dataclass(frozen=True)
class KeyFiles:
    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    authorized: Path


def generate(
    keys_dir: Path, authorized_dir: Path, *, client: str = "client", force: bool = False
) -> KeyFiles:
    """The server pair (unless it exists) and a client pair, authorised at once.

    Secret files are created 0600 inside 0700 directories. An existing server key
    is kept (clients already trust it) unless ``force``; a client name that exists
    is an error unless ``force``.
    """
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    if not client.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"client name {client!r}: use letters, digits, - and _")
    if client == SERVER:
        raise ValueError("the client cannot be called 'server'")
    old_umask = os.umask(0o077)
    try:
        for d in (keys_dir, authorized_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        server_pub, server_sec = keys_dir / f"{SERVER}.key", keys_dir / f"{SERVER}.key_secret"
        if force or not server_sec.exists():
            zmq.auth.create_certificates(keys_dir, SERVER)
        client_pub, client_sec = keys_dir / f"{client}.key", keys_dir / f"{client}.key_secret"
        if client_sec.exists() and not force:
            raise FileExistsError(
                f"{client_sec} exists; pick another --client name or pass --force"
            )
        zmq.auth.create_certificates(keys_dir, client)
        for secret in (server_sec, client_sec):
            secret.chmod(0o600)
        authorized = authorized_dir / f"{client}.key"
        shutil.copyfile(client_pub, authorized)
        authorized.chmod(0o644)
    finally:
        os.umask(old_umask)
    return KeyFiles(server_pub, server_sec, client_pub, client_sec, authorized)


def load_server_secret(keys_dir: Path) -> tuple[bytes, bytes]:
    """(public, secret) of the server; a clear error when keygen has not been run."""
    path = keys_dir / f"{SERVER}.key_secret"
    if not path.is_file():
        raise FileNotFoundError(
            f"curve = true but there is no server key at {path}; run `tars-node keygen` first"
        )
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"{path} holds no secret key")
    return public, secret


def authorized_count(authorized_dir: Path) -> int:
    return len(list(authorized_dir.glob("*.key"))) if authorized_dir.is_dir() else 0


def endpoint_host(endpoint: str) -> tuple[str, str]:
    """(transport, host) of a ZeroMQ endpoint like tcp://127.0.0.1:5555."""
    transport, sep, rest = endpoint.partition("://")
    if not sep:
        raise ValueError(f"{endpoint!r} is not a ZeroMQ endpoint (like tcp://127.0.0.1:5555)")
    if transport != "tcp":
        return transport, rest
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if ";" in host:  # tcp://src;dst form: the bind address is the last part
        host = host.rsplit(";", 1)[1]
    return transport, host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    """True only when every address the endpoint can mean is loopback (or ipc/inproc)."""
    transport, host = endpoint_host(endpoint)
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp" or host in ("*", "", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # an interface name or an unknown host: assume it faces the network
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind_refusal(bind: str, *, curve: bool, allow_insecure: bool) -> str | None:
    """Why the daemon must not listen on ``bind`` as configured, or None when it may."""
    if curve or allow_insecure or is_loopback(bind):
        return None
    return (
        f"refusing to listen on {bind} without encryption: anyone who can reach this "
        "machine could read and change your memories. Run `tars-node keygen` and set "
        "curve = true in [server] (see docs/two-machines.md), bind to tcp://127.0.0.1, "
        "or set allow_insecure = true if this network is yours alone."
    )

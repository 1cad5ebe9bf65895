"""What `tars doctor` says about the API: keys configured, and whether the port is free
or a `tars serve` answers on it. Standard library only (no web stack loaded)."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass

from tars_api.keys import KeyFileError, KeyStore, keys_path
from tars_core.config import Config

CONNECT_TIMEOUT_S = 0.5
HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ApiProbe:
    ok: bool
    detail: str


def _host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind


def _port_state(host: str, port: int) -> str:
    """free, tars (a tars serve answered /health, with its status) or taken."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError:
        return "free"
    conn = http.client.HTTPConnection(host, port, timeout=HEALTH_TIMEOUT_S)
    try:
        conn.request("GET", "/health", headers={"Host": "localhost"})
        body = json.loads(conn.getresponse().read(65536))
    except (OSError, ValueError, http.client.HTTPException):
        return "taken"
    finally:
        conn.close()
    if isinstance(body, dict) and body.get("service") == "tars":
        return f"tars:{body.get('status')}"
    return "taken"


def probe_api(config: Config) -> ApiProbe:
    api = config.api
    path = keys_path(config)
    try:
        count = KeyStore(path).count()
    except KeyFileError as exc:
        return ApiProbe(False, str(exc))
    keys = f"{count} API key{'s' if count != 1 else ''} ({path})"
    if count == 0:
        keys = "no API keys yet: make one with `tars api-key new NAME`"
    state = _port_state(_host(api.bind), api.port)
    where = f"{_host(api.bind)}:{api.port}"
    if state == "free":
        port = f"port {api.port} free for `tars serve`"
    elif state.startswith("tars:"):
        port = f"`tars serve` answers at http://{where} ({state[5:]})"
    else:
        port = f"port {api.port} is taken by another program: set [api] port"
    problems = count == 0 or state == "taken"
    if count == 0 and api.bind not in ("127.0.0.1", "localhost", "::1"):
        port += f"; bind {api.bind} with no key: `tars serve` would refuse to start"
    return ApiProbe(not problems, f"{keys}; {port}")


__all__ = ["ApiProbe", "probe_api"]

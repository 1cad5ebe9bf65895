"""Who may talk to the server: the bind rule, the Host allow-list, WebSocket origins.

A web page in the user's own browser can reach 127.0.0.1, and DNS rebinding lets it
do so under its own host name, so loopback earns no trust: every endpoint but
``/health`` wants an API key (see :mod:`tars_api.auth`), and a request whose Host
header is not a name of this machine is refused before routing. The names of this
machine are localhost, the loopback addresses, the bind address and, when bound to
every interface, the machine's own addresses and host name; an attacker's domain
is never one of them. Browsers send ``Origin`` on WebSockets (which CORS does not
cover), so a WebSocket from an origin not in ``[api] cors_origins`` is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import psutil
from starlette.types import ASGIApp, Receive, Scope, Send

from tars_api.errors import ApiError, deny_websocket, send_error
from tars_core.config import Config

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESSES = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_problem(config: Config, key_count: int) -> str | None:
    """Why `tars serve` must not start with this bind, or None."""
    bind = config.api.bind
    if is_loopback(bind) or key_count > 0:
        return None
    return (
        f"refusing to listen on {bind}: beyond loopback the API needs a key, and none is "
        "configured. Create one with `tars api-key new NAME`, or bind to 127.0.0.1"
    )


def allowed_hosts(config: Config) -> frozenset[str] | None:
    """The Host names accepted (lower case, no port); None accepts any."""
    extra = [h.strip().lower() for h in config.api.allowed_hosts]
    if "*" in extra:
        return None
    names = {*LOOPBACK_NAMES, *extra}
    bind = config.api.bind.lower()
    if bind in ANY_ADDRESSES:
        names.update(_own_names())
    else:
        names.add(bind)
    return frozenset(n for n in names if n)


def _own_names() -> Iterable[str]:
    hostname = socket.gethostname().lower()
    yield from (hostname, f"{hostname}.local", socket.getfqdn().lower())
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                yield addr.address.split("%")[0].lower()


def host_of(header: str) -> str:
    """``example.com:8277`` -> ``example.com``; ``[::1]:8277`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        return header.rsplit(":", 1)[0]
    return header.rstrip(".")


class HostCheck:
    """ASGI middleware: the Host allow-list for HTTP and WebSockets, and the WebSocket
    Origin check."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None, origins: Iterable[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        host = host_of(headers.get(b"host", b"").decode("latin-1"))
        problem = None
        if self.hosts is not None and host not in self.hosts:
            problem = (
                f"Host {host!r} is not a name of this server; add it to [api] allowed_hosts "
                "if it is yours (this check stops DNS rebinding)"
            )
        elif scope["type"] == "websocket" and b"origin" in headers:
            origin = headers[b"origin"].decode("latin-1").rstrip("/").lower()
            if "*" not in self.origins and origin not in self.origins:
                problem = f"WebSocket origin {origin!r} is not in [api] cors_origins"
        if problem is None:
            await self.app(scope, receive, send)
            return
        code = "invalid_host" if problem.startswith("Host") else "invalid_origin"
        error = ApiError(400 if code == "invalid_host" else 403, problem, code=code)
        if scope["type"] == "websocket":
            await deny_websocket(scope, receive, send, error)
            return
        await send_error(send, error)


__all__ = ["HostCheck", "allowed_hosts", "bind_problem", "host_of", "is_loopback"]

"""`tars serve` and `tars api-key`: the command-line side of the API.

Only the standard library is imported at the top, so `tars api-key` answers at once;
`serve` imports the web stack when it runs. The listening socket is bound here,
before the app starts, so a taken port or a refused bind is reported plainly and
``--port 0`` prints the port it got.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import sys
import time
from pathlib import Path

from tars_api.keys import KeyFileError, KeyStore, keys_path
from tars_core.config import Config
from tars_core.settings.api import HOST_PATTERN

EXIT_REFUSED = 2
ORIGIN = re.compile(r"\*|https?://[^/\s]+")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_main(
    config: Config,
    *,
    bind: str | None = None,
    port: int | None = None,
    config_path: Path | None = None,
) -> int:
    api = config.api
    if bind is not None and not re.fullmatch(HOST_PATTERN[0], bind):
        print(f"tars serve: --bind: expected {HOST_PATTERN[1]}, found {bind!r}", file=sys.stderr)
        return EXIT_REFUSED
    if port is not None and not 0 <= port <= 65535:
        print(f"tars serve: --port: expected 0 to 65535, found {port}", file=sys.stderr)
        return EXIT_REFUSED
    config = dataclasses.replace(
        config,
        api=dataclasses.replace(
            api, bind=bind or api.bind, port=api.port if port is None else port
        ),
    )
    api = config.api
    bad = [o for o in api.cors_origins if not ORIGIN.fullmatch(o)]
    if bad:
        print(
            f"tars serve: [api] cors_origins: expected origins like http://localhost:3000 "
            f"or *, found {bad[0]!r}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    try:
        count = KeyStore(keys_path(config)).count()
    except KeyFileError as exc:
        print(f"tars serve: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    from tars_api.security import bind_problem

    problem = bind_problem(config, count)
    if problem:
        print(f"tars serve: {problem}.", file=sys.stderr)
        return EXIT_REFUSED
    try:
        sock = _bind(api.bind, api.port)
    except OSError as exc:
        print(
            f"tars serve: cannot listen on {api.bind}:{api.port}: {exc.strerror or exc} "
            "(another program has the port? set [api] port or pass --port)",
            file=sys.stderr,
        )
        return 1
    actual = sock.getsockname()[1]
    url = f"http://{_url_host(api.bind)}:{actual}"
    print(f"TARS API on {url}/v1 · docs {url}/docs · health {url}/health", flush=True)
    if count == 0:
        print(
            "tars serve: no API keys yet, so every request but /health is refused; "
            "make one with `tars api-key new NAME`",
            file=sys.stderr,
            flush=True,
        )
    import uvicorn

    from tars_api.app import make_api

    logging.basicConfig(level=api.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    server = uvicorn.Server(
        uvicorn.Config(
            make_api(config, config_path=config_path),
            loop="asyncio",
            lifespan="on",
            log_level=api.log_level,
            ws_max_size=api.max_body_bytes,
            timeout_graceful_shutdown=5,
        )
    )
    server.run(sockets=[sock])
    return 0


def api_key_main(config: Config, action: str, name: str | None) -> int:
    store = KeyStore(keys_path(config))
    try:
        if action == "list":
            keys = store.entries()
            if not keys:
                print("No API keys. Make one with `tars api-key new NAME`.")
            for k in keys:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at))
                print(f"{k.name:<24} {k.hint}…  created {when}")
            return 0
        if not name:
            print(f"tars api-key {action}: give the key's NAME", file=sys.stderr)
            return EXIT_REFUSED
        if action == "new":
            key = store.new(name)
            print(key)
            print(
                f"Key {name!r} made; it is shown only this once. Send it as "
                "`Authorization: Bearer KEY` (the OpenAI clients' api_key).",
                file=sys.stderr,
            )
            return 0
        store.revoke(name)
        print(f"Key {name!r} revoked; a running `tars serve` refuses it from now on.")
        return 0
    except KeyFileError as exc:
        print(f"tars api-key: {exc}", file=sys.stderr)
        return 1


__all__ = ["api_key_main", "serve_main"]

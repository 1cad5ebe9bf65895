"""The `[api]` config section: `tars serve`, the local HTTP API. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting

# A host name or an IP address (v4 or v6), without a port.
HOST_PATTERN = (r"[A-Za-z0-9.\-]+|[0-9A-Fa-f:.]+", "an IP address or a host name, without a port")


@dataclass(frozen=True)
class ApiConfig:
    bind: str = setting(
        "127.0.0.1",
        "Where `tars serve` listens. Beyond loopback it refuses to start without an API key.",
        pattern=HOST_PATTERN,
    )
    port: int = setting(8277, "TCP port of `tars serve`.", min=1, max=65535)
    keys_file: str = setting(
        "", "API keys (hashes only; `tars api-key new NAME`); empty = data dir/api_keys.json."
    )
    max_concurrent: int = setting(
        1,
        "Replies generated at once. The model is one llama.cpp context, so keep 1: "
        "more only makes replies share it.",
        min=1,
        max=8,
    )
    queue_length: int = setting(
        32,
        "Replies waiting for the model (first come, first served); when full, new ones "
        "get 503 with Retry-After.",
        min=0,
        max=4096,
    )
    stream_batch_ms: float = setting(
        20.0,
        "Pieces made within this long travel in one streamed chunk (the first at once); "
        "0 = a chunk per piece. Fewer chunks leave more CPU to the model.",
        min=0.0,
        max=1000.0,
    )
    max_body_bytes: int = setting(
        1024 * 1024,
        "Largest request body (and WebSocket message); bigger ones get 413.",
        min=1024,
        max=64 * 1024 * 1024,
    )
    max_message_chars: int = setting(
        100_000,
        "Longest chat message accepted (characters); longer ones get 400.",
        min=1,
        max=10_000_000,
    )
    rate_limit_per_minute: int = setting(
        120, "Requests per minute per API key (0 = no limit); beyond it, 429.", min=0, max=1_000_000
    )
    rate_limit_burst: int = setting(
        30,
        "Requests a key may send at once before the per-minute rate applies.",
        min=1,
        max=100_000,
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "Web origins allowed to call the API from a browser, e.g. http://localhost:3000; "
        "empty = none (CORS closed).",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Host header values accepted besides localhost, 127.0.0.1, ::1 and the bind address "
        '(stops DNS rebinding); "*" accepts any.',
    )
    log_level: str = setting(
        "info", "Log level of the server.", choices=("debug", "info", "warning", "error")
    )

"""The `[node]` config section: how PC1 reaches the PC2 daemon. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting


@dataclass(frozen=True)
class NodeConfig:
    endpoint: str = setting(
        "auto",
        "PC2 daemon, e.g. tcp://pc2.lan:5555; auto = start one locally on loopback; "
        "off = no node (chat only, no long-term memory).",
        pattern=(r"auto|off|(tcp|ipc)://\S+", "auto, off, or an endpoint like tcp://HOST:PORT"),
    )
    server_public_key: str = setting("", "Remote node: the server's public key file (CURVE).")
    client_secret_key: str = setting("", "Remote node: this machine's client.key_secret file.")
    timeout_s: float = setting(5.0, "Per-request timeout.", min=0.05, max=600.0)
    retries: int = setting(
        3, "Tries for idempotent requests before the node is unreachable.", min=1, max=20
    )

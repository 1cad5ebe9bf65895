"""How a model server failed, sorted the way the user needs it.

Transient failures (nothing listens, refused, timed out, 5xx, the stream cut off)
are retried once and then handed to the fallback profile; the others say what to
change: the key setting (401/403), the model name (404, with the models the server
has), or nothing the user can fix (a malformed stream, kept up to where it broke).
"""

from __future__ import annotations

from typing import Literal

from tars_assistant.llm import ModelError

Kind = Literal[
    "unreachable", "timeout", "server", "closed", "auth", "model", "malformed", "request"
]
TRANSIENT: tuple[Kind, ...] = ("unreachable", "timeout", "server", "closed")


class BackendError(ModelError):
    """A model server's failure; ``transient`` ones may succeed on retry or elsewhere."""

    def __init__(self, message: str, *, kind: Kind, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: Kind = kind
        self.status = status

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT


__all__ = ["TRANSIENT", "BackendError", "Kind"]

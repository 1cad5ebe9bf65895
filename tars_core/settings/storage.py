"""The `[storage]` config section: where conversations live. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_core.schema import setting


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = setting("", "Conversations and history; empty = the user's data directory.")

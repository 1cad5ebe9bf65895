"""The `[memory]` config section (long-term memory on PC1). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from tars_tui.settings_schema import setting


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = setting(True, "Remember exchanges and recall them before each reply.")
    context_tokens: int = setting(
        512, "Most tokens of recalled memories put in front of the model.", min=0, max=32768
    )
    recall_k: int = setting(6, "Memories retrieved per reply.", min=0, max=100)

"""Helpers for declaring config sections as frozen dataclasses.

Each section is a module of ``tars_core/settings/``; the loader in
``tars_core/config.py`` validates all of them the same way. Standard library
only, so every layer (the daemon included) can use it without the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


def setting(
    default: Any,
    doc: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[Any] | None = None,
    pattern: tuple[str, str] | None = None,
) -> Any:
    """A dataclass field carrying its documentation and its allowed values.

    ``pattern`` is (regular expression the whole string must match, how to say it).
    """
    meta: dict[str, Any] = {"doc": doc}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if choices is not None:
        meta["choices"] = tuple(choices)
    if pattern is not None:
        meta["pattern"] = pattern
    # Lists are declared as tuple[...] so the sections stay hashable and frozen.
    return dataclasses.field(default=default, metadata=meta)

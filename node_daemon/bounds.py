"""Bounds on a decoded request before anything looks at it closely. Standard library only.

msgpack decodes up to ~1000 levels of nesting, deeper than Python's recursion
limit: ``repr``, ``json.dumps`` or ``==`` on such a value raises RecursionError,
and a map may mix ``bytes`` and ``str`` keys (which do not sort). So a request is
walked once, without recursion, right after decoding (:func:`tree_problem`), and
error messages show values only through :func:`describe` and :func:`names`,
which never recurse and never print more than a few dozen characters.
"""

from __future__ import annotations

from typing import Any, Final

MAX_DEPTH: Final = 32  # containers within containers, the envelope map being level 1
MAX_SHOWN_CHARS: Final = 60
MAX_MESSAGE_CHARS: Final = 1000  # an error message, whatever it quotes


def clip(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """``value`` for an error message: short, and safe for any decoded value."""
    kind = type(value).__name__
    if isinstance(value, str):
        shown = clip(repr(value[: MAX_SHOWN_CHARS + 2]))
    elif isinstance(value, bytes | bytearray):
        shown = repr(bytes(value)) if len(value) <= 16 else f"{len(value)} bytes"
    elif isinstance(value, list | tuple):
        shown = f"a list of {len(value)}"
    elif isinstance(value, dict):
        shown = f"a map of {len(value)}"
    elif value is None or isinstance(value, bool | float):
        shown = repr(value)
    elif isinstance(value, int):
        shown = clip(str(value)) if value.bit_length() < 200 else "a huge integer"
    else:
        shown = "a value"
    return f"{shown} ({kind})"


def names(keys: Any, most: int = 5) -> str:
    """Field names for an error message, sorted, whatever their types."""
    shown = sorted(clip(k if isinstance(k, str) else describe(k), 40) for k in keys)
    more = f" and {len(shown) - most} more" if len(shown) > most else ""
    return ", ".join(repr(n) for n in shown[:most]) + more


_PLAIN: Final = frozenset({str, bytes, int, float, bool, type(None)})


def tree_problem(root: Any, where: str = "", max_depth: int = MAX_DEPTH) -> str | None:
    """What makes ``root`` unsafe to validate (too deep, a map key that is not a
    string, an extension type such as msgpack's timestamp, which decodes without
    ``ext_hook``), naming where (``where`` is root's name, "" for the envelope);
    None when it is fine. Iterative, so any depth is safe; paths are spelled out
    only near the top, where they cost little and say the most."""
    stack: list[tuple[Any, int, str]] = [(root, 1, where)]
    while stack:
        value, depth, at = stack.pop()
        if depth > max_depth:
            return f"{at or 'request'}: nested more than {max_depth} levels deep"
        if isinstance(value, dict):
            for key, item in value.items():
                if type(key) is not str:
                    return f"{at or 'request'}: map keys must be strings, found {describe(key)}"
                if type(item) in _PLAIN:
                    continue
                name = clip(key, 40)
                inner = (f"{at}.{name}" if at else name) if depth < 6 else at
                if not isinstance(item, dict | list):
                    return f"{inner}: msgpack extension types are not allowed"
                stack.append((item, depth + 1, inner))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if type(item) in _PLAIN:
                    continue
                inner = f"{at}[{i}]" if depth < 6 else at
                if not isinstance(item, dict | list):
                    return f"{inner}: msgpack extension types are not allowed"
                stack.append((item, depth + 1, inner))
        elif type(value) not in _PLAIN:
            return f"{at or 'request'}: msgpack extension types are not allowed"
    return None


__all__ = ["MAX_DEPTH", "MAX_MESSAGE_CHARS", "clip", "describe", "names", "tree_problem"]

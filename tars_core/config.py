"""Configuration: the schema, its layers, and validation with clear errors.

Layers, later wins: the defaults declared below (documented in the repo's
``config.toml``), the user's file (``platformdirs.user_config_path("tars")/config.toml``,
or ``--config PATH`` instead), then ``TARS_SECTION__KEY`` environment variables.
Everything is validated into frozen dataclasses before anything starts; a bad
value raises :class:`ConfigError` naming the file, the key, what was expected and
what was found.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from tars_core.settings.api import ApiConfig
from tars_core.settings.llm import LLMConfig
from tars_core.settings.memory import MemoryConfig
from tars_core.settings.node import NodeConfig
from tars_core.settings.server import ServerConfig
from tars_core.settings.storage import StorageConfig
from tars_core.settings.tts import TTSConfig
from tars_core.settings.ui import UIConfig
from tars_core.settings.voice import VoiceConfig

ENV_PREFIX = "TARS_"
DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class Config:
    llm: LLMConfig = field(default_factory=LLMConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    # "section.key" -> where the value came from; not part of equality.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def data_dir(self) -> Path:
        if self.storage.data_dir:
            return Path(self.storage.data_dir).expanduser()
        return platformdirs.user_data_path("tars")


class ConfigError(Exception):
    """A config value that cannot be used; the message is meant for the user."""

    def __init__(self, source: str, key: str, expected: str, found: str) -> None:
        self.source, self.key, self.expected, self.found = source, key, expected, found
        super().__init__(f"{source}: {key}: expected {expected}, found {found}")


def user_config_path() -> Path:
    return platformdirs.user_config_path("tars") / "config.toml"


def sections() -> dict[str, type[Any]]:
    """Section name -> dataclass, in declaration order (the registry of config keys)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "sources"}


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the effective config. ``path`` replaces the user's file."""
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {name: {} for name in sections()}
    sources: dict[str, str] = {}

    file = path if path is not None else user_config_path()
    if path is not None and not file.is_file():
        raise ConfigError(str(file), "(file)", "a readable TOML file", "no such file")
    if file.is_file():
        for section, key, value in _read_toml(file):
            values[section][key] = value
            sources[f"{section}.{key}"] = str(file)

    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, key = _split_env_var(var)
        values[section][key] = _parse_env_value(var, section, key, env[var])
        sources[f"{section}.{key}"] = f"env {var}"

    built = {
        name: _build_section(name, cls, values[name], sources) for name, cls in sections().items()
    }
    return Config(**built, sources=sources)


def effective_items(config: Config) -> list[tuple[str, Any, str]]:
    """(section.key, value, source) for every key, for `tars config`."""
    rows = []
    for name in sections():
        section = getattr(config, name)
        for f in dataclasses.fields(section):
            key = f"{name}.{f.name}"
            rows.append((key, getattr(section, f.name), config.sources.get(key, DEFAULT_SOURCE)))
    return rows


def render_template() -> str:
    """The documented default config.toml, generated from the schema."""
    out = [
        "# TARS configuration: every key with its default.",
        "# Copy the keys you want to change to your own file:",
        "#   ~/.config/tars/config.toml  (or pass --config PATH)",
        "# Environment variables override both: TARS_SECTION__KEY, e.g. TARS_LLM__N_CTX=8192",
        "",
    ]
    for name, cls in sections().items():
        out.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            doc = f.metadata.get("doc", "")
            allowed = _describe_allowed(f)
            out.append(f"# {doc}" + (f" ({allowed})" if allowed else ""))
            out.append(f"{f.name} = {toml_value(f.default)}")
        out.append("")
    return "\n".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# -- internals ---------------------------------------------------------------


def _read_toml(file: Path) -> list[tuple[str, str, Any]]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), "(syntax)", "valid TOML", str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), "(file)", "a readable UTF-8 file", str(exc)) from None
    known = sections()
    found = []
    for section, table in data.items():
        if section not in known:
            raise ConfigError(
                str(file),
                f"[{section}]",
                f"one of the sections {', '.join(known)}",
                "an unknown section",
            )
        if not isinstance(table, dict):
            raise ConfigError(str(file), section, "a [section] table", _describe(table))
        names = {f.name for f in dataclasses.fields(known[section])}
        for key, value in table.items():
            if key not in names:
                raise ConfigError(
                    str(file),
                    f"[{section}] {key}",
                    f"one of the keys {', '.join(sorted(names))}",
                    "an unknown key",
                )
            found.append((section, key, value))
    return found


def _split_env_var(var: str) -> tuple[str, str]:
    section, _, key = var[len(ENV_PREFIX) :].lower().partition("__")
    known = sections()
    if section not in known:
        raise ConfigError(
            f"environment {var}",
            section,
            f"one of the sections {', '.join(known)}",
            "an unknown section",
        )
    if key not in {f.name for f in dataclasses.fields(known[section])}:
        raise ConfigError(
            f"environment {var}", f"[{section}] {key}", "a known key", "an unknown key"
        )
    return section, key


def _parse_env_value(var: str, section: str, key: str, raw: str) -> Any:
    kind = typing.get_type_hints(sections()[section])[key]
    where = f"environment {var}"
    if kind is str:
        return raw
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(where, f"[{section}] {key}", "true or false", repr(raw))
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(where, f"[{section}] {key}", _type_name(kind), repr(raw)) from None


def _build_section(
    name: str, cls: type[Any], given: dict[str, Any], sources: Mapping[str, str]
) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in given:
            continue
        value = given[f.name]
        where = sources.get(f"{name}.{f.name}", DEFAULT_SOURCE)
        kwargs[f.name] = _check_value(where, f"[{name}] {f.name}", hints[f.name], f, value)
    return cls(**kwargs)


def _check_value(where: str, key: str, kind: Any, f: dataclasses.Field[Any], value: Any) -> Any:
    expected = _type_name(kind)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    elif typing.get_origin(kind) is tuple:
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        ok = isinstance(value, list) and all(isinstance(v, item) for v in value)
        value = tuple(value) if ok else value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {kind!r} for {key}")
    if not ok:
        raise ConfigError(where, key, expected, _describe(value))
    allowed = _describe_allowed(f)
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(where, key, f"{expected} {allowed}", _describe(value))
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(where, key, allowed, _describe(value))
    pattern = f.metadata.get("pattern")
    if pattern is not None and not re.fullmatch(pattern[0], value):
        raise ConfigError(where, key, pattern[1], _describe(value))
    return value


def _describe_allowed(f: dataclasses.Field[Any]) -> str:
    lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
    if "pattern" in f.metadata:
        return str(f.metadata["pattern"][1])
    if choices is not None:
        return "one of " + ", ".join(repr(c) for c in choices)
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f"at least {lo}"
    if hi is not None:
        return f"at most {hi}"
    return ""


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "a list of " + _type_name(typing.get_args(kind)[0]) + "s"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(kind, str(kind))


def _describe(value: Any) -> str:
    kinds = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "table",
    }
    name = kinds.get(type(value), type(value).__name__)
    return f"{value!r} ({name})"


__all__ = [
    "Config",
    "ConfigError",
    "LLMConfig",
    "NodeConfig",
    "ServerConfig",
    "StorageConfig",
    "TTSConfig",
    "UIConfig",
    "VoiceConfig",
    "effective_items",
    "load_config",
    "render_template",
    "sections",
    "user_config_path",
]

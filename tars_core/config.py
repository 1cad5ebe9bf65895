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
from tars_core.settings.models import DEFAULT_PROFILE, ModelProfile, llm_keys_for, profile_keys
from tars_core.settings.node import NodeConfig
from tars_core.settings.server import ServerConfig
from tars_core.settings.storage import StorageConfig
from tars_core.settings.tts import TTSConfig
from tars_core.settings.ui import UIConfig
from tars_core.settings.voice import VoiceConfig

ENV_PREFIX = "TARS_"
DEFAULT_SOURCE = "default"
PROFILES_SECTION = "models"
PROFILE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
DISCOVERED_PREFIX = "ollama:"  # profiles found at run time (tars_assistant/profiles.py)


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
    # The [models.NAME] profiles, by name (tars_core/settings/models.py).
    models: Mapping[str, ModelProfile] = field(default_factory=dict)
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
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(Config)
        if f.name not in ("sources", PROFILES_SECTION)
    }


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the effective config. ``path`` replaces the user's file."""
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {name: {} for name in sections()}
    sources: dict[str, str] = {}
    tables: dict[str, dict[str, Any]] = {}

    file = path if path is not None else user_config_path()
    if path is not None and not file.is_file():
        raise ConfigError(str(file), "(file)", "a readable TOML file", "no such file")
    if file.is_file():
        for section, key, value in _read_toml(file):
            if section.startswith(f"{PROFILES_SECTION}."):
                tables.setdefault(section.partition(".")[2], {})[key] = value
            else:
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
    profiles = {
        name: _build_profile(name, table, built["llm"], sources) for name, table in tables.items()
    }
    _check_routing(built["llm"], profiles, sources)
    return Config(**built, models=profiles, sources=sources)


def effective_items(config: Config) -> list[tuple[str, Any, str]]:
    """(section.key, value, source) for every key, for `tars config`."""
    rows = []
    for name in sections():
        section = getattr(config, name)
        for f in dataclasses.fields(section):
            key = f"{name}.{f.name}"
            rows.append((key, getattr(section, f.name), config.sources.get(key, DEFAULT_SOURCE)))
    for name, profile in config.models.items():
        prefix = f"{PROFILES_SECTION}.{name}"
        for key in sorted(k for k in config.sources if k.startswith(f"{prefix}.")):
            field_name = key.rpartition(".")[2]
            value = getattr(profile, field_name, None)
            if value is None:
                value = getattr(profile.llm, field_name)
            rows.append((key, value, config.sources[key]))
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
    out += _profiles_template()
    return "\n".join(out)


def _profiles_template() -> list[str]:
    out = [
        '# Model profiles: [llm] model = "NAME" picks one, /model NAME switches at run time.',
        '# backend = "llama.cpp" takes model_path and any [llm] key; backend = "openai"',
        "# talks to any OpenAI-compatible server. Ollama's models appear by themselves as",
        "# ollama:NAME when it answers at [llm] ollama_url. Keys of a profile:",
    ]
    for f in profile_keys().values():
        allowed = _describe_allowed(f)
        default = toml_value(f.default)
        out.append(
            f"#   {f.name} = {default}: {f.metadata['doc']}" + (f" ({allowed})" if allowed else "")
        )
    out += [
        "# For example:",
        "# [models.pc2]",
        '# backend = "openai"',
        '# base_url = "http://pc2.lan:8080/v1"',
        "# [models.cloud]",
        '# backend = "openai"',
        '# base_url = "https://api.example.com/v1"',
        '# model = "big-model"',
        '# api_key_env = "EXAMPLE_API_KEY"',
        "# send_memory = false",
        "",
    ]
    return out


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
        if section == PROFILES_SECTION:
            found += _read_profiles(file, table)
            continue
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


def _read_profiles(file: Path, tables: Any) -> list[tuple[str, str, Any]]:
    """``[models.NAME]`` tables as (``models.NAME``, key, value); checked when built."""
    if not isinstance(tables, dict):
        raise ConfigError(str(file), PROFILES_SECTION, "[models.NAME] tables", _describe(tables))
    found = []
    for name, table in tables.items():
        if not re.fullmatch(PROFILE_NAME, name):
            raise ConfigError(
                str(file),
                f"[models.{name}]",
                "a profile name of letters, digits, '_', '.' or '-'",
                repr(name),
            )
        if not isinstance(table, dict):
            raise ConfigError(str(file), f"[models.{name}]", "a table of keys", _describe(table))
        found += [(f"{PROFILES_SECTION}.{name}", key, value) for key, value in table.items()]
    return found


def _build_profile(
    name: str, table: dict[str, Any], llm: LLMConfig, sources: Mapping[str, str]
) -> ModelProfile:
    own = profile_keys()
    where = sources.get(f"{PROFILES_SECTION}.{name}.backend") or next(
        (sources[k] for k in sources if k.startswith(f"{PROFILES_SECTION}.{name}.")),
        DEFAULT_SOURCE,
    )
    backend = table.get("backend", ModelProfile.backend)
    backend = _check_value(where, f"[models.{name}] backend", str, own["backend"], backend)
    allowed_llm = llm_keys_for(backend)
    llm_fields = {f.name: f for f in dataclasses.fields(LLMConfig)}
    llm_hints = typing.get_type_hints(LLMConfig)
    own_hints = typing.get_type_hints(ModelProfile)
    kwargs: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in table.items():
        label = f"[models.{name}] {key}"
        if key in own:
            kwargs[key] = _check_value(where, label, own_hints[key], own[key], value)
        elif key in allowed_llm:
            overrides[key] = _check_value(where, label, llm_hints[key], llm_fields[key], value)
        else:
            keys = sorted(set(own) | allowed_llm)
            found = (
                "a key that a llama.cpp profile takes" if key in llm_fields else "an unknown key"
            )
            raise ConfigError(where, label, f"one of the keys {', '.join(keys)}", found)
    if backend == "openai" and not kwargs.get("base_url"):
        raise ConfigError(
            where, f"[models.{name}] base_url", "the server's URL for an openai profile", "none"
        )
    if kwargs.get("api_key_env") and kwargs.get("api_key_file"):
        raise ConfigError(
            where, f"[models.{name}] api_key_file", "api_key_env or api_key_file, not both", "both"
        )
    return ModelProfile(**kwargs, name=name, llm=dataclasses.replace(llm, **overrides))


def _check_routing(
    llm: LLMConfig, profiles: Mapping[str, ModelProfile], sources: Mapping[str, str]
) -> None:
    """``[llm] model`` and ``fallback`` must name profiles that exist (or Ollama's)."""
    for key in ("model", "fallback"):
        value = getattr(llm, key)
        if (
            not value
            or value in profiles
            or value == DEFAULT_PROFILE
            or value.startswith(DISCOVERED_PREFIX)
        ):
            continue
        names = ", ".join(sorted({DEFAULT_PROFILE, *profiles}))
        raise ConfigError(
            sources.get(f"llm.{key}", DEFAULT_SOURCE),
            f"[llm] {key}",
            f"a [models.NAME] profile ({names}) or ollama:MODEL",
            repr(value),
        )
    if llm.fallback and llm.fallback == (llm.model or DEFAULT_PROFILE):
        raise ConfigError(
            sources.get("llm.fallback", DEFAULT_SOURCE),
            "[llm] fallback",
            "another profile than [llm] model",
            repr(llm.fallback),
        )


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
    "DEFAULT_PROFILE",
    "DISCOVERED_PREFIX",
    "Config",
    "ConfigError",
    "LLMConfig",
    "ModelProfile",
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

"""Model profiles as the running assistant sees them: configured, found, and where they run.

Configured profiles come from ``[models.NAME]`` (tars_core/settings/models.py). With no
``[llm] model`` the default profile, ``local``, is llama.cpp on ``[llm]`` itself.
Ollama needs no setup: when it answers at ``[llm] ollama_url`` its models are
``ollama:NAME`` profiles (read from its ``/api/tags``), served through its
OpenAI-compatible ``/v1``.

Nothing here sends anything but a model list request, and only to servers the user
configured (or Ollama's own port on this machine).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tars_assistant.llm import ModelError
from tars_core.config import DEFAULT_PROFILE, DISCOVERED_PREFIX, Config, ModelProfile

DISCOVERY_TIMEOUT_S = 0.5
MAX_DISCOVERED = 200


@dataclass(frozen=True)
class Where:
    """Where a profile's model runs, for the header, /model and the privacy notice."""

    label: str  # "this machine", "pc2.lan:8080", "cloud (api.example.com)"
    remote: bool  # another host: what the user says leaves this machine
    cloud: bool = False


def default_profile(config: Config) -> ModelProfile:
    return ModelProfile(name=DEFAULT_PROFILE, backend="llama.cpp", llm=config.llm)


def where(profile: ModelProfile) -> Where:
    if profile.backend == "llama.cpp":
        return Where("this machine", remote=False)
    parts = urlsplit(profile.base_url)
    host = parts.hostname or ""
    hostport = parts.netloc.rpartition("@")[2]
    if _is_loopback(host):
        return Where(f"this machine ({hostport})", remote=False)
    if _is_private(host):
        return Where(hostport, remote=True)
    return Where(f"cloud ({host})", remote=True, cloud=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_private(host: str) -> bool:
    """A host on the user's own network: a private address, or a name without a public
    domain (``pc2``, ``pc2.lan``, ``box.local``, ``nas.home.arpa``)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        last = host.rsplit(".", 1)[-1].lower()
        return "." not in host or last in ("lan", "local", "home", "internal", "arpa", "intranet")
    return addr.is_private or addr.is_link_local


def api_key(profile: ModelProfile, env: Mapping[str, str] | None = None) -> str | None:
    """The profile's API key, from its environment variable or its 0600 file; None for
    a server that needs none. Errors name the setting, never the key."""
    env = os.environ if env is None else env
    label = f"[models.{profile.name}]"
    if profile.api_key_env:
        value = env.get(profile.api_key_env, "").strip()
        if not value:
            raise ModelError(
                f"{label} api_key_env names ${profile.api_key_env}, which is not set: "
                f"export {profile.api_key_env}=… before starting TARS"
            )
        return value
    if profile.api_key_file:
        path = Path(profile.api_key_file).expanduser()
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ModelError(
                    f"{label} api_key_file {path} can be read by others "
                    f"(mode {stat.S_IMODE(mode):o}): chmod 600 {path}"
                )
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ModelError(
                f"{label} api_key_file {path}: cannot read it ({exc.strerror or exc})"
            ) from None
        if not value:
            raise ModelError(f"{label} api_key_file {path} is empty")
        return value
    return None


def key_setting(profile: ModelProfile) -> str:
    """Where the key comes from, for error messages."""
    label = f"[models.{profile.name}]"
    if profile.api_key_env:
        return f"${profile.api_key_env} ({label} api_key_env)"
    if profile.api_key_file:
        return f"{profile.api_key_file} ({label} api_key_file)"
    return f"{label} api_key_env or api_key_file"


# -- finding profiles ---------------------------------------------------------------


def ollama_profile(config: Config, model: str) -> ModelProfile:
    root = config.llm.ollama_url.rstrip("/") or "http://127.0.0.1:11434"
    return ModelProfile(
        name=f"{DISCOVERED_PREFIX}{model}",
        backend="openai",
        base_url=f"{root}/v1",
        model=model,
        llm=config.llm,
    )


def ollama_models(config: Config, timeout: float = DISCOVERY_TIMEOUT_S) -> list[str] | None:
    """The models Ollama has (``/api/tags``), or None when nothing answers there."""
    root = config.llm.ollama_url.rstrip("/")
    if not root:
        return None
    try:
        with urllib.request.urlopen(f"{root}/api/tags", timeout=timeout) as resp:
            data = json.loads(resp.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    names = [m.get("name") or m.get("model") for m in models if isinstance(m, dict)]
    return [n for n in names if isinstance(n, str) and n][:MAX_DISCOVERED]


def configured_profiles(config: Config) -> dict[str, ModelProfile]:
    """Every configured profile, with ``local`` (``[llm]`` itself) unless configured."""
    profiles = {DEFAULT_PROFILE: default_profile(config)}
    profiles.update(config.models)
    return profiles


def resolve(config: Config, name: str | None = None) -> ModelProfile:
    """The profile called ``name`` (default: ``[llm] model``, else ``local``)."""
    wanted = name if name is not None else config.llm.model
    if not wanted:
        return default_profile(config)
    profiles = configured_profiles(config)
    if wanted in profiles:
        return profiles[wanted]
    if wanted.startswith(DISCOVERED_PREFIX) and len(wanted) > len(DISCOVERED_PREFIX):
        return ollama_profile(config, wanted[len(DISCOVERED_PREFIX) :])
    names = ", ".join(sorted(profiles))
    raise ModelError(f"no model profile {wanted!r}: the profiles are {names} (see /model)")


def all_profiles(config: Config, *, discover: bool = True) -> list[ModelProfile]:
    """Configured profiles, then Ollama's (when it answers), for /model and `tars models`."""
    found = list(configured_profiles(config).values())
    if discover:
        known = {p.name for p in found}
        for model in ollama_models(config) or []:
            profile = ollama_profile(config, model)
            if profile.name not in known:
                found.append(profile)
    return found


def with_llm(profile: ModelProfile, **changes: Any) -> ModelProfile:
    """``profile`` with some of its effective ``[llm]`` settings changed."""
    return dataclasses.replace(profile, llm=dataclasses.replace(profile.llm, **changes))


__all__ = [
    "DEFAULT_PROFILE",
    "Where",
    "all_profiles",
    "api_key",
    "configured_profiles",
    "default_profile",
    "key_setting",
    "ollama_models",
    "ollama_profile",
    "resolve",
    "where",
    "with_llm",
]

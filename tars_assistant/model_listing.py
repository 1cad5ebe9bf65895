"""What /model and `tars models` list: every profile, where it runs, whether it answers.

Blocking (it asks each server for its model list, all at once, for at most
``PROBE_TIMEOUT_S``): front-ends call it off their UI thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tars_assistant import profiles
from tars_assistant.http_engine import normalise_base_url
from tars_assistant.llm import ModelError
from tars_core.config import Config, ModelProfile

PROBE_TIMEOUT_S = 1.5


@dataclass(frozen=True)
class ProfileRow:
    name: str
    backend: str
    model: str  # the GGUF file, or the model's name on its server ("" = its first)
    where: str
    remote: bool
    source: str  # "config", "default", "ollama"
    state: str  # "here", "answers", or why not ("unreachable: …", "no key: …")
    active: bool


def probe(profile: ModelProfile, timeout: float = PROBE_TIMEOUT_S) -> str:
    """``answers`` when the profile's server lists its models, else why not (short)."""
    if profile.backend != "openai":
        return "here"
    try:
        key = profiles.api_key(profile)
    except ModelError as exc:
        return f"no key: {exc}"
    request = urllib.request.Request(f"{normalise_base_url(profile.base_url)}/models")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            ids = [m.get("id") for m in json.loads(resp.read(1 << 20)).get("data", [])]
    except urllib.error.HTTPError as exc:
        return f"refused ({exc.code})" if exc.code in (401, 403) else f"fails ({exc.code})"
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"unreachable ({reason})"
    if profile.model and profile.model not in ids:
        return f"answers, but has no model {profile.model!r}"
    return "answers"


def list_profiles(config: Config, active: str | None = None) -> list[ProfileRow]:
    found = profiles.all_profiles(config)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(found)))) as pool:
        states = list(pool.map(probe, found))
    rows = []
    for profile, state in zip(found, states, strict=True):
        where = profiles.where(profile)
        if profile.backend == "llama.cpp":
            model = profile.llm.model_path or "bundled SmolLM2"
        else:
            model = profile.model or "(the server's first)"
        if profile.name.startswith("ollama:"):
            source = "ollama"
        elif profile.name in config.models:
            source = "config"
        else:
            source = "default"
        rows.append(
            ProfileRow(
                name=profile.name,
                backend=profile.backend,
                model=model,
                where=where.label,
                remote=where.remote,
                source=source,
                state=state,
                active=profile.name == active,
            )
        )
    return rows


def markdown(rows: list[ProfileRow]) -> str:
    lines = [
        "Model profiles (switch with `/model NAME`; ⇄ = not on this machine):",
        "",
        "| | profile | backend | model | where | state |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "▶" if r.active else ""
        remote = " ⇄" if r.remote else ""
        lines.append(
            f"| {mark} | `{r.name}` | {r.backend} | {r.model} | {r.where}{remote} | {r.state} |"
        )
    return "\n".join(lines)


def text(rows: list[ProfileRow]) -> str:
    out = [f"  {'profile':<24} {'backend':<10} {'where':<28} {'state':<12} model"]
    for r in rows:
        mark = "*" if r.active else " "
        where = r.where + (" ⇄" if r.remote else "")
        out.append(f"{mark} {r.name:<24} {r.backend:<10} {where:<28} {r.state:<12} {r.model}")
    return "\n".join(out)


__all__ = ["ProfileRow", "list_profiles", "markdown", "probe", "text"]

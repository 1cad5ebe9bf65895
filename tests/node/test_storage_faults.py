"""The node's disk fills up, turns read-only, or its SQLite file is corrupted — for real:
a small tmpfs filled to the last byte, an ext4 image whose kernel driver is told to
fail (``errors=remount-ro`` + ``trigger_fs_error``: what a dying disk does), bytes
overwritten in items.sqlite3. Each time the node answers `internal` with a message
that says which, keeps serving `health` (which reports it) and reads, PC1's outbox
keeps the memories it could not deliver, and `tars doctor` explains what to do.

Mounting needs root (CAP_SYS_ADMIN), mkfs.ext4 and a loop device: without them the
test says so and is skipped. chmod is no test here: root writes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from memory.memory_store import MemoryStore
from memory.outbox import Delivery, FlushReport
from node_daemon import faults
from node_daemon.client import NodeClient
from tars_core.config import Config
from tars_core.settings.memory import MemoryConfig
from tars_tui.doctor import _check_node
from tests.node.conftest import Daemon, spawn
from tests.node.frames import request
from tests.node.wire import Wire, wait_ready

pytestmark = pytest.mark.slow


# -- real filesystems -----------------------------------------------------------------


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"mounting {what} needs root; this test runs as uid {os.geteuid()}")


@contextlib.contextmanager
def mounted(point: Path, *mount_args: str) -> Iterator[Path]:
    point.mkdir(parents=True, exist_ok=True)
    done = _sh("mount", *mount_args, str(point))
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({' '.join(mount_args)}): {done.stderr.strip()}")
    try:
        yield point
    finally:
        for _ in range(50):  # the node's files close as it exits
            if _sh("umount", str(point)).returncode == 0:
                break
            time.sleep(0.1)
        else:
            _sh("umount", "-l", str(point))


@contextlib.contextmanager
def small_tmpfs(point: Path, size: str = "48m") -> Iterator[Path]:
    _need_root("a tmpfs")
    with mounted(point, "-t", "tmpfs", "-o", f"size={size}", "tmpfs") as p:
        yield p


@contextlib.contextmanager
def failing_ext4(point: Path, image: Path) -> Iterator[tuple[Path, Path]]:
    """An ext4 image mounted with errors=remount-ro: (mount point, trigger_fs_error)."""
    _need_root("an ext4 image")
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    with open(image, "wb") as f:
        f.truncate(64 * 2**20)
    made = _sh("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    with mounted(point, "-o", "loop,errors=remount-ro", str(image)) as p:
        source = _sh("findmnt", "-n", "-o", "SOURCE", str(p)).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger}: cannot make ext4 fail on purpose")
        yield p, trigger


def fill(fs: Path) -> Path:
    """Write a file until the filesystem has not one byte left."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (2**20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


# -- helpers --------------------------------------------------------------------------


def start(data: Path, home: Path, files: Path) -> Daemon:
    daemon = spawn(data, home=home, files_dir=files)
    wait_ready(daemon.endpoint, lambda: daemon.proc.poll() is None)
    return daemon


def items(prefix: str, n: int, ns: str = "faults") -> dict[str, Any]:
    rnd = random.Random(prefix)
    words = ["harbor", "cedar", "quartz", "meadow", "ember", "lagoon", "violet", "kestrel"]
    return {
        "items": [
            {
                "id": f"{prefix}-{i}",
                "text": f"{prefix} {i}: " + " ".join(rnd.choices(words, k=12)),
                "namespace": ns,
                "metadata": {"pad": "x" * 8000},
            }
            for i in range(n)
        ],
        "on_duplicate": "store",
    }


def upsert_until_refused(wire: Wire, prefix: str, tries: int = 40) -> tuple[list[str], str]:
    """Upsert fresh batches until one is refused: (ids acknowledged before, the message)."""
    acked: list[str] = []
    for t in range(tries):
        wire.send([request("upsert", items(f"{prefix}{t}", 20), rid=f"u{t}")])
        reply = wire.recv(60.0)
        assert reply is not None, "no reply to an upsert"
        if not reply["ok"]:
            assert reply["error"]["code"] == "internal" and reply["id"] == f"u{t}", reply
            return acked, reply["error"]["message"]
        acked += reply["result"]["stored"]
    raise AssertionError(f"{tries} upserts went through")


def assert_serves_the_rest(daemon: Daemon, wire: Wire, kind: str, acked: list[str]) -> None:
    assert daemon.proc.poll() is None, daemon.stderr()[-3000:]
    health = wire.health()
    assert health is not None and health["ok"]
    assert faults.kind_of(health["storage_error"] or "") == kind, health
    if acked:  # reads go on
        assert wire.call("get", {"ids": acked[:50]})["missing"] == []
        assert wire.call("count", {"namespace": "faults"})["count"] >= len(acked)


def outbox(db: Path, endpoint: str, texts: tuple[str, ...] = ()) -> tuple[FlushReport, int]:
    """PC1's side: queue ``texts`` as memories, flush the outbox once: (report, pending)."""

    async def flush() -> tuple[FlushReport, int]:
        store = MemoryStore(db)
        for text in texts:
            store.add_memory(store.new_fact_id(), "fact", text, project_id=None)
        client = NodeClient(endpoint, timeout_s=10.0, retries=1)
        try:
            report = await Delivery(store, lambda: client, MemoryConfig()).flush()
            return report, store.pending_count()
        finally:
            client.close()
            store.close()

    return asyncio.run(flush())


def doctor_on(data: Path) -> tuple[bool, str]:
    config = Config()
    config = replace(config, server=replace(config.server, data_dir=str(data)))
    check = _check_node(config)
    return check.ok, check.detail


MEMORIES = ("The boat is moored at pier 4.", "The spare key is under the blue pot.")


# -- the three faults ------------------------------------------------------------------


def test_disk_full(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        data = fs / "node"
        daemon = start(data, tmp_path / "home", tmp_path)
        try:
            with Wire(daemon.endpoint) as wire:
                acked = wire.call("upsert", items("before", 3))["stored"]
                filler = fill(fs)
                more, message = upsert_until_refused(wire, "full")
                acked += more
                assert message.startswith("disk full: ") and "free space" in message, message
                assert_serves_the_rest(daemon, wire, faults.DISK_FULL, acked)
                ok, detail = doctor_on(data)
                assert not ok and detail.startswith("disk full: "), detail

                report, pending = outbox(tmp_path / "tars.db", daemon.endpoint, MEMORIES)
                assert report.sent == () and pending == 2 and "disk full" in (report.error or "")

                filler.unlink()  # space again: no restart needed
                assert wire.call("upsert", items("after", 2))["stored"] == ["after-0", "after-1"]
                health = wire.health()
                assert health is not None and health["storage_error"] is None
                report, pending = outbox(tmp_path / "tars.db", daemon.endpoint)
                assert len(report.sent) == 2 and pending == 0 and report.error is None
                assert wire.call("get", {"ids": list(report.sent)})["missing"] == []
                assert wire.call("get", {"ids": acked})["missing"] == []  # nothing acked lost
        finally:
            assert daemon.stop() == 0, daemon.stderr()[-3000:]


def test_data_directory_turns_read_only(tmp_path: Path) -> None:
    with failing_ext4(tmp_path / "fs", tmp_path / "disk.img") as (fs, trigger):
        data = fs / "node"
        daemon = start(data, tmp_path / "home", tmp_path)
        try:
            with Wire(daemon.endpoint) as wire:
                acked = wire.call("upsert", items("before", 3))["stored"]
                trigger.write_text("tars test: the disk failed")  # the kernel remounts it ro
                _, message = upsert_until_refused(wire, "ro", tries=1)
                assert message.startswith("data directory read-only: "), message
                assert_serves_the_rest(daemon, wire, faults.READ_ONLY, acked)
                report, pending = outbox(tmp_path / "tars.db", daemon.endpoint, MEMORIES)
                assert report.sent == () and pending == 2 and "read-only" in (report.error or "")
                ok, detail = doctor_on(data)
                assert not ok and detail.startswith("data directory read-only: "), detail
                assert "remount" in detail
        finally:
            assert daemon.stop() == 0, daemon.stderr()[-3000:]  # FAISS unsaved: SQLite has it

        # Started on the read-only disk, the node comes up to say so.
        daemon = spawn(data, home=tmp_path / "home", files_dir=tmp_path)
        try:
            with Wire(daemon.endpoint) as wire:
                deadline = time.monotonic() + 120
                while (health := wire.health()) is None or not health["storage_error"]:
                    assert daemon.proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.2)
                assert not health["ready"] and faults.kind_of(health["storage_error"]) == (
                    faults.READ_ONLY
                ), health
                reply = wire.exchange([request("count", {}, rid="c1")])
                assert reply is not None and reply["error"]["code"] == "internal", reply
                assert reply["error"]["message"].startswith("data directory read-only: ")
        finally:
            assert daemon.stop() == 0, daemon.stderr()[-3000:]


def test_database_corrupted(tmp_path: Path) -> None:
    data = tmp_path / "node"
    daemon = start(data, tmp_path / "home", tmp_path)
    try:
        with Wire(daemon.endpoint) as wire:
            acked: list[str] = []
            for k in range(6):
                acked += wire.call("upsert", items(f"c{k}", 50))["stored"]
            wire.call("compact", timeout_s=120)  # every page in the main file, the WAL empty
            db = data / "items.sqlite3"
            size = db.stat().st_size
            with open(db, "r+b") as f:  # keep the header and first pages, wreck the rest
                f.seek(8 * 4096)
                f.write(random.Random(0).randbytes(size - 8 * 4096))
            seen: list[str] = []
            for batch in [acked[i : i + 25] for i in range(0, len(acked), 25)]:
                wire.send([request("upsert", items("poke", 1), rid="p")])  # readers reread
                for rid, frame in (
                    ("p", None),
                    ("g", request("get", {"ids": batch}, rid="g")),
                    ("k", request("search", {"query": "cedar", "mode": "keyword"}, rid="k")),
                ):
                    if frame is not None:
                        wire.send([frame])
                    reply = wire.recv(30.0)
                    assert reply is not None and reply["id"] == rid, reply
                    if not reply["ok"]:
                        assert reply["error"]["code"] == "internal", reply
                        seen.append(reply["error"]["message"])
            assert seen, "no op touched a wrecked page"
            odd = [m for m in seen if not m.startswith("database corrupt: ")]
            assert not odd, odd
            assert "sqlite3 items.sqlite3 .recover" in seen[0]
            assert_serves_the_rest(daemon, wire, faults.CORRUPT, [])
            report, pending = outbox(tmp_path / "tars.db", daemon.endpoint, MEMORIES)
            assert report.sent == () and pending == 2, report
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-3000:]
    ok, detail = doctor_on(data)
    assert not ok and detail.startswith("database corrupt: "), detail

    # Restarted on the corrupt file, the node comes up to say so (and tries again now and then).
    daemon = spawn(data, home=tmp_path / "home", files_dir=tmp_path)
    try:
        with Wire(daemon.endpoint) as wire:
            deadline = time.monotonic() + 120
            while (health := wire.health()) is None or not health["storage_error"]:
                assert daemon.proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            assert not health["ready"]
            assert faults.kind_of(health["storage_error"]) == faults.CORRUPT, health
            reply = wire.exchange([request("search", {"query": "cedar"}, rid="s1")])
            assert reply is not None and reply["error"]["code"] == "internal", reply
            assert reply["error"]["message"].startswith("database corrupt: ")
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-3000:]

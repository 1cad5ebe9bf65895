"""Where the running embedded node can be found: ``<node data_dir>/endpoint.json``.

`tars` runs its node as a child process (:class:`node_daemon.local.LocalNode`), and
one node at a time may use a data directory (``node.lock``). So that the user's
other processes (`tars jobs run` from a timer, a second `tars`) use that node
instead of failing on the lock, LocalNode publishes it here as soon as it listens:
a small JSON file readable by the user only (0600), replaced atomically, removed
when LocalNode stops the node.

A file left behind by a crash is harmless: :func:`find_running` accepts an
endpoint only if the node's process is alive and the node, asked over its socket,
reports that same pid and data directory. The embedded node listens on loopback
without CURVE, so there are no keys to publish; ``curve`` says so explicitly.
Standard library and the node client only.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from node_daemon.client import BlockingNodeClient, NodeError, NodeUnavailable

FILENAME = "endpoint.json"
FORMAT = 1
POLL_S = 0.2


@dataclass(frozen=True)
class Published:
    endpoint: str
    node_pid: int  # the tars-node process
    owner_pid: int  # the process that started it and will stop it
    curve: bool
    started_at: float
    format: int = FORMAT


def path_in(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / FILENAME


def publish(
    data_dir: str | os.PathLike[str], endpoint: str, node_pid: int, *, curve: bool = False
) -> Path:
    """Write the file (0600 from its creation, then renamed into place)."""
    entry = Published(endpoint, node_pid, os.getpid(), curve, time.time())
    path = path_in(data_dir)
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
            os.write(fd, json.dumps(asdict(entry)).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def unpublish(data_dir: str | os.PathLike[str], node_pid: int) -> None:
    """Remove the file if it names ``node_pid`` (never another node's entry)."""
    entry = read(data_dir)
    if entry is not None and entry.node_pid == node_pid:
        with contextlib.suppress(OSError):  # gone already, or a read-only directory
            path_in(data_dir).unlink()


def read(data_dir: str | os.PathLike[str]) -> Published | None:
    """The file's entry, or None when it is missing or not one of ours."""
    try:
        data = json.loads(path_in(data_dir).read_text(encoding="utf-8"))
        entry = Published(**data)
    except (OSError, ValueError, TypeError):
        return None
    fields_ok = (
        isinstance(entry.endpoint, str)
        and type(entry.node_pid) is int
        and type(entry.owner_pid) is int
        and type(entry.curve) is bool
        and entry.format == FORMAT
    )
    return entry if fields_ok else None


def _alive(pid: int) -> bool:
    if pid <= 0:  # 0 and -1 would address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: the identity check below decides
    return True


def find_running(
    data_dir: str | os.PathLike[str], *, wait_s: float = 0.0, timeout_s: float = 1.0
) -> Published | None:
    """The published node, if it is live and is the node of ``data_dir``.

    A node that answers but is still loading its model is waited for, up to
    ``wait_s``; one that does not answer, a dead pid, or a node reporting another
    pid or directory (a stale file whose port was reused) gives None at once.
    """
    entry = read(data_dir)
    if entry is None or entry.curve or not _alive(entry.node_pid):
        return None
    deadline = time.monotonic() + wait_s
    with BlockingNodeClient(entry.endpoint, timeout_s=timeout_s, retries=1) as client:
        try:
            while not client.health()["ready"]:
                if time.monotonic() >= deadline or not _alive(entry.node_pid):
                    return None
                time.sleep(POLL_S)
            stats = client.stats()
        except (NodeUnavailable, NodeError):
            return None
    same_dir = Path(str(stats.get("data_dir"))).resolve() == Path(data_dir).resolve()
    return entry if stats.get("pid") == entry.node_pid and same_dir else None


__all__ = ["FILENAME", "Published", "find_running", "path_in", "publish", "read", "unpublish"]

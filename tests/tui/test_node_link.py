"""The node as the TUI sees it: a real `tars-node` child process on a real socket."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import psutil
import pytest

from node_daemon.local import LocalNode
from tars_core.config import Config
from tars_tui.app import make_app
from tars_tui.widgets.panels import SystemPanel
from tars_tui.widgets.transcript import AssistantMessage, Note

from .conftest import wait_until

pytestmark = pytest.mark.slow
SIZE = (120, 40)


def status_text(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.chat.query_one("#status").render())


def notes(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(n.render()) for n in app.chat.query(Note)]


async def test_embedded_node_starts_survives_kill_and_stops_on_exit(config: Config) -> None:
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, endpoint="auto"))
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot, lambda: app.node.state == "local", timeout=120, what="the local node"
        )
        local = app.node.local
        assert local is not None and local.alive()
        first_pid = local.pid
        assert first_pid is not None
        # The child keeps its data in the user's data directory.
        assert local.data_dir == config.data_dir / "node"
        await wait_until(
            pilot,
            lambda: "node: local ·" in status_text(app),
            timeout=30,
            what="the node's state and RTT in the status line",
        )
        panel = app.chat.query_one("#system-node", SystemPanel)  # type: ignore[union-attr]
        await wait_until(pilot, lambda: panel.reading is not None, what="PC2's system reading")
        assert app.session.latency.last("node_rtt_ms") is not None

        os.kill(first_pid, signal.SIGKILL)  # the node dies mid-session
        await wait_until(
            pilot,
            lambda: any("stopped answering" in n for n in notes(app)),
            timeout=30,
            what="the node's death to be shown",
        )
        # Chat goes on meanwhile.
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        app.chat.send("Still there?")  # type: ignore[union-attr]
        await wait_until(pilot, lambda: not app.chat.generating, what="a reply")  # type: ignore[union-attr]
        assert list(app.chat.query(AssistantMessage))[-1].text.strip()  # type: ignore[union-attr]
        # And the embedded node comes back by itself.
        await wait_until(
            pilot,
            lambda: app.node.state == "local" and local.pid != first_pid,
            timeout=120,
            what="the node's restart",
        )
        assert any("Node restarted" in n for n in notes(app))
        second_pid = local.pid
    assert second_pid is not None
    gone = not psutil.pid_exists(second_pid)
    assert gone or psutil.Process(second_pid).status() == psutil.STATUS_ZOMBIE


async def test_configured_endpoint_connects_to_a_remote_node(
    config: Config, tmp_path: Path
) -> None:
    with LocalNode(tmp_path / "pc2") as pc2:  # stands in for a daemon on another machine
        config = dataclasses.replace(
            config, node=dataclasses.replace(config.node, endpoint=pc2.endpoint)
        )
        app = make_app(config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: "node: remote ·" in status_text(app),
                timeout=30,
                what="the remote node in the status line",
            )
            assert app.node.local is None  # nothing started on PC1
        assert pc2.alive()  # and leaving TARS does not stop someone else's node


async def test_node_that_cannot_start_is_reported_and_chat_works(
    config: Config, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nembed_model = "/nonexistent/model"\n')
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, endpoint="auto"))
    app = make_app(config, config_path=bad)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot,
            lambda: any("did not start" in n for n in notes(app)),
            timeout=120,
            what="the start failure",
        )
        assert "node: unreachable" in status_text(app)
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        app.chat.send("Hello")  # type: ignore[union-attr]
        await wait_until(pilot, lambda: not app.chat.generating, what="a reply")  # type: ignore[union-attr]
        assert list(app.chat.query(AssistantMessage))[-1].text.strip()  # type: ignore[union-attr]


async def test_a_node_whose_database_is_corrupt_starts_and_its_panel_says_so(
    config: Config,
) -> None:
    """The node comes up to report the fault (it does not time out starting), the PC2
    panel shows what is wrong and what to do, and chat goes on without memory."""
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, endpoint="auto"))
    node_dir = config.data_dir / "node"
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / "items.sqlite3").write_bytes(b"this is not a database at all " * 4096)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        panel = app.chat.query_one("#system-node", SystemPanel)  # type: ignore[union-attr]
        await wait_until(
            pilot, lambda: panel.problem is not None, timeout=120, what="the storage fault"
        )
        assert app.node.state == "local"
        assert panel.problem is not None and panel.problem.startswith("database corrupt: ")
        shown = str(panel.render())
        assert "⚠ database corrupt" in shown and ".recover" in shown
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        app.chat.send("Still there?")  # type: ignore[union-attr]
        await wait_until(pilot, lambda: not app.chat.generating, what="a reply")  # type: ignore[union-attr]
        assert list(app.chat.query(AssistantMessage))[-1].text.strip()  # type: ignore[union-attr]

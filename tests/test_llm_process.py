"""What only the child-process engine does: batching pieces, cancelling a child that is
busy, surviving its death, and ending with its parent. What it shares with the
in-process engine is tested over both in test_llm.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tars_assistant.llm import Reply, resolve_model_path
from tars_assistant.llm_process import ModelProcessDied, ProcessEngine
from tests.test_llm import small_cfg, user


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.02)
    return False


def test_pieces_are_coalesced_in_the_child() -> None:
    e = ProcessEngine(small_cfg(max_tokens=120), batch_interval_s=10.0)
    try:
        e.load()
        reply = Reply()
        ban_eos = {e.eos_token_id: -100.0}
        pieces = list(e.stream("", user("Tell a story."), reply=reply, logit_bias=ban_eos))
        # The first piece at once, the rest within the interval: the end message's tail.
        assert len(pieces) == 2 and "".join(pieces) == reply.text
        assert reply.metrics is not None and reply.metrics.completion_tokens == 120
        assert reply.finish_reason == "length"
    finally:
        e.close()


def test_cancel_while_waiting_stops_within_one_token() -> None:
    # A child that sends nothing until the end: the parent's poll of should_stop
    # is what stops it, before the child's next token.
    e = ProcessEngine(small_cfg(max_tokens=400, n_ctx=1024), batch_interval_s=60.0)
    try:
        e.load()
        reply = Reply()
        t_first: list[float] = []

        def should_stop() -> bool:
            return bool(t_first) and time.perf_counter() - t_first[0] > 0.05

        ban_eos = {e.eos_token_id: -100.0}
        for _ in e.stream(
            "", user("Tell a story."), should_stop=should_stop, reply=reply, logit_bias=ban_eos
        ):
            t_first.append(time.perf_counter())
        assert reply.cancelled and reply.metrics is not None
        n = reply.metrics.completion_tokens
        assert n is not None and 1 < n < 200  # ~5 tokens in 50 ms; 400 if it ran on
        assert reply.finish_reason is None
    finally:
        e.close()


def test_close_ends_the_child_and_a_killed_child_is_revived_by_the_next_request() -> None:
    deaths: list[str] = []
    e = ProcessEngine(small_cfg())
    e.on_death = deaths.append
    e.load()
    pid = e.child_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    # The watcher reports the death by itself, once, with what killed it.
    deadline = time.monotonic() + 10
    while not deaths and time.monotonic() < deadline:
        time.sleep(0.02)
    assert deaths == ["the model process died (killed by SIGKILL)"]
    assert not e.is_ready
    # The next request starts a new child with the same model.
    assert e.complete("", user("Hi.")).text
    assert e.child_pid not in (None, pid) and e.is_ready
    pid = e.child_pid
    assert pid is not None
    e.close()
    assert wait_gone(pid) and e.child_pid is None and not e.is_ready
    assert deaths == ["the model process died (killed by SIGKILL)"]  # close() is no death
    assert e.revive() is None  # closed on purpose: nothing to revive


def test_a_child_killed_mid_stream_raises_model_process_died() -> None:
    e = ProcessEngine(small_cfg(max_tokens=400, n_ctx=1024))
    try:
        e.load()
        pid = e.child_pid
        assert pid is not None
        reply = Reply()
        gen = e.stream("", user("Tell a story."), reply=reply, logit_bias={e.eos_token_id: -100.0})
        first = next(gen)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ModelProcessDied, match=r"model process died \(killed by SIGKILL\)"):
            for _ in gen:
                pass
        assert reply.text.startswith(first)  # what was streamed is kept
        assert e.revive() == e.model_path  # the model it had, in a new child
        assert e.child_pid not in (None, pid)
        assert e.complete("", user("Hi.")).text
    finally:
        e.close()


def test_a_dead_child_is_named_by_the_model_it_had(tmp_path: Path) -> None:
    """After a /model switch, a death and its reload name the model in use, not the
    configured one."""
    switched = tmp_path / "switched.gguf"
    cfg = small_cfg()
    e = ProcessEngine(cfg)
    try:
        configured = e.model_name
        switched.symlink_to(resolve_model_path(cfg))
        e.load(switched)
        pid = e.child_pid
        assert pid is not None and e.model_name == "switched.gguf" != configured
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
        deadline = time.monotonic() + 10
        while e.is_ready and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not e.is_ready and e.model_name == "switched.gguf"
        assert e.revive() == switched and e.model_name == "switched.gguf"
    finally:
        e.close()


def test_the_child_exits_when_its_parent_dies(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import dataclasses, sys\n"
        "from tars_core.config import load_config\n"
        "from tars_assistant.llm_process import ProcessEngine\n"
        "if __name__ == '__main__':\n"
        "    e = ProcessEngine(dataclasses.replace(load_config(env={}).llm, n_ctx=256))\n"
        "    e.load()\n"
        "    print(e.child_pid, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()  # no atexit, no clean-up: the child must notice by itself
    parent.wait()
    assert wait_gone(child)

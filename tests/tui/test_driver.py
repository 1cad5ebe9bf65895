"""Hold-to-talk input: the parser on the escape sequences terminals send, and the
driver's negotiation with a terminal played by this test on a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events
from textual._xterm_parser import XTermParser
from textual.message import Message

from tars_tui.messages import KeyReleased
from tars_tui.voice.driver import (
    ENABLE_EVENT_TYPES,
    QUERY_FLAGS,
    KeyReleaseParser,
    _FlagsReported,
    push_to_talk_keys,
    release_reporting_possible,
)

REPO = Path(__file__).resolve().parents[2]

CTRL_SPACE_PRESS = "\x1b[32;5u"
CTRL_SPACE_REPEAT = "\x1b[32;5:2u"
CTRL_SPACE_RELEASE = "\x1b[32;5:3u"
CTRL_RELEASE = "\x1b[57442;5:3u"  # left ctrl going up (flag 8 reports modifier keys)
SPACE_RELEASE_NO_MODS = "\x1b[32;1:3u"


def parse(*chunks: str, hold: tuple[str, ...] = ("ctrl+space", "f5")) -> list[Message]:
    parser = KeyReleaseParser(hold)
    out: list[Message] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def described(messages: list[Message]) -> list[str]:
    def one(m: Message) -> str:
        if isinstance(m, events.Key):
            return f"key {m.key}"
        if isinstance(m, KeyReleased):
            return f"released {m.key}"
        if isinstance(m, _FlagsReported):
            return f"flags {m.flags}"
        return type(m).__name__

    return [one(m) for m in messages]


def test_stock_textual_parser_breaks_on_a_release_event() -> None:
    # Why the driver exists: if Textual learns event types, this is the reminder.
    with pytest.raises(ValueError):
        list(XTermParser().feed(CTRL_SPACE_RELEASE))


def test_hold_press_repeats_release() -> None:
    got = parse(CTRL_SPACE_PRESS, CTRL_SPACE_REPEAT, CTRL_SPACE_REPEAT, CTRL_SPACE_RELEASE)
    assert described(got) == ["key ctrl+space", "released ctrl+space"]


def test_all_in_one_read() -> None:
    got = parse(CTRL_SPACE_PRESS + CTRL_SPACE_REPEAT + CTRL_SPACE_RELEASE + "x")
    assert described(got) == ["key ctrl+space", "released ctrl+space", "key x"]


def test_ctrl_let_go_first_still_releases_the_key() -> None:
    got = parse(CTRL_SPACE_PRESS, CTRL_RELEASE, SPACE_RELEASE_NO_MODS)
    assert described(got) == ["key ctrl+space", "released ctrl+space"]


def test_function_key_hold() -> None:
    assert described(parse("\x1b[15~", "\x1b[15;1:2~", "\x1b[15;1:3~")) == [
        "key f5",
        "released f5",
    ]


def test_typing_keeps_working_with_event_types_on() -> None:
    # flag 16 puts the text in a third field; a held letter repeats as presses.
    got = parse("\x1b[104;;104u", "\x1b[104;1:3u", "\x1b[105;;105u", "\x1b[105;1:2;105u")
    got += parse("\x1b[105;1:3u", "\x1b[65;2;65u", "\x1b[65;2:3u")
    assert described(got) == ["key h", "key i", "key i", "key A"]


def test_other_keys_repeat_and_their_releases_vanish() -> None:
    got = parse("\x1b[1;1:1A", "\x1b[1;1:2A", "\x1b[1;1:3A", "\x1b[127u", "\x1b[127;1:3u")
    got += parse("\x1b[13u", "\x1b[13;1:3u", "\x1b[1;5:1A", "\x1b[1;5:3A", "\x1b[27u")
    assert described(got) == [
        "key up",
        "key up",
        "key backspace",
        "key enter",
        "key ctrl+up",
        "key escape",
    ]


def test_space_typed_as_text_is_not_a_hold() -> None:
    assert described(parse("\x1b[32;;32u", SPACE_RELEASE_NO_MODS, "\x1b[32;;32u")) == [
        "key space",
        "key space",
    ]


def test_flags_reply_is_read_and_what_follows_is_not_swallowed() -> None:
    assert described(parse("\x1b[?27uhi")) == ["flags 27", "key h", "key i"]
    assert described(parse("\x1b[?0u")) == ["flags 0"]


def test_push_to_talk_keys() -> None:
    assert push_to_talk_keys("ctrl+space") == ["ctrl+space", "ctrl+@", "f5"]
    assert push_to_talk_keys("f8") == ["f8", "f5"]


def test_multiplexers_keep_the_toggle() -> None:
    assert release_reporting_possible({"TERM": "xterm-kitty"})
    assert not release_reporting_possible({"TERM": "tmux-256color", "TMUX": "/tmp/tmux-1/x,1,0"})
    assert not release_reporting_possible({"TERM": "screen-256color"})
    assert not release_reporting_possible({"TERM": "xterm", "STY": "123.pts-0.host"})


# -- the driver on a pseudo-terminal ----------------------------------------------


class Terminal:
    """Plays the terminal for the pty host: reads what the app writes, types keys."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.log = tmp_path / "host.jsonl"
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        self.output = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tui.pty_host", str(self.log)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        os.close(slave)

    def read_until(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no {text!r} from the app; it wrote {self.output[-400:]!r}")
            self.drain(min(left, 0.1))

    def drain(self, timeout: float) -> None:
        """Read what the app wrote (it must never block on a full pty)."""
        if select.select([self.master], [], [], timeout)[0]:
            with contextlib.suppress(OSError):  # the app has exited and closed its side
                self.output += os.read(self.master, 65536).decode("utf-8", "replace")

    def type(self, data: str) -> None:
        os.write(self.master, data.encode())

    def records(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(found := [r for r in self.records() if r["kind"] == kind]) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"expected {count} {kind!r}, log: {self.records()}")
            self.drain(0.05)
        return found

    def quit(self) -> None:
        self.type("q")
        deadline = time.monotonic() + 20
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.drain(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.drain(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def host_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "STY", "TEXTUAL_DRIVER")}
    env.update(TERM="xterm-256color", PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture
def terminal(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    term = Terminal(tmp_path, host_env(**getattr(request, "param", {})))
    yield term
    term.close()


def test_kitty_like_terminal_gets_hold_to_talk(terminal: Terminal) -> None:
    terminal.read_until("\x1b[>25u")  # Textual's own flags, pushed first
    terminal.read_until(QUERY_FLAGS)
    terminal.type("\x1b[?25u")  # "I speak the protocol; flags 1+8+16 are on"
    terminal.read_until(ENABLE_EVENT_TYPES + QUERY_FLAGS)
    terminal.type("\x1b[?27u")  # "flag 2 is on now"
    [reported] = terminal.wait_for("reported")
    assert reported == {"kind": "reported", "supported": True, "flags": 27}
    terminal.type(CTRL_SPACE_PRESS + CTRL_SPACE_REPEAT * 5)
    terminal.type(CTRL_RELEASE + SPACE_RELEASE_NO_MODS)
    terminal.wait_for("released")
    terminal.quit()
    # One press however long the key repeated, one release. (The app sees them in
    # separate queues: a key goes through the focused widget first.)
    records = terminal.records()
    assert [r["key"] for r in records if r["kind"] == "key"] == ["ctrl+space", "q"]
    assert [r["key"] for r in records if r["kind"] == "released"] == ["ctrl+space"]
    # ... and the app heard of the press from the input thread, before its event loop.
    assert [r["kind"] for r in records].count("early") == 1
    assert terminal.output.rstrip().count("\x1b[<u") >= 1  # flags popped at exit


def test_terminal_that_refuses_flag_2(terminal: Terminal) -> None:
    terminal.read_until(QUERY_FLAGS)
    terminal.type("\x1b[?1u")  # protocol spoken, but only disambiguation
    terminal.read_until(ENABLE_EVENT_TYPES + QUERY_FLAGS)
    terminal.type("\x1b[?1u")  # flag 2 did not take
    [reported] = terminal.wait_for("reported")
    assert reported["supported"] is False
    terminal.quit()


def test_silent_terminal_keeps_the_toggle(terminal: Terminal) -> None:
    terminal.read_until(QUERY_FLAGS)
    terminal.type("\x1b[32;5u")  # no reply to the query: an older terminal
    terminal.wait_for("key")
    terminal.quit()
    assert ENABLE_EVENT_TYPES not in terminal.output
    assert not [r for r in terminal.records() if r["kind"] == "reported"]


@pytest.mark.parametrize("terminal", [{"TMUX": "/tmp/tmux-1000/default,1,0"}], indirect=True)
def test_under_tmux_nothing_is_asked(terminal: Terminal) -> None:
    [mounted] = terminal.wait_for("mounted")
    assert mounted["driver"] == "TarsDriver"
    terminal.type("x")
    terminal.wait_for("key")
    terminal.quit()
    assert QUERY_FLAGS not in terminal.output

"""Hold-to-talk: a Textual driver that hears key releases where the terminal reports them.

Textual 8 asks for kitty keyboard protocol flags 1+8+16 and its parser reads neither
the ``:2`` (repeat) nor the ``:3`` (release) event type that flag 2 ("report event
types") adds: ``int("5:3")`` fails. This driver

- parses those suffixes (:class:`KeyReleaseParser`): a press is a key as before; a
  repeat is a press again, except for a held push-to-talk key (holding it must not
  toggle); a release of a push-to-talk key becomes :class:`KeyReleased`, every
  other release is dropped;
- asks the terminal (``CSI ? u``) whether it speaks the protocol at all, and only
  then turns flag 2 on (``CSI = 2 ; 2 u``, on the entry Textual pushed, so Textual's
  own ``CSI < u`` at exit restores the terminal) and asks again to see that it took;
  the answer reaches the app as :class:`KeyReleasesReported`;
- does nothing of the sort under tmux or GNU screen, which do not pass release
  events through: there (and wherever no answer comes) push-to-talk stays a toggle;
- tells the app of a push-to-talk press from the input thread, before the key
  joins the event loop's queue (:class:`EarlyKeys`), so that barge-in silences
  TARS at once even while the screen is busy rendering a reply.
"""

from __future__ import annotations

import os
import re
import selectors
import sys
from codecs import getincrementaldecoder
from collections.abc import Collection, Iterable, Mapping
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

from textual import constants, events
from textual._xterm_parser import XTermParser
from textual.driver import Driver
from textual.drivers.linux_driver import KITTY_REPORT_EVENT_TYPES, LinuxDriver
from textual.keys import Keys
from textual.message import Message

from tars_tui.messages import KeyReleased, KeyReleasesReported

QUERY_FLAGS: Final = "\x1b[?u"
ENABLE_EVENT_TYPES: Final = f"\x1b[={KITTY_REPORT_EVENT_TYPES};2u"  # mode 2: set these bits

PRESS, REPEAT, RELEASE = 1, 2, 3
# CSI key-code[:alternates] ; modifiers[:event-type] [; text] final
_KITTY_KEY: Final = re.compile(
    r"\x1b\[(?P<code>[\d:]*)(?:;(?P<mods>\d*)(?::(?P<kind>\d+))?(?P<text>;[\d:]*)?)?"
    r"(?P<end>[u~ABCDEFHPQRS])"
)
_FLAGS_REPLY: Final = re.compile(r"\x1b\[\?(\d+)u")


@runtime_checkable
class EarlyKeys(Protocol):
    """An app that wants to hear of a push-to-talk press before its event loop does."""

    def push_to_talk_down(self) -> None:
        """Called from the input thread the moment the key is read (keep it short and
        thread-safe): barge-in then does not wait behind a busy screen."""
        ...


class _FlagsReported(Message):
    """The terminal's answer to ``CSI ? u`` (internal to the driver)."""

    def __init__(self, flags: int) -> None:
        super().__init__()
        self.flags = flags


class KeyReleaseParser(XTermParser):
    """Textual's parser, plus the kitty protocol's event types and its flags reply."""

    def __init__(self, hold_keys: Collection[str], debug: bool = False) -> None:
        self.hold_keys = frozenset(hold_keys)
        self._held: dict[tuple[str, str], str] = {}  # key identity -> name it was pressed as
        super().__init__(debug)

    def _sequence_to_key_events(self, sequence: str, alt: bool = False) -> Iterable[events.Key]:
        if constants.DISABLE_KITTY_KEY or not sequence.startswith("\x1b["):
            yield from super()._sequence_to_key_events(sequence, alt)
            return
        if (reply := _FLAGS_REPLY.fullmatch(sequence)) is not None:
            self._tokens.append(_FlagsReported(int(reply[1])))
            yield _ignored(sequence)  # a key event ends the parser's look-ahead
            return
        match = _KITTY_KEY.fullmatch(sequence)
        if match is None:
            yield from super()._sequence_to_key_events(sequence, alt)
            return
        kind = int(match["kind"] or PRESS)
        # Press and release report the same key code whatever the modifiers did in
        # between (ctrl may go up before space).
        identity = (match["code"].partition(":")[0] or "1", match["end"])
        if kind == RELEASE:
            name = self._held.pop(identity, None)
            if name is not None:
                self._tokens.append(KeyReleased(name))
            yield _ignored(sequence)
            return
        if kind == REPEAT and identity in self._held:  # holding must not toggle
            yield _ignored(sequence)
            return
        if match["kind"] is not None:  # Textual reads "5", not "5:1"
            sequence = (
                f"\x1b[{match['code']};{match['mods'] or '1'}{match['text'] or ''}{match['end']}"
            )
        keys = list(super()._sequence_to_key_events(sequence, alt))
        if kind == PRESS and keys and keys[0].key in self.hold_keys:
            self._held[identity] = keys[0].key
        yield from keys


def _ignored(sequence: str) -> events.Key:
    return events.Key(Keys.Ignore, sequence)


class TarsDriver(LinuxDriver):
    """Textual's Linux/macOS driver with key releases; see the module docstring.

    Made per app by :func:`driver_class`, which sets the class attributes.
    """

    hold_keys: ClassVar[frozenset[str]] = frozenset()
    negotiate: ClassVar[bool] = True

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._step = "off"  # off -> query -> confirm -> done

    def start_application_mode(self) -> None:
        super().start_application_mode()  # type: ignore[no-untyped-call]
        if (
            self.negotiate
            and self.input_tty
            and self._writer_thread is not None  # None: resumed in the background
            and not constants.DISABLE_KITTY_KEY
        ):
            self._step = "query"
            self.write(QUERY_FLAGS)

    def process_message(self, message: Message) -> None:
        # Runs in the input thread; write() hands data to the writer thread.
        if isinstance(message, _FlagsReported):
            self._negotiate(message.flags)
            return
        if (
            isinstance(message, events.Key)
            and message.key in self.hold_keys
            and isinstance(self._app, EarlyKeys)
        ):
            self._app.push_to_talk_down()
        super().process_message(message)

    def _negotiate(self, flags: int) -> None:
        if self._step == "query" and not flags & KITTY_REPORT_EVENT_TYPES:
            self._step = "confirm"
            self.write(ENABLE_EVENT_TYPES + QUERY_FLAGS)
        elif self._step in ("query", "confirm"):
            self._step = "done"
            supported = bool(flags & KITTY_REPORT_EVENT_TYPES)
            super().process_message(KeyReleasesReported(supported, flags))

    def run_input_thread(self) -> None:
        """Textual's input loop with :class:`KeyReleaseParser` in place of its parser."""
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        parser = KeyReleaseParser(self.hold_keys, self._debug)
        decode = getincrementaldecoder("utf-8")().decode

        def process(ready: list[tuple[selectors.SelectorKey, int]], final: bool = False) -> None:
            for index, (_key, mask) in enumerate(ready):
                if mask & selectors.EVENT_READ:
                    data = decode(
                        os.read(self.fileno, 4096), final=final and index == len(ready) - 1
                    )
                    if not data:
                        break  # stdin is a closed pipe
                    for message in parser.feed(data):
                        self.process_message(message)
            for message in parser.tick():
                self.process_message(message)

        try:
            while not self.exit_event.is_set():
                process(selector.select(0.1))
            selector.unregister(self.fileno)
            process(selector.select(0.1), final=True)
        finally:
            selector.close()
            try:
                for _message in parser.feed(""):
                    pass
            except Exception:
                pass


def push_to_talk_keys(ptt_key: str) -> list[str]:
    """The keys that talk: the configured one (and the name legacy terminals give
    ctrl+space), and F5, which every terminal sends."""
    aliases = ["ctrl+@"] if ptt_key == "ctrl+space" else []
    return list(dict.fromkeys([ptt_key, *aliases, "f5"]))


def release_reporting_possible(env: Mapping[str, str] = os.environ) -> bool:
    """False inside multiplexers, which answer for the terminal but drop release events."""
    return (
        not env.get("TMUX") and not env.get("STY") and not env.get("TERM", "").startswith("screen")
    )


def driver_class(
    hold_keys: Collection[str], default: type[Driver], env: Mapping[str, str] = os.environ
) -> type[Driver]:
    """The driver for the app: :class:`TarsDriver` where Textual would use its Linux
    driver (so ``TEXTUAL_DRIVER`` and Windows keep theirs), else ``default``."""
    if sys.platform == "win32" or default is not LinuxDriver:
        return default
    attrs = {"hold_keys": frozenset(hold_keys), "negotiate": release_reporting_possible(env)}
    return type("TarsDriver", (TarsDriver,), attrs)

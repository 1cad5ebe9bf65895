"""The chat screen fits the terminal: layout snapshots at 80x24, 120x40 and 200x60.

Each snapshot is the geometry a user sees (who gets how many columns, what is
shown) plus the rendered screen text, checked against what each size must show.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pytest
from textual.widget import Widget

from tars_core.config import Config
from tars_tui.app import make_app
from tars_tui.panels_control import NARROW_COLUMNS
from tars_tui.screens.chat import ChatScreen
from tars_tui.screens.panels import PanelsOverlay
from tars_tui.widgets.panels import PanelSummary, SidePanels
from tars_tui.widgets.transcript import Transcript
from tests.tui.conftest import wait_until


@dataclass(frozen=True)
class Snapshot:
    width: int
    transcript_width: int
    side_shown: bool
    side_width: int
    summary_shown: bool
    text: str


def screen_text(svg: str) -> str:
    """The words on screen, from Textual's SVG screenshot."""
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def shown(widget: Widget) -> bool:
    return widget.display and widget.region.width > 0 and widget.region.height > 0


async def snapshot(config: Config, size: tuple[int, int]) -> Snapshot:
    app = make_app(config)
    async with app.run_test(size=size) as pilot:
        chat = app.chat
        assert isinstance(chat, ChatScreen)
        await wait_until(pilot, lambda: chat.ready, what="chat screen")
        await pilot.pause()
        side = chat.query_one(SidePanels)
        summary = chat.query_one(PanelSummary)
        text = screen_text(app.export_screenshot())
        return Snapshot(
            width=size[0],
            transcript_width=chat.query_one(Transcript).region.width,
            side_shown=shown(side),
            side_width=side.region.width if shown(side) else 0,
            summary_shown=shown(summary),
            text=text,
        )


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)])
async def test_layout_snapshot(config: Config, size: tuple[int, int]) -> None:
    snap = await snapshot(config, size)
    width = size[0]
    if width < NARROW_COLUMNS:
        # The transcript keeps (almost) the whole width; the panels are one line.
        assert not snap.side_shown
        assert snap.summary_shown
        assert snap.transcript_width >= width - 2, snap
        assert "TTFT" in snap.text and "F2 panels" in snap.text
    else:
        assert snap.side_shown and not snap.summary_shown
        assert snap.side_width >= 40
        assert snap.transcript_width == width - snap.side_width, snap
        # The transcript never gets less than the side column.
        assert snap.transcript_width > snap.side_width
        assert "Latency" in snap.text and "System" in snap.text


async def test_f2_opens_the_panels_as_an_overlay_when_narrow(config: Config) -> None:
    app = make_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.chat
        assert isinstance(chat, ChatScreen)
        await wait_until(pilot, lambda: chat.ready, what="chat screen")
        before = chat.query_one(Transcript).region.width
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(app.screen, PanelsOverlay)
        overlay = app.screen.query_one(SidePanels)
        assert shown(overlay)
        assert "Latency" in screen_text(app.export_screenshot())
        await pilot.press("f2")
        await pilot.pause()
        assert app.screen is chat
        assert chat.query_one(Transcript).region.width == before


async def test_resizing_switches_between_column_and_summary(config: Config) -> None:
    app = make_app(config)
    async with app.run_test(size=(160, 40)) as pilot:
        chat = app.chat
        assert isinstance(chat, ChatScreen)
        await wait_until(pilot, lambda: chat.ready, what="chat screen")
        assert shown(chat.query_one(SidePanels))
        await pilot.resize_terminal(90, 30)
        await pilot.pause()
        assert chat.narrow and not shown(chat.query_one(SidePanels))
        assert shown(chat.query_one(PanelSummary))
        await pilot.resize_terminal(130, 30)
        await pilot.pause()
        assert not chat.narrow and shown(chat.query_one(SidePanels))

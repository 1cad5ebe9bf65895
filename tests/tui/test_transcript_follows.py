"""The transcript follows the end of a streaming reply, and its footer, while the user
has not scrolled up: at 80x24 and 120x40, with spoken replies on and off. Checked on
the rendered screen, as a user sees it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tars_core.config import Config
from tars_tui.app import make_app
from tars_tui.widgets.transcript import AssistantMessage, Transcript
from tests.tui.conftest import wait_until
from tests.tui.test_layout import screen_text

pytestmark = pytest.mark.slow


def long_replies(config: Config, tmp_path: Path, *, speak: bool) -> Config:
    tts = dataclasses.replace(
        config.tts, enabled=speak, output_device=f"file:{tmp_path / 'spoken.wav'}"
    )
    llm = dataclasses.replace(config.llm, max_tokens=160, temperature=0.0)
    return dataclasses.replace(config, llm=llm, tts=tts)


def footer_of(reply: AssistantMessage) -> str:
    return str(reply.meta.render()).strip()


@pytest.mark.parametrize("speak", [False, True], ids=["silent", "speaking"])
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_the_end_of_the_reply_and_its_footer_stay_on_screen(
    config: Config, tmp_path: Path, size: tuple[int, int], speak: bool
) -> None:
    app = make_app(long_replies(config, tmp_path, speak=speak))
    async with app.run_test(size=size) as pilot:
        screen = app.chat
        assert screen is not None
        await wait_until(pilot, lambda: app.engine.is_ready, what="model load")
        if speak:
            await wait_until(
                pilot, lambda: screen.speech.speaker is not None, timeout=120, what="speaker"
            )
        transcript = screen.query_one(Transcript)
        for prompt in ("Tell me a long story about a lighthouse.", "Tell me another one."):
            screen.send(prompt)
            await wait_until(
                pilot,
                lambda: (
                    not screen.generating
                    or (screen._reply is not None and len(screen._reply.text) > 300)
                ),
                what="a few lines of the reply",
            )
            if screen.generating:
                await pilot.pause(0.3)
                assert transcript.is_vertical_scroll_end, "the streaming reply went below the fold"
            await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
            await pilot.pause(0.3)
            reply = list(screen.query(AssistantMessage))[-1]
            footer = footer_of(reply)
            assert "TTFT" in footer
            text = screen_text(app.export_screenshot())
            assert footer.split(" · ")[0] in text, "the reply's footer is not on screen"
            assert transcript.is_vertical_scroll_end
            last_words = reply.text.split()[-2:]
            assert " ".join(last_words) in " ".join(text.split()), "the end of the reply"
        # Scrolled up by the user while a reply streams: it stays where they put it.
        screen.send("One more, please.")
        await wait_until(pilot, lambda: bool(screen._reply and screen._reply.text), what="text")
        transcript.scroll_home(animate=False)  # what the mouse wheel or PageUp does
        await wait_until(pilot, lambda: not screen.generating, timeout=120, what="the reply")
        await pilot.pause(0.3)
        assert transcript.scroll_y == 0

"""Textual command palette entries, read from the slash-command registry."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tars_tui import commands
from tars_tui.host import CommandRunner


class SlashCommands(Provider):
    def _run(self, name: str) -> None:
        screen = self.app.screen
        if isinstance(screen, CommandRunner):
            screen.run_command(f"/{name}")

    async def discover(self) -> Hits:
        for cmd in commands.REGISTRY.values():
            yield DiscoveryHit(cmd.slash, partial(self._run, cmd.name), help=cmd.summary)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for cmd in commands.REGISTRY.values():
            score = matcher.match(f"{cmd.slash} {cmd.summary}")
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(cmd.slash),
                    partial(self._run, cmd.name),
                    help=cmd.summary,
                )

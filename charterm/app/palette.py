"""Every /command in Textual's command palette (Ctrl+P), beside Textual's own (the theme, quit, the keys)."""

from functools import partial
from typing import NamedTuple

from textual.command import DiscoveryHit, Hit, Hits, Provider

from charterm.app.commands import COMMANDS


class Entry(NamedTuple):
    """One line of the palette: what it shows, its help, and the command line it runs (or starts)."""

    title: str
    help: str
    line: str
    runs: bool  # False: the line goes in the prompt, for the person to finish


def palette_entries() -> list[Entry]:
    """Each /command as the palette lists it: as it is (when it needs no argument), with each of its choices,
    and as a start to finish in the prompt (when it needs an argument of the person's own)."""
    entries = []
    for c in COMMANDS:
        optional = not c.args or c.args.startswith("[")
        if optional:
            entries.append(Entry(f"/{c.name}", c.help, f"/{c.name}", True))
        entries += [Entry(f"/{c.name} {choice}", c.help, f"/{c.name} {choice}", True) for choice in c.choices]
        if not optional and c.args != "|".join(c.choices):
            entries.append(Entry(f"/{c.name} {c.args}", c.help, f"/{c.name} ", False))
    return entries


class CharTermCommands(Provider):
    """The palette's charterm commands: choosing one runs it, or puts its start in the prompt."""

    def _choose(self, entry: Entry):
        return partial(self.app.run_command if entry.runs else self.app.start_command, entry.line)

    async def discover(self) -> Hits:
        for entry in palette_entries():
            yield DiscoveryHit(entry.title, self._choose(entry), help=entry.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in palette_entries():
            score = matcher.match(entry.title)
            if score > 0:
                yield Hit(score, matcher.highlight(entry.title), self._choose(entry), text=entry.title, help=entry.help)

"""Bans in the app: /ban TEXT, /unban TEXT, /ban alone lists them; saved with the story's settings; the model's
turn never holds a banned text, and the screen never shows one being taken back.

The real app runs headless on a temporary CHARTERM_HOME with the shipped model, its worker on a thread of the test
process over real pipes; what is stored is read through a second connection.
"""

import asyncio

from apphelpers import RecordingApp, idle, stored, stored_settings, submit, type_line, view, wait_ready, wait_until
from conftest import ROOT

from charterm.app.story_view import MODEL

ANNA = ROOT / "models" / "anna.safetensors"


class ScreenApp(RecordingApp):
    """The real app, also keeping the story as the screen showed it after every char the worker sent."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.screens: list[str] = []

    def _on_appended(self, ev) -> None:
        super()._on_appended(ev)
        if ev.author == MODEL:
            self.screens.append(view(self).text)


def run(test):
    app = ScreenApp(model=str(ANNA), in_thread=True)

    async def main():
        async with app.run_test(size=(80, 24)) as pilot:
            try:
                await wait_ready(pilot)
                await test(app, pilot)
            finally:
                await pilot.press("ctrl+q")

    asyncio.run(main())


async def settle(pilot, line: str, predicate=lambda: True) -> None:
    await submit(pilot, line)
    await wait_until(pilot, lambda: predicate() and idle(pilot.app), 20, line)


def test_ban_unban_and_the_list_are_saved_with_the_story_and_bad_ones_say_why(home):
    async def test(app, pilot):
        await settle(pilot, "/ban said", lambda: stored_settings().get("bans") == ["said"])
        await settle(pilot, '/ban " Levin"', lambda: stored_settings().get("bans") == ["said", " Levin"])
        await settle(pilot, "/ban said")
        assert app.messages()[-1] == '"said" is already banned'
        await settle(pilot, "/ban")
        assert app.notes[-1] == ("information", '"said"\n" Levin"', "bans")
        for line, says in (
            ('/ban ""', "/ban: a banned text needs at least one char"),
            ("/ban " + "x" * 101, "/ban: a banned text can be at most 100 chars (got 101)"),
            ('/ban "said', '/ban "TEXT": a text in quotes ends with a quote (got "said)'),
            ("/unban Anna", None),
        ):
            await settle(pilot, line)
            if says:
                assert app.errors()[-1] == says
        assert app.messages()[-1] == '"Anna" is not banned'
        await settle(pilot, "/unban said", lambda: stored_settings().get("bans") == [" Levin"])
        await settle(pilot, "/ban Levin\\n", lambda: stored_settings().get("bans") == [" Levin", "Levin\n"])

    run(test)


def test_the_models_turn_never_holds_a_banned_text_and_what_the_screen_showed_is_never_taken_back(home):
    async def test(app, pilot):
        for line in ("/seed 2", "/chars 2000", "/adapt off", "/ban said", "/ban Levin"):
            await settle(pilot, line)
        await type_line(pilot, '"Yes," said Levin')
        await wait_until(pilot, lambda: len(stored()) == 2 and idle(app), 60, "the model's turn")
        written = stored()[1][1]
        assert len(written) >= 2000 and "said" not in written and "Levin" not in written
        final = view(app).text
        assert final == '"Yes," said Levin' + written
        assert len(app.screens) > 10 and all(final.startswith(shown) for shown in app.screens)

    run(test)

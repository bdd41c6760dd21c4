"""Choices in the app: Ctrl+O and /choices K write K continuations at once, shown stacked as they are written; 1-K
(or the arrows and Enter) picks one, which becomes the model's turn with the others kept as its versions; Esc stops
them all and keeps what each wrote.

The real app runs headless at 80x24 on a temporary CHARTERM_HOME with the shipped model, its worker on a thread of
the test process over real pipes; what is stored is read through a second connection.
"""

import asyncio

from apphelpers import (
    RecordingApp,
    idle,
    shown,
    stored,
    stored_story,
    submit,
    type_line,
    view,
    wait_idle,
    wait_ready,
    wait_until,
)
from conftest import ROOT

from charterm.app.choice_list import MAX_LINES, ChoiceList
from charterm.app.screens import ForkScreen
from charterm.app.story_view import MODEL, PERSON, StoryView
from charterm.app.widgets import PromptInput

ANNA = ROOT / "models" / "anna.safetensors"


def run(test, size=(80, 24)):
    app = RecordingApp(model=str(ANNA), in_thread=True)

    async def main():
        async with app.run_test(size=size) as pilot:
            try:
                await wait_ready(pilot)
                await test(app, pilot)
            finally:
                await pilot.press("ctrl+q")

    asyncio.run(main())
    return app


def choices(app) -> ChoiceList:
    return app.query_one(ChoiceList)


def versions_stored() -> list[str]:
    """The texts of the turns after the story's first turn (the versions the choices were kept as), oldest first."""
    story = stored_story()
    kids = story.children[story.turns[0].id]
    from charterm.story.store import Store

    store = Store()
    try:
        texts = {tid: text for tid, _, _, text, _ in store.tree(story.id, start=10**6)}
    finally:
        store.close()
    return [texts[k] for k in kids]


async def begin(pilot, *lines: str) -> None:
    """The person's turn "Anna" alone (the model writes 0 chars), then 60 chars a turn (or `lines`)."""
    for line in ("/seed 4", "/chars 0", "/adapt off"):
        await submit(pilot, line)
    await wait_idle(pilot)
    await type_line(pilot, "Anna")
    await wait_until(pilot, lambda: len(stored()) == 1 and idle(pilot.app), 30, "the person's turn")
    for line in ("/chars 60", *lines):
        await submit(pilot, line)
    await wait_idle(pilot)


async def written(pilot) -> list[str]:
    await wait_until(pilot, lambda: choices(pilot.app).turns and idle(pilot.app), 30, "the choices")
    return list(choices(pilot.app).texts)


def test_ctrl_o_writes_choices_stacked_at_80x24_and_a_digit_picks_one_the_others_kept_as_versions(home):
    got = {}

    async def test(app, pilot):
        await begin(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: choices(app).display, 10, "the list")
        assert choices(app).has_focus and len(choices(app).texts) == 3
        texts = got["texts"] = await written(pilot)
        assert all(len(t) >= 60 for t in texts) and len(set(texts)) == 3
        assert versions_stored() == texts and stored() == [(PERSON, "Anna"), (MODEL, texts[0])]
        box, story = choices(app).region, app.query_one(StoryView).region
        assert 3 <= box.height <= MAX_LINES + 1 and story.height >= 3 and box.width == 80  # stacked, the story above
        rows = [str(choices(app).get_option_at_index(i).prompt) for i in range(3)]
        assert [r.split()[0] for r in rows] == ["1", "2", "3"]
        await pilot.press("2")
        await wait_until(pilot, lambda: not choices(app).display and idle(app), 10, "the pick")
        assert stored() == [(PERSON, "Anna"), (MODEL, texts[1])] and view(app).text == "Anna" + texts[1]
        assert shown(app, "#status-line").endswith("version 2/3") and app.query_one(PromptInput).has_focus
        await pilot.press("alt+left")
        await wait_until(pilot, lambda: stored()[-1] == (MODEL, texts[0]) and idle(app), 10, "version 1")
        assert shown(app, "#status-line").endswith("version 1/3")
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, ForkScreen), 10, "the fork list")
        fork = app.screen.query_one("OptionList")
        listed = [str(fork.get_option_at_index(i).prompt) for i in range(fork.option_count)]
        assert sum("[1/3]" in r or "[2/3]" in r or "[3/3]" in r for r in listed) == 3
        await pilot.press("escape")

    run(test)

    async def again(app, pilot):  # the same seed, the same choices
        await begin(pilot)
        await submit(pilot, "/choices")
        assert await written(pilot) == got["texts"]

    import shutil

    shutil.rmtree(home)
    run(again)


def test_esc_stops_every_choice_and_keeps_what_each_wrote_and_bad_counts_say_why(home):
    async def test(app, pilot):
        await begin(pilot, "/chars 20000")
        for line, says in (
            ("/choices 0", "/choices K: K is how many continuations to write at once, 2 to 9 (got '0')"),
            ("/choices 10", "(got '10')"),
            ("/choices many", "(got 'many')"),
            ("/choices -2", "(got '-2')"),
        ):
            await submit(pilot, line)
            assert app.errors()[-1].endswith(says)
        await submit(pilot, "/choices 2")
        await wait_until(pilot, lambda: all(len(t) > 30 for t in choices(app).texts), 20, "some chars in each")
        await pilot.press("escape")
        texts = await written(pilot)
        assert len(texts) == 2 and all(30 < len(t) < 20000 for t in texts)
        assert versions_stored() == texts and stored()[-1] == (MODEL, texts[0])
        await pilot.press("down", "enter")  # the arrows and Enter pick too
        await wait_until(pilot, lambda: stored()[-1] == (MODEL, texts[1]) and idle(app), 10, "the pick")
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: stored() == [(PERSON, "Anna")] and idle(app), 10, "the undo")

    run(test)

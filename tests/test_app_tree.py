"""A story is a tree of turns, in the app: versions (Ctrl+R, Alt+Left/Right, /version), redo (Ctrl+Y, /redo),
the fork list (Ctrl+F, /fork) and editing a turn (/edit).

Every test runs the real CharTermApp on a temporary CHARTERM_HOME with the session's tiny model, headless, its
worker on a thread of the test process over real pipes. What a test checks is what the person sees (the story
view, the status line, the fork list) and what is stored (read through a second connection to the database).
"""

from apphelpers import (
    idle,
    run_app,
    runs_of,
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
from textual.widgets import OptionList

from charterm.app.screens import ForkScreen
from charterm.app.story_view import MODEL, PERSON
from charterm.app.widgets import PromptInput, shown_word
from charterm.story.store import Store


def status(app) -> str:
    return shown(app, "#status-line")


def prompt(app) -> PromptInput:
    return app.query_one(PromptInput)


def texts() -> dict[int, str]:
    """Every turn's whole text by id, as stored (every branch, not only the story's path)."""
    store = Store()
    try:
        return {tid: text for tid, _, _, text, _ in store.tree(store.load("untitled").id, start=10**6)}
    finally:
        store.close()


def told(app, words: str) -> bool:
    """Some notification of the app's said `words`."""
    return any(words in m for m in app.messages())


def children() -> dict[int | None, list[int]]:
    """The stored tree: each turn's id (None: the story's start) -> the ids of the turns after it, oldest first."""
    return stored_story().children


async def write_turn(pilot, text: str, timeout: float = 20) -> None:
    """Type `text` + Enter in the prompt and wait until the model's turn is committed and the worker idle."""
    app = pilot.app
    before = len(stored())
    await type_line(pilot, text)
    await wait_until(pilot, lambda: len(stored()) == before + 2 and idle(app), timeout, "the turn")


async def press_and_settle(pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await wait_idle(pilot)


async def settled(pilot, predicate, what: str) -> None:
    """Wait until `predicate` holds and the worker is idle: what a line sent through the prompt led to."""
    await wait_until(pilot, lambda: predicate() and idle(pilot.app), 20, what)


async def begin(pilot, chars: int = 30) -> None:
    """The model loaded, writing `chars` chars a turn, and a first exchange: "Anna" and the model's answer."""
    await wait_ready(pilot)
    await submit(pilot, f"/chars {chars}")
    await write_turn(pilot, "Anna")


def test_retry_makes_versions_and_alt_left_right_and_version_switch_between_them(home, tiny_model):
    async def test(app, pilot):
        await begin(pilot)
        assert "version" not in status(app)  # one version: the status line says nothing of versions
        for n in (2, 3):
            await press_and_settle(pilot, "ctrl+r")
            assert status(app).endswith(f", version {n}/{n}")
        anna = stored_story().turns[0].id
        versions = children()[anna]
        assert len(versions) == 3
        for key, k in (("alt+left", 2), ("alt+left", 1), ("alt+right", 2)):
            await press_and_settle(pilot, key)
            assert status(app).endswith(f", version {k}/3")
            assert view(app).runs == [(PERSON, "Anna"), (MODEL, texts()[versions[k - 1]])] == stored()
            assert stored_story().turns[-1].id == versions[k - 1]
        await submit(pilot, "/version next")
        await settled(pilot, lambda: status(app).endswith(", version 3/3"), "version 3/3")
        assert stored()[-1][1] == texts()[versions[2]]
        await press_and_settle(pilot, "alt+right")  # there is no fourth
        assert "no version 4: this turn has 3" in app.errors()
        assert stored_story().turns[-1].id == versions[2]
        await submit(pilot, "/version sideways")
        await wait_until(pilot, lambda: told(app, "/version prev or /version next (Alt+Left, Alt+Right)"), 5)

    run_app(test, model=tiny_model)


def test_the_version_shown_is_on_the_status_line_after_reopening(home, tiny_model):
    async def first(app, pilot):
        await begin(pilot)
        await press_and_settle(pilot, "ctrl+r")
        await press_and_settle(pilot, "alt+left")
        assert status(app).endswith(", version 1/2")

    async def second(app, pilot):
        await wait_idle(pilot)
        assert status(app).endswith(", version 1/2")
        assert view(app).runs == stored()

    run_app(first, model=tiny_model)
    run_app(second)


def test_undo_keeps_the_turn_and_ctrl_y_or_redo_brings_it_back(home, tiny_model):
    async def test(app, pilot):
        await begin(pilot)
        story = stored()
        await press_and_settle(pilot, "ctrl+z")
        assert view(app).runs == [(PERSON, "Anna")] == stored()
        await press_and_settle(pilot, "ctrl+y")
        assert view(app).runs == story == stored()
        assert f"redid the model's {len(story[1][1])} chars" in app.messages()
        await press_and_settle(pilot, "ctrl+z", "ctrl+z")
        assert view(app).runs == [] == stored()
        await submit(pilot, "/redo")
        await settled(pilot, lambda: stored() == [(PERSON, "Anna")], "the redo")
        assert view(app).runs == [(PERSON, "Anna")]
        assert status(app) == "1 turns, 4 chars"
        await press_and_settle(pilot, "ctrl+y", "ctrl+y")
        assert view(app).runs == story == stored()
        assert "nothing to redo" in app.messages()
        assert prompt(app).text == ""  # the prompt's own undo and redo never ran

    run_app(test, model=tiny_model)


def test_fork_n_then_writing_makes_a_branch_and_the_old_continuation_stays(home, tiny_model):
    async def test(app, pilot):
        await begin(pilot)
        await write_turn(pilot, " Levin")
        old = stored_story().turns
        await submit(pilot, f"/fork {old[1].id}")
        await settled(pilot, lambda: len(stored()) == 2, "the checkout")
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, old[1].text)] == stored()
        assert status(app).startswith("2 turns, ")
        await write_turn(pilot, " Kitty")
        now = stored_story().turns
        assert [t.id for t in now[:2]] == [old[0].id, old[1].id] and now[2].text == " Kitty"
        assert children()[old[1].id] == [old[2].id, now[2].id]  # the old continuation, then the new branch
        assert children()[old[2].id] == [old[3].id]
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, old[1].text), (PERSON, " Kitty"), (MODEL, now[3].text)]

        await submit(pilot, "/fork 0")  # before the first turn: the next turn is a new beginning
        await settled(pilot, lambda: stored() == [], "the checkout")
        assert view(app).runs == []
        await write_turn(pilot, "Stiva")
        assert stored()[0] == (PERSON, "Stiva") and children()[None] == [old[0].id, stored_story().turns[0].id]
        assert len(texts()) == 8  # nothing was lost

        await submit(pilot, "/fork twelve")
        await wait_until(pilot, lambda: told(app, "/fork N: N is a turn's id, as /fork lists them (got 'twelve')"), 5)

    run_app(test, model=tiny_model)


def fork_list(app) -> OptionList:
    return app.screen.query_one(OptionList)


def rows(app) -> list[str]:
    options = fork_list(app)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def open_fork_list(pilot) -> None:
    await pilot.press("ctrl+f")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ForkScreen), 5, "the fork list")
    await pilot.pause()


def test_the_fork_list_shows_every_turn_and_enter_goes_to_one_esc_closes_it(home, tiny_model):
    async def test(app, pilot):
        await begin(pilot)
        await press_and_settle(pilot, "ctrl+r")
        first, second = children()[stored_story().turns[0].id]
        await open_fork_list(pilot)
        listed = rows(app)
        assert len(listed) == 4 and listed[0].endswith("0  (before the first turn)")
        assert listed[1].split()[:4] == ["*", "1", "person", "Anna"]
        assert listed[2].split()[:3] == [str(first), "model", "[1/2]"] and not listed[2].startswith("*")
        assert listed[3].split()[:4] == ["*", str(second), "model", "[2/2]"]
        for row, tid in ((listed[2], first), (listed[3], second)):
            assert shown_word(texts()[tid][:40]).strip() in row
        assert fork_list(app).highlighted == 3  # the story's last turn

        await pilot.press("escape")  # closes the list, changes nothing
        await wait_until(pilot, lambda: not isinstance(app.screen, ForkScreen), 5, "the list to close")
        assert stored_story().turns[-1].id == second and prompt(app).has_focus

        await open_fork_list(pilot)
        await pilot.press("up", "enter")
        await settled(pilot, lambda: stored_story().turns[-1].id == first, "the checkout")
        assert not isinstance(app.screen, ForkScreen) and prompt(app).has_focus
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, texts()[first])] == stored()
        assert status(app).endswith(", version 1/2")

        await open_fork_list(pilot)
        assert rows(app)[2].startswith("*") and not rows(app)[3].startswith("*")
        await pilot.press("home", "enter")  # row 0: before the first turn
        await settled(pilot, lambda: stored() == [], "the checkout")
        assert view(app).runs == [] and len(texts()) == 3

    run_app(test, model=tiny_model)


def test_edit_n_puts_the_turn_in_the_prompt_and_enter_saves_a_new_version(home, tiny_model):
    async def test(app, pilot):
        await begin(pilot)
        anna, answer = stored_story().turns
        prompt(app).set_text("half typed")
        app.run_command(f"/edit {answer.id}")  # as the palette runs it, with something in the prompt
        await wait_idle(pilot)
        assert prompt(app).text == answer.text
        assert status(app) == f"editing turn {answer.id}: Enter saves it as a new version, Esc cancels"
        await pilot.press("escape")
        assert prompt(app).text == "half typed" and app.editing is None
        assert status(app).startswith("2 turns, ") and stored() == [(PERSON, "Anna"), (MODEL, answer.text)]

        prompt(app).clear()
        await submit(pilot, "/edit")  # the person's last turn
        await wait_until(pilot, lambda: prompt(app).text == "Anna", 5, "the turn in the prompt")
        assert app.editing == anna.id
        prompt(app).set_text("/Anne\\n")  # while editing, a leading / is text, and \n a new line
        await pilot.press("enter")
        await settled(pilot, lambda: stored() == [(PERSON, "/Anne\n")], "the edit")
        assert view(app).runs == stored()
        assert children()[None] == [anna.id, stored_story().turns[0].id]
        assert texts()[anna.id] == "Anna" and texts()[answer.id] == answer.text  # the old version is kept
        assert status(app) == "1 turns, 6 chars, version 2/2"
        assert prompt(app).text == "" and app.editing is None

        await type_line(pilot, "")  # the model goes on from the new version
        await wait_until(pilot, lambda: len(stored()) == 2 and idle(app), 20, "the model's turn")
        model_turn = stored_story().turns[-1]
        await submit(pilot, f"/edit {model_turn.id}")
        await wait_until(pilot, lambda: app.editing == model_turn.id, 5, "the edit to begin")
        prompt(app).set_text("a model's turn, put right")
        await pilot.press("enter")
        await settled(pilot, lambda: stored()[-1] == (MODEL, "a model's turn, put right"), "the edit")
        assert stored() == [(PERSON, "/Anne\n"), (MODEL, "a model's turn, put right")] == view(app).runs

        await submit(pilot, "/edit 999")
        await wait_until(pilot, lambda: told(app, "turn 999 is not in the story shown: /fork lists its turns"), 5)
        await submit(pilot, "/edit")
        await wait_until(pilot, lambda: app.editing == stored_story().turns[0].id, 5, "the edit to begin")
        prompt(app).clear()
        await pilot.press("enter")  # nothing to save: it says so and stays in the edit
        await wait_until(pilot, lambda: told(app, "an edited turn needs some text: type it, or Esc to cancel"), 5)
        assert app.editing == stored_story().turns[0].id

    run_app(test, model=tiny_model)


def test_a_branch_made_in_one_window_reaches_the_other_and_nothing_is_lost(home, tiny_model):
    from charterm.engine.checkpoint import load_model
    from charterm.story.session import Session

    async def test(app, pilot):
        await begin(pilot, chars=20)
        other = Store()  # the second window: a session of its own on the same story
        try:
            window = Session(load_model(tiny_model), other, other.load("untitled"))
            anna, answer = window.turns
            await submit(pilot, f"/fork {anna.id}")  # the first window branches
            await settled(pilot, lambda: len(stored()) == 1, "the checkout")
            await write_turn(pilot, " Levin")
            assert window.sync() and window.runs() == stored() and view(app).runs == runs_of(stored())
            assert window.story.children[anna.id] == [answer.id, window.turns[1].id]

            window.checkout(answer.id)  # the second window goes back to the first answer...
            window.append_person_turn(" Kitty")  # ... and writes there
            want = [(PERSON, "Anna"), (MODEL, answer.text), (PERSON, " Kitty")]
            await wait_until(pilot, lambda: view(app).runs == want and told(app, "changed in another window"), 10)
            await write_turn(pilot, " Then")  # after the other window's turn, never over it
            assert stored()[:4] == [*want, (PERSON, " Then")] and view(app).runs == runs_of(stored())
            assert len(texts()) == 7  # both windows' turns, every branch
        finally:
            other.close()

    run_app(test, model=tiny_model)

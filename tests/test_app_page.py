"""The page in the app, driven through Textual's Pilot: soft and hard wrap, the multi-line prompt and its history,
the welcome, /copy, the command palette and the theme; what is remembered across runs.

As in test_app.py, every test runs the real CharTermApp on a temporary CHARTERM_HOME with the session's tiny model
(its worker on a thread of the test process), and checks what the person sees and what is stored.
"""

import json

from apphelpers import (
    gate_the_model_load,
    run_app,
    stored,
    stored_text,
    submit,
    type_line,
    view,
    wait_idle,
    wait_ready,
    wait_until,
)
from textual import events
from textual.command import CommandPalette
from textual.widgets import OptionList

from charterm.app.commands import COMMANDS
from charterm.app.story_view import MODEL, PERSON
from charterm.app.widgets import PromptInput
from charterm.paths import history_path, preferences_path
from charterm.story.store import Store, Turn

BOOK = "It was a bright\ncold day in April.\n\nAnd the clocks\nwere striking thirteen."


def write_story(model, turns) -> None:
    """The story "untitled" with these (author, text) turns, written beforehand (the app opens it)."""
    store = Store()
    try:
        story = store.open("untitled", str(model))
        revision = story.revision
        for author, text in turns:
            revision = store.append_turn(story.id, revision, Turn(author, text))
        store.set_last_story("untitled")
    finally:
        store.close()


def rows(app) -> list[str]:
    """The story pane's rows as drawn, trailing blanks stripped, blank rows at the end dropped."""
    story = view(app)
    lines = [story.render_line(y).text.rstrip() for y in range(story.size.height)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def prompt(app) -> PromptInput:
    return app.query_one(PromptInput)


def preferences() -> dict:
    return json.loads(preferences_path().read_text(encoding="utf-8"))


# --- soft and hard wrap ----------------------------------------------------------------------------------


def test_wrap_soft_by_default_hard_on_request_and_remembered(home, tiny_model):
    write_story(tiny_model, [(PERSON, BOOK)])
    soft = ["It was a bright cold day in April.", "", "And the clocks were striking thirteen."]
    hard = ["It was a bright", "cold day in April.", "", "And the clocks", "were striking thirteen."]

    async def first(app, pilot):
        await wait_idle(pilot)
        await wait_until(pilot, lambda: rows(app) == soft, 5, "the soft-wrapped story")
        assert not preferences_path().exists()  # nothing saved until a preference changes
        await submit(pilot, "/wrap hard")
        await pilot.pause()
        assert rows(app) == hard and "wrap: hard" in app.messages()
        assert view(app).text == BOOK == stored_text()  # the display changed, not the story
        assert preferences() == {"wrap": "hard"}
        await submit(pilot, "/wrap sometimes")
        assert app.errors() == ["/wrap soft (paragraphs fill the pane) or /wrap hard (the text's own line breaks)"]

    async def second(app, pilot):
        await wait_idle(pilot)
        await wait_until(pilot, lambda: rows(app) == hard, 5, "the story, as the last run showed it")
        await submit(pilot, "/wrap soft")
        await pilot.pause()
        assert rows(app) == soft and preferences() == {"wrap": "soft"}

    run_app(first, model=tiny_model)
    run_app(second)


# --- the prompt: several lines, a paste, the inputs sent before ---------------------------------------------


def test_a_new_line_key_and_a_paste_make_one_turn_of_several_lines(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 0")  # the model writes nothing: each turn is the person's
        await type_line(pilot, "Anna", enter=False)
        await pilot.press("ctrl+j")  # what Ctrl+J sends in any terminal, and tmux
        await type_line(pilot, "went", enter=False)
        await pilot.press("shift+enter")  # where the terminal reports it (the kitty keyboard protocol)
        await type_line(pilot, "out", enter=False)
        await pilot.press("alt+enter")
        await pilot.pause()
        assert prompt(app).text == "Anna\nwent\nout\n"
        assert prompt(app).size.height == 4  # the prompt grows with its lines
        await pilot.press("enter")
        await wait_idle(pilot)
        assert stored() == [(PERSON, "Anna\nwent\nout\n")] and prompt(app).text == ""
        assert prompt(app).size.height == 1

        app.post_message(events.Paste("one\r\ntwo\n\nthree"))  # as the driver posts a bracketed paste
        await wait_until(pilot, lambda: prompt(app).text == "one\ntwo\n\nthree", 5, "the paste")
        await pilot.press("enter")
        await wait_idle(pilot)
        assert stored() == [(PERSON, "Anna\nwent\nout\n"), (PERSON, "one\ntwo\n\nthree")]
        assert view(app).text == stored_text()
        assert rows(app) == ["Anna went out one two", "", "three"]  # soft wrap: the story reads as prose

    run_app(test, model=tiny_model)


def test_keys_that_arrive_together_are_taken_in_order(home, tiny_model):
    """A terminal (tmux send-keys, a fast typist over SSH) can deliver "Anna" and Enter in one read."""

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 0")
        await wait_idle(pilot)
        for key, char in [*((c, c) for c in "/wr"), ("tab", "\t"), *((c, c) for c in "hard"), ("enter", "\r")]:
            app.post_message(events.Key(key, char))  # as the driver posts them, without waiting in between
        await wait_until(pilot, lambda: view(app).wrap == "hard", 5, "/wrap hard")
        for key, char in [*((c, c) for c in "Anna"), ("ctrl+j", "\n"), ("w", "w"), ("enter", "\r")]:
            app.post_message(events.Key(key, char))
        await wait_until(pilot, lambda: stored() == [(PERSON, "Anna\nw")] and not app.pending, 5, "the turn")
        assert prompt(app).text == ""

    run_app(test, model=tiny_model)


def test_up_and_down_recall_what_was_sent_in_this_run_and_the_last(home, tiny_model):
    async def first(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 0")
        await type_line(pilot, "first")
        await wait_idle(pilot)
        await submit(pilot, "second\nline")
        await wait_idle(pilot)
        await type_line(pilot, "draft", enter=False)
        await pilot.press("up")
        assert prompt(app).text == "second\nline" and prompt(app).cursor_location == (1, 4)
        await pilot.press("up")  # within the input first: the cursor goes to its first line
        assert prompt(app).text == "second\nline" and prompt(app).cursor_location[0] == 0
        for want in ("first", "/chars 0", "/chars 0"):  # the oldest stays
            await pilot.press("up")
            assert prompt(app).text == want
        for want in ("first", "second\nline", "draft", "draft"):  # past the newest: what was being typed
            await pilot.press("down")
            assert prompt(app).text == want
        await pilot.press("enter")
        await wait_idle(pilot)
        assert [text for _, text in stored()] == ["first", "second\nline", "draft"]

    async def second(app, pilot):
        await wait_ready(pilot)
        for want in ("draft", "second\nline"):
            await pilot.press("up")
            assert prompt(app).text == want
        await pilot.press("down", "down")
        assert prompt(app).text == ""

    run_app(first, model=tiny_model)
    assert json.loads(history_path().read_text(encoding="utf-8")) == ["/chars 0", "first", "second\nline", "draft"]
    run_app(second)


def test_tab_completion_shows_greyed_and_right_takes_it(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await type_line(pilot, "/wr", enter=False)
        assert prompt(app).suggestion == "ap "
        await pilot.press("right")
        await type_line(pilot, "h", enter=False)
        assert prompt(app).text == "/wrap h" and prompt(app).suggestion == "ard"
        await pilot.press("tab", "enter")
        await pilot.pause()
        assert view(app).wrap == "hard"

    run_app(test, model=tiny_model)


# --- the welcome -------------------------------------------------------------------------------------------


def test_an_empty_story_shows_the_welcome_until_its_first_text(home, tiny_model, monkeypatch):
    gate = gate_the_model_load(monkeypatch)

    async def test(app, pilot):
        await pilot.pause()
        assert rows(app) == []  # while the model loads nothing says the story is empty
        gate.set()
        await wait_ready(pilot)
        shown = "\n".join(rows(app))
        assert shown.startswith("Type the start of a story below and press")
        for key in ("Enter", "Esc, Ctrl+C", "Ctrl+Z", "F1"):
            assert f"\n{key}  " in shown
        assert str(home) in shown.replace("\n", "")  # where the stories are saved
        await submit(pilot, "/chars 0")
        await type_line(pilot, "Once")
        await wait_idle(pilot)
        assert rows(app) == ["Once"]
        await pilot.press("ctrl+z")
        await wait_idle(pilot)
        assert rows(app)[0].startswith("Type the start")  # empty again: the welcome is back

    run_app(test, model=tiny_model)


# --- /copy -------------------------------------------------------------------------------------------------


def test_copy_puts_the_story_or_its_last_turn_on_the_clipboard(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/copy")
        assert app.messages()[-1] == "nothing to copy yet"
        await submit(pilot, "/chars 20")
        await submit(pilot, "Anna\nsaid")
        await wait_until(pilot, lambda: len(stored()) == 2 and app.snapshot.turns == 2 and not app.pending, 20)
        await submit(pilot, "/copy")
        story = stored_text()
        assert app.clipboard == story and story.startswith("Anna\nsaid")  # as written, not as shown
        assert app.messages()[-1] == f"copied the story to the clipboard: {len(story):,} chars"
        await submit(pilot, "")  # the model goes on: a second model turn, one run on screen
        await wait_until(pilot, lambda: len(stored()) == 3 and not app.pending, 20, "the second model turn")
        turns = stored()
        assert [a for a, _ in turns] == [PERSON, MODEL, MODEL]
        await submit(pilot, "/copy last")
        assert app.clipboard == turns[2][1]
        assert app.messages()[-1] == f"copied the last turn to the clipboard: {len(turns[2][1]):,} chars"
        await pilot.press("ctrl+z")
        await wait_idle(pilot)
        await submit(pilot, "/copy last")
        assert app.clipboard == turns[1][1]  # after an undo, the turn before
        await submit(pilot, "/copy all")
        assert app.errors() == ["/copy copies the story, /copy last its last turn"]

    run_app(test, model=tiny_model)


# --- the command palette and the theme ----------------------------------------------------------------------


async def palette_options(pilot, query: str) -> list[str]:
    """Open the command palette (Ctrl+P), type `query`, and return the titles it lists."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), 5, "the palette")
    if query:
        await pilot.press(*query)
    options = app.screen.query_one(OptionList)
    await wait_until(pilot, lambda: options.option_count > 0, 5, "the palette's hits")
    await pilot.pause(0.2)  # the search streams its hits in
    return [str(options.get_option_at_index(i).prompt).split("\n")[0] for i in range(options.option_count)]


def test_the_palette_lists_every_command_and_runs_the_chosen_one(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        listed = await palette_options(pilot, "")
        assert {f"/{c.name}" for c in COMMANDS} <= {title.split()[0] for title in listed}
        assert "Theme" in listed and "/stop sentence" in listed and "/topk N" in listed
        await pilot.press("escape")  # closes the palette (it is not the model's Stop)
        await wait_until(pilot, lambda: not isinstance(app.screen, CommandPalette), 5)
        assert (await palette_options(pilot, "wrap hard"))[0] == "/wrap hard"
        await pilot.press("enter")
        await wait_until(pilot, lambda: view(app).wrap == "hard", 5, "the command to run")
        assert (await palette_options(pilot, "topk"))[0] == "/topk N"
        await pilot.press("enter")  # a command that needs a value: its start goes in the prompt
        await wait_until(pilot, lambda: prompt(app).text == "/topk ", 5)
        assert prompt(app).has_focus

    run_app(test, model=tiny_model)


def test_the_theme_chosen_in_the_palette_is_remembered(home, tiny_model):
    async def first(app, pilot):
        await wait_ready(pilot)
        assert app.theme == "textual-dark"
        await palette_options(pilot, "theme")
        await pilot.press("enter")  # Textual's theme picker
        await pilot.pause(0.2)
        await palette_options_typed(pilot, "nord")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.theme == "nord", 5, "the theme")
        await wait_until(pilot, lambda: preferences_path().exists() and preferences() == {"theme": "nord"}, 5)

    async def second(app, pilot):
        await wait_ready(pilot)
        assert app.theme == "nord"

    run_app(first, model=tiny_model)
    run_app(second)


async def palette_options_typed(pilot, query: str) -> None:
    """Type `query` into the palette already open (the theme picker) and wait for its hits."""
    await pilot.press(*query)
    options = pilot.app.screen.query_one(OptionList)
    await wait_until(pilot, lambda: options.option_count > 0, 5, "the picker's hits")
    await pilot.pause(0.2)

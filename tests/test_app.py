"""The full-screen app driven through Textual's Pilot: the story, keys, slash commands, training, restarts.

Every test runs the real CharTermApp on a temporary CHARTERM_HOME with the session's tiny model, headless.
The model worker runs on a thread of the test process over real pipes (the real worker code, without a new
python and torch per test), except where a test says it runs the worker as the real child process. What a
test checks is what the person sees (the story view, the card, the panel, notifications) and what is stored
(read through a second connection to the database).
"""

import os
import shutil
import signal
import sys

import pytest
from apphelpers import (
    FAKE_TRAINER,
    card_text,
    gate_the_model_load,
    idle,
    panel_values,
    run_app,
    runs_of,
    shown,
    stored,
    stored_model,
    stored_settings,
    stored_story,
    stored_text,
    submit,
    title_text,
    type_line,
    view,
    wait_gone,
    wait_idle,
    wait_ready,
    wait_until,
)
from textual.widgets import Input, ProgressBar

from charterm.app.screens import HelpScreen
from charterm.app.story_view import MODEL, PERSON
from charterm.app.training_pane import TrainingPane
from charterm.app.widgets import PromptInput
from charterm.story.store import Store
from charterm.worker.client import OPEN_ID

DEFAULT_PANEL = {"top_k": "5", "temperature": "1.0", "chars": "300", "stop_at": "none"}


def whole_word_turn(text: str, chars: int) -> bool:
    """The app's turns run past `chars` to the end of a word: up to the first whitespace at or
    after the limit (included), or WORD_SLACK chars past it."""
    from charterm.story.session import WORD_SLACK

    n = len(text)
    if n == chars + WORD_SLACK:
        return not any(c.isspace() for c in text[chars - 1 : -1])
    return chars <= n < chars + WORD_SLACK and text[-1].isspace() and not any(c.isspace() for c in text[chars - 1 : -1])


def status(app) -> str:
    """The app's status line (the training pane has a #status of its own)."""
    return shown(app, "#status-line")


def prompt(app) -> PromptInput:
    return app.query_one(PromptInput)


async def write_turn(pilot, text: str, timeout: float = 20) -> None:
    """Type `text` + Enter in the prompt and wait until the model's turn has been committed."""
    app = pilot.app
    before = app.snapshot.turns
    await type_line(pilot, text)
    await wait_until(pilot, lambda: app.snapshot and app.snapshot.turns > before and idle(app), timeout, "the turn")


# --- start-up and writing ---------------------------------------------------------------------------


def test_first_frame_comes_before_the_model_and_input_typed_meanwhile_is_kept(home, tiny_model, monkeypatch):
    gate = gate_the_model_load(monkeypatch)

    async def test(app, pilot):
        await pilot.pause()
        assert app.snapshot is None and OPEN_ID in app.pending
        assert card_text(app) == "loading the model..."
        assert prompt(app).has_focus
        await type_line(pilot, "/chars 10")  # a setting before the model: checked now, applied once it loads
        assert app.errors() == []
        assert status(app) == "chars = 10"
        await type_line(pilot, "Anna")
        assert status(app) == "the model is still loading; your input is queued"
        assert view(app).text == ""
        assert stored() == []
        gate.set()
        await wait_ready(pilot)
        assert card_text(app).splitlines()[0] == "tiny.safetensors"
        assert card_text(app).splitlines()[1].startswith("LSTM 48x2, ")
        assert title_text(app) == "charterm  story: untitled  model: tiny.safetensors"
        # the queued "Anna" was written, and the model answered it with the setting typed before the load
        await wait_until(pilot, lambda: app.snapshot.turns == 2 and idle(app), 20, "the queued turn")
        assert panel_values(app) == {**DEFAULT_PANEL, "chars": "10"}
        assert app.snapshot.settings["chars"] == 10 and stored_settings()["chars"] == 10
        runs = view(app).runs
        assert runs[0] == (PERSON, "Anna") and runs[1][0] == MODEL and whole_word_turn(runs[1][1], 10)
        assert stored() == runs
        assert status(app) == f"2 turns, {4 + len(runs[1][1])} chars"
        assert app.errors() == []

    run_app(test, model=tiny_model)


def test_input_queued_while_loading_is_written_and_escape_stops_it(home, tiny_model, monkeypatch):
    gate = gate_the_model_load(monkeypatch)
    store = Store()  # a story whose turns are long, so the model is still writing when we look
    story = store.open("untitled", str(tiny_model))
    store.set_settings(story.id, {"chars": 100_000})
    store.close()

    async def test(app, pilot):
        await pilot.pause()
        await type_line(pilot, "Anna")
        assert len(app.pending) == 2 and OPEN_ID in app.pending  # the open, then the queued write
        (write_id,) = app.pending - {OPEN_ID}
        gate.set()
        await wait_until(pilot, lambda: app.writing and len(view(app).text) > 20, 20, "the model to write")
        assert app.pending == {write_id}  # the open is done; the queued input is what keeps the worker busy
        # the status line is redrawn STATUS_HZ times a second while the model writes
        await wait_until(pilot, lambda: status(app).startswith("writing... "), 2, "the writing status")
        assert app.pending == {write_id}
        await pilot.press("escape")
        await wait_until(pilot, lambda: idle(app), 10, "the stop")
        turns = stored()
        assert [a for a, _ in turns] == [PERSON, MODEL] and turns[0] == (PERSON, "Anna")
        assert 0 < len(turns[1][1]) < 100_000
        assert view(app).runs == turns

    run_app(test, model=tiny_model)


def test_a_turn_is_shown_and_stored(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await type_line(pilot, "/chars 40")
        assert prompt(app).text == ""
        await wait_idle(pilot)
        assert app.snapshot.settings["chars"] == 40 and stored_settings()["chars"] == 40
        await write_turn(pilot, "Anna")
        runs = view(app).runs
        assert runs[0] == (PERSON, "Anna")
        assert runs[1][0] == MODEL and whole_word_turn(runs[1][1], 40)
        assert stored() == runs
        assert status(app) == f"2 turns, {4 + len(runs[1][1])} chars"
        assert (app.snapshot.turns, app.snapshot.chars) == (2, 4 + len(runs[1][1]))

        # Enter on an empty line: the model continues; the view merges its two turns into one run
        await write_turn(pilot, "")
        turns = stored()
        assert [a for a, _ in turns] == [PERSON, MODEL, MODEL]
        assert turns[1] == runs[1] and whole_word_turn(turns[2][1], 40)
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, turns[1][1] + turns[2][1])] == runs_of(turns)
        assert view(app).text == stored_text()

    run_app(test, model=tiny_model)


def test_chars_0_lets_the_model_write_nothing_and_topk_0_samples_from_all_chars(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 0")
        await write_turn(pilot, "Anna")
        assert stored() == [(PERSON, "Anna")] == view(app).runs
        await submit(pilot, "/topk 0")
        await submit(pilot, "/chars 30")
        await wait_idle(pilot)
        assert panel_values(app) == {**DEFAULT_PANEL, "top_k": "0", "chars": "30"}
        assert stored_settings()["top_k"] == 0
        await write_turn(pilot, "")
        turns = stored()
        assert turns[0] == (PERSON, "Anna") and turns[1][0] == MODEL and whole_word_turn(turns[1][1], 30)
        assert view(app).runs == turns
        await submit(pilot, "/topk -1")
        assert app.errors() == ["top-k must be a whole number, 0 (all chars) or more (got -1)"]
        await wait_idle(pilot)
        assert stored_settings()["top_k"] == 0 and panel_values(app)["top_k"] == "0"

    run_app(test, model=tiny_model)


@pytest.mark.parametrize("key", ["escape", "ctrl+c"])
def test_escape_stops_a_long_generation_and_keeps_what_was_shown(home, tiny_model, key):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Once")
        await wait_until(pilot, lambda: len(view(app).text) > 100, 20, "the model to write")
        assert app.writing
        await wait_until(pilot, lambda: status(app).startswith("writing... "), 2, "the writing status")
        await pilot.press(key)
        await wait_until(pilot, lambda: idle(app), 5, "the generation to stop")
        assert app.is_running  # Ctrl+C stops the model, not the app
        turns = stored()
        assert [a for a, _ in turns] == [PERSON, MODEL]
        assert 100 < len(turns[1][1]) < 100_000
        assert view(app).runs == [(PERSON, "Once"), turns[1]]
        assert view(app).text == stored_text()
        assert stored_story().draft is None

    run_app(test, model=tiny_model)


def test_stop_command_without_an_argument_stops_the_model(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Once")
        await wait_until(pilot, lambda: len(view(app).text) > 100, 20, "the model to write")
        await submit(pilot, "/stop")
        await wait_until(pilot, lambda: idle(app), 5, "the generation to stop")
        assert 100 < len(stored()[-1][1]) < 100_000
        assert app.snapshot.settings["stop_at"] == "none" and stored_settings()["stop_at"] == "none"
        assert panel_values(app)["stop_at"] == "none"
        assert view(app).text == stored_text()

    run_app(test, model=tiny_model)


def test_a_turn_written_elsewhere_shows_up_in_an_idle_window(home, tiny_model):
    from charterm.story.store import Turn

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await write_turn(pilot, "Anna")
        other = Store()  # another window, or `charterm generate --story`, on the same story
        story = other.load("untitled")
        other.append_turn(story.id, story.revision, Turn(PERSON, " Levin came in."))
        other.close()
        await wait_until(pilot, lambda: view(app).text.endswith(" Levin came in."), 10, "the reload")
        assert view(app).text == stored_text()
        await wait_until(pilot, lambda: app.snapshot.turns == 3, 5, "the new turn count")
        assert any("changed in another window" in m for m in app.messages())
        await write_turn(pilot, " Then")  # this window's next turn goes after the other window's
        assert [text for _, text in stored()][2:4] == [" Levin came in.", " Then"]
        assert view(app).text == stored_text()

    run_app(test, model=tiny_model)


def test_undo_and_retry(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 40")
        await write_turn(pilot, "Anna")
        first = stored_story().turns[-1]

        await pilot.press("ctrl+r")
        await wait_idle(pilot)
        turns = stored_story().turns
        assert [t.author for t in turns] == [PERSON, MODEL] and turns[0].text == "Anna"
        retried = turns[-1]
        assert retried.id != first.id and whole_word_turn(retried.text, 40)
        assert retried.text != first.text  # 40 sampled chars: the same text again is all but impossible
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, retried.text)] == stored()

        await pilot.press("ctrl+z")
        await wait_idle(pilot)
        assert view(app).runs == [(PERSON, "Anna")] == stored()
        assert f"undid the model's {len(retried.text)} chars" in app.messages()
        assert app.snapshot.turns == 1

        # retry after a person's turn just lets the model write
        await pilot.press("ctrl+r")
        await wait_idle(pilot)
        assert [a for a, _ in stored()] == [PERSON, MODEL]
        assert view(app).runs == stored()

    run_app(test, model=tiny_model)


# --- slash commands -------------------------------------------------------------------------------------


def test_setting_commands_update_the_panel_and_the_store(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        assert "adapting: nothing learned yet" in card_text(app)
        for line in ("/topk 3", "/temp 0.5", "/chars 50", "/stop sentence", "/adapt off"):
            await submit(pilot, line)
        await wait_idle(pilot)
        assert panel_values(app) == {"top_k": "3", "temperature": "0.5", "chars": "50", "stop_at": "sentence"}
        assert "adapting: off (/adapt on)" in card_text(app)
        want = {"top_k": 3, "temperature": 0.5, "chars": 50, "stop_at": "sentence", "seed": None, "adapt": False}
        want["bans"] = []  # every setting is saved, the bans too
        assert app.snapshot.settings == want
        assert stored_settings() == want
        assert app.errors() == []

        for line in ("/topk x", "/temp -1", "/nope", "/chars", "/stop often", "/chars 1000001", "/adapt maybe"):
            await submit(pilot, line)
        await wait_idle(pilot)
        assert app.errors() == [
            "top-k must be a whole number, 0 (all chars) or more (got 'x')",
            "temperature must be a number from 0 to 10 (got -1.0)",
            "unknown command /nope; /help lists them",
            "chars needs a value: a whole number from 0 to 1,000,000",
            "stop must be one of none, sentence, paragraph (got 'often')",
            "chars must be a whole number from 0 to 1,000,000 (got 1000001)",
            "adapt must be on or off (got 'maybe')",
        ]
        assert stored_settings() == want == app.snapshot.settings
        assert panel_values(app) == {"top_k": "3", "temperature": "0.5", "chars": "50", "stop_at": "sentence"}

    run_app(test, model=tiny_model)


def test_the_side_pane_says_what_the_model_learned_and_adapt_reset_forgets_it(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await submit(pilot, "Anna said")
        await wait_idle(pilot)
        assert "learned 9 chars" in card_text(app) and app.snapshot.adaptation["chars"] == 9
        await submit(pilot, "/adapt reset")
        await wait_idle(pilot)
        assert "adapting: nothing learned yet" in card_text(app)
        assert any("forgot what the model learned" in m for m in app.messages())
        await submit(pilot, "/adapt off")
        await submit(pilot, "/adapt reset")
        await wait_idle(pilot)
        assert app.errors() == ["adaptation is off for this story; /adapt on turns it on"]

    run_app(test, model=tiny_model)


def test_tab_completes_commands_and_their_choices(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await type_line(pilot, "/to", enter=False)
        await pilot.press("tab")
        assert prompt(app).text == "/topk " and prompt(app).cursor_location == (0, 6)
        prompt(app).clear()
        await type_line(pilot, "/stop s", enter=False)
        await pilot.press("tab")
        assert prompt(app).text == "/stop sentence"
        await pilot.press("enter")
        await wait_idle(pilot)
        assert stored_settings()["stop_at"] == "sentence" and panel_values(app)["stop_at"] == "sentence"

    run_app(test, model=tiny_model)


def test_help_opens_and_escape_closes_it(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/help")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        assert prompt(app).has_focus
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

    run_app(test, model=tiny_model)


def test_f1_closes_help(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

    run_app(test, model=tiny_model)


def test_export_writes_text_and_markdown(home, tiny_model, tmp_path):
    txt, md = tmp_path / "out" / "story.txt", tmp_path / "story.md"
    txt.parent.mkdir()

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 30")
        await write_turn(pilot, "Anna *said*")
        await submit(pilot, f"/export {txt}")
        await submit(pilot, f"/export {md} md")
        await wait_idle(pilot)
        story = stored_story()
        assert txt.read_text(encoding="utf-8") == story.text == view(app).text
        from charterm.story.store import render

        assert md.read_text(encoding="utf-8") == render("untitled", story.turns, "md")
        assert md.read_text(encoding="utf-8").startswith("# untitled\n\n<strong>Anna \\*said\\*</strong>")
        assert f"wrote {txt}" in app.messages() and f"wrote {md}" in app.messages()
        await submit(pilot, "/export")
        assert app.errors()[-1].startswith("/export needs a path")
        await submit(pilot, f"/export {txt / 'x.txt'}")  # under a file: no folder can be made there
        await wait_idle(pilot)
        assert app.errors()[-1].startswith(f"/export: cannot write {txt / 'x.txt'}: ")
        assert txt.read_text(encoding="utf-8") == story.text

    run_app(test, model=tiny_model)


def test_story_command_opens_a_new_story_and_lists_them(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await write_turn(pilot, "One")
        await submit(pilot, "/story other")
        await wait_until(pilot, lambda: app.story_name == "other" and idle(app), 10)
        await pilot.pause()
        assert title_text(app) == "charterm  story: other  model: tiny.safetensors"
        assert view(app).runs == [] and app.snapshot.turns == 0 and stored("other") == []
        assert app.snapshot.settings["chars"] == 300  # settings belong to a story
        assert panel_values(app)["chars"] == "300"
        await submit(pilot, "/story")
        await wait_until(pilot, lambda: any(title == "stories" for _, _, title in app.notes), 5, "the listing")
        listing = [m for sev, m, title in app.notes if title == "stories"]
        assert len(listing) == 1
        lines = listing[0].splitlines()
        untitled = len(stored_text("untitled"))
        assert sorted(lines) == ["other  (0 turns, 0 chars)", f"untitled  (2 turns, {untitled} chars)"]
        await write_turn(pilot, "Two")
        assert stored("other")[0] == (PERSON, "Two")
        assert stored("untitled")[0] == (PERSON, "One")
        assert view(app).runs == stored("other")

    run_app(test, model=tiny_model)


def test_model_command_switches_models_and_keeps_the_story(home, tiny_model, tmp_path):
    other = tmp_path / "second.safetensors"
    shutil.copy(tiny_model, other)

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await write_turn(pilot, "Anna")
        text = view(app).text
        await submit(pilot, f"/model {other}")
        await wait_until(pilot, lambda: card_text(app).startswith("second.safetensors") and idle(app), 10)
        assert app.card["path"] == str(other.resolve())
        assert title_text(app) == "charterm  story: untitled  model: second.safetensors"
        assert view(app).text == text == stored_text()
        assert "now writing with second.safetensors" in app.messages()
        await submit(pilot, f"/model {tmp_path / 'missing.safetensors'}")
        await wait_idle(pilot)
        assert app.errors()[-1] == f"{tmp_path / 'missing.safetensors'}: no such model file"
        assert card_text(app).startswith("second.safetensors")
        assert stored_model() == str(other)
        await write_turn(pilot, " Levin")  # the story goes on with the new model
        turns = stored()
        assert turns[0] == (PERSON, "Anna") and turns[2] == (PERSON, " Levin")
        assert len(turns) == 4 and turns[3][0] == MODEL and whole_word_turn(turns[3][1], 20)
        assert view(app).text == stored_text()

    run_app(test, model=tiny_model)


# --- what the person types -------------------------------------------------------------------------------


def test_text_is_literal_and_backslash_n_is_a_new_line(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 5")
        await write_turn(pilot, "[b]x[/b]")
        assert view(app).runs[0] == (PERSON, "[b]x[/b]")
        assert view(app).text.startswith("[b]x[/b]")
        await pilot.pause()
        assert view(app).render_line(0).text.startswith("[b]x[/b]")
        await submit(pilot, "\\nNew line\\tand \\\\n")
        await wait_until(pilot, lambda: app.snapshot.turns == 4 and idle(app), 20, "the second turn")
        person = [text for author, text in stored() if author == PERSON]
        assert person == ["[b]x[/b]", "\nNew line\tand \\n"]
        assert view(app).text == stored_text()
        assert "\nNew line" in view(app).text
        assert app.errors() == []

    run_app(test, model=tiny_model)


def test_editing_a_setting_in_the_side_pane(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        field = app.query_one("#set-top_k", Input)
        field.focus()
        await pilot.pause()
        await type_line(pilot, "7")  # focusing selects the old value, so typing replaces it
        await wait_idle(pilot)
        assert stored_settings()["top_k"] == 7 and app.snapshot.settings["top_k"] == 7
        assert field.value == "7"
        assert prompt(app).has_focus
        field.focus()
        await pilot.pause()
        await type_line(pilot, "x")
        await wait_idle(pilot)
        assert app.errors() and set(app.errors()) == {"top-k must be a whole number, 0 (all chars) or more (got 'x')"}
        assert stored_settings()["top_k"] == 7
        assert field.value == "7"  # the panel shows the setting again

    run_app(test, model=tiny_model)


def test_a_bad_value_in_the_side_pane_is_reported_once(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        field = app.query_one("#set-temperature", Input)
        field.focus()
        await pilot.pause()
        await type_line(pilot, "-1")
        await wait_until(
            pilot, lambda: prompt(app).has_focus and field.value == "1.0", 5, "the panel to show 1.0 again"
        )
        await wait_idle(pilot)  # the blur that follows the Enter has been handled too
        assert app.errors() == ["temperature must be a number from 0 to 10 (got -1.0)"]
        assert stored_settings() == {}  # nothing was changed

    run_app(test, model=tiny_model)


# --- training -------------------------------------------------------------------------------------------


@pytest.fixture
def fake_training(monkeypatch):
    """Make the app's /train start tests/fake_trainer.py instead of `charterm train`."""
    import charterm.worker.jobs

    real = charterm.worker.jobs.TrainingJob
    started = []

    def fake(args, on_event, **kw):
        job = real(args, on_event, argv=[sys.executable, str(FAKE_TRAINER)], **kw)
        started.append(job)
        return job

    monkeypatch.setattr(charterm.worker.jobs, "TrainingJob", fake)
    return started


def test_training_events_reach_the_pane_and_ctrl_l_loads_the_better_model(
    home, tiny_model, tmp_path, corpus, fake_training
):
    better = tmp_path / "better.safetensors"
    shutil.copy(tiny_model, better)

    async def test(app, pilot):
        await wait_ready(pilot)
        pane = app.query_one(TrainingPane)
        assert shown(app, "TrainingPane > #status") == "idle"
        await submit(pilot, f"/train --steps 6 --delay 0.2 --val 1.2 --baseline-loss 1.3 --out {better}")
        assert len(fake_training) == 1
        job = fake_training[0]
        # the model's own training text, and the model in use as the baseline to beat
        assert job.command[-4:] == ["--data", str(corpus), "--baseline", str(tiny_model.resolve())]
        assert "training started in the background (Ctrl+T or /cancel stops it)" in app.messages()
        await wait_until(pilot, lambda: pane.step >= 3, 10, "steps")
        bar = app.query_one(ProgressBar)
        assert bar.total == 6 and bar.progress >= 3
        assert shown(app, "TrainingPane > #status").startswith(("training epoch 1/1 step", "evaluating", "done"))
        await wait_until(pilot, lambda: app.job is None, 10, "the child to exit")
        assert shown(app, "TrainingPane > #status") == f"done: best val 1.200 at {better}"
        assert bar.progress == 6 and [n for n, _ in pane.train] == [1, 2, 3, 4, 5, 6] and pane.val == [(6, 1.2)]
        assert app.trained_path == str(better)
        offer = [m for m in app.messages() if m.startswith("training wrote a better model")]
        assert offer == [
            "training wrote a better model: val 1.2000 against 1.3000 for tiny.safetensors on the same text; "
            "Ctrl+L or /load to switch to it"
        ]
        assert card_text(app).startswith("tiny.safetensors")

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: card_text(app).startswith("better.safetensors") and idle(app), 10)
        assert app.card["path"] == str(better.resolve()) and stored_model() == str(better.resolve())

    run_app(test, model=tiny_model)


def test_a_worse_model_from_training_is_not_offered_and_follow_keeps_the_model_in_use(
    home, tiny_model, tmp_path, fake_training
):
    """A 60-second run once announced val 1.94 as "a better model" over the shipped 1.25."""
    worse = tmp_path / "worse.safetensors"
    shutil.copy(tiny_model, worse)

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/follow on")
        await submit(pilot, f"/train --steps 2 --val 1.94 --baseline-loss 1.25 --out {worse}")
        await wait_until(pilot, lambda: app.job is None, 15, "the child to exit")
        await wait_idle(pilot)
        assert not any(m.startswith("training wrote a better model") for m in app.messages())
        assert (
            "training saved a model with val 1.9400, not better than tiny.safetensors (1.2500 on the same text); "
            "keeping tiny.safetensors"
        ) in app.messages()
        assert app.trained_path is None and card_text(app).startswith("tiny.safetensors")
        await pilot.press("ctrl+l")
        assert app.messages()[-1] == "training has not written a model better than the one in use yet"
        assert stored_model() == str(tiny_model.resolve())

    run_app(test, model=tiny_model)


def test_training_stops_while_the_model_writes_a_turn_and_goes_on_after_it(home, tiny_model, tmp_path, fake_training):
    """Point 4 of issue 22: a training job started from the app makes no step while a turn is
    written (its process is stopped), and goes on when the turn is committed."""

    def stopped(pid: int) -> bool:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20000")
        await wait_idle(pilot)
        await submit(pilot, f"/train --hang --delay 0.02 --out {tmp_path / 'm.safetensors'}")
        pane, job = app.query_one(TrainingPane), fake_training[0]
        await wait_until(pilot, lambda: pane.step >= 3, 10, "steps")
        await submit(pilot, "Anna")
        await wait_until(pilot, lambda: app.writing and app._gen_chars > 0, 10, "the model to write")
        at_start = pane.step
        assert job.paused and stopped(job.pid)
        assert shown(app, "TrainingPane > #status") == "paused while the model writes"
        await pilot.pause(0.4)  # 20 steps' time
        assert app.writing and pane.step <= at_start + 1  # one step event may have been on its way
        await wait_idle(pilot, 60)
        assert not job.paused and not stopped(job.pid)
        await wait_until(pilot, lambda: pane.step > at_start + 3, 10, "steps after the turn")
        assert shown(app, "TrainingPane > #status") != "paused while the model writes"

    run_app(test, model=tiny_model)


def test_follow_switches_to_each_checkpoint(home, tiny_model, tmp_path, fake_training):
    followed = tmp_path / "followed.safetensors"
    shutil.copy(tiny_model, followed)

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/follow on")
        assert app.follow
        await submit(pilot, f"/train --steps 3 --baseline-loss 1.6 --out {followed}")
        await wait_until(pilot, lambda: card_text(app).startswith("followed.safetensors") and idle(app), 15)
        await wait_until(pilot, lambda: app.job is None, 10, "the child to exit")
        assert not any(m.startswith("training wrote a better model") for m in app.messages())
        assert "now writing with followed.safetensors" in app.messages()
        await submit(pilot, "/follow sometimes")
        assert app.errors() == ["/follow on or /follow off"]

    run_app(test, model=tiny_model)


def test_training_without_its_text_is_an_error_not_a_crash(home, tiny_model, tmp_path, fake_training):
    """The model's own text is gone (and is not the book, which /train would fetch): one line, no run."""
    from charterm.engine.checkpoint import load_model, save_model

    loaded = load_model(tiny_model)
    gone = tmp_path / "gone.txt"
    info = {k: v for k, v in loaded.info.items() if k != "fingerprint"}
    info["train_config"] = {**info["train_config"], "data": str(gone)}
    nodata = tmp_path / "nodata.safetensors"
    save_model(nodata, loaded.model, loaded.vocab, info)

    async def test(app, pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert app.job is None and fake_training == []
        assert app.errors()[-1].startswith(f"no training text found at {gone} ")
        assert app.errors()[-1].endswith(": /train --data PATH")
        assert shown(app, "TrainingPane > #status").startswith("failed: no training text found")
        await submit(pilot, "/train --epochs 1")
        assert len(app.errors()) == 2 and app.errors()[-1].startswith("no training text found")
        assert fake_training == []
        await submit(pilot, "/train --progress text")
        assert "--progress is set by the app" in app.errors()[-1]

    run_app(test, model=nodata)


@pytest.mark.slow
def test_a_real_training_child_that_fails_shows_the_failure(home, tiny_model, tmp_path):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, f"/train --data {tmp_path / 'nonexistent.txt'} --out {tmp_path / 'x.safetensors'}")
        assert app.job is not None
        await wait_until(pilot, lambda: app.job is None, 60, "the child to exit")
        status = shown(app, "TrainingPane > #status")
        assert status.startswith("failed: ") and "nonexistent.txt" in status
        assert app.trained_path is None

    run_app(test, model=tiny_model)


# --- leaving, narrow terminals, restarts -------------------------------------------------------------------


def test_ctrl_q_while_writing_saves_what_was_shown(home, tiny_model):
    seen = {}

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Go")
        await wait_until(pilot, lambda: len(view(app).text) > 50, 20, "the model to write")
        seen["text"] = view(app).text
        await pilot.press("ctrl+q")

    app = run_app(test, model=tiny_model)
    assert not app.is_running
    turns = stored()
    assert [a for a, _ in turns] == [PERSON, MODEL]
    text = "".join(t for _, t in turns)
    assert text.startswith(seen["text"]) and len(text) < 100_000 + 2
    assert stored_story().draft is None


def test_narrow_terminal_hides_the_side_pane_and_ctrl_b_toggles_it(home, tiny_model):
    async def test(app, pilot):
        side = app.query_one("#side")
        assert side.display is False
        await wait_ready(pilot)
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert side.display is True and side.region.width > 0
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert side.display is False and view(app).region.width == 60

    run_app(test, model=tiny_model, size=(60, 24))


def test_wide_terminal_shows_the_side_pane(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        side = app.query_one("#side")
        assert side.display is True and side.region.width == 34
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert side.display is False and view(app).region.width == 100

    run_app(test, model=tiny_model)


def test_the_story_survives_a_restart(home, tiny_model):
    before = {}

    async def first(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 30")
        await submit(pilot, "/topk 2")
        await write_turn(pilot, "Hello")
        before["runs"] = view(app).runs

    async def second(app, pilot):
        await wait_ready(pilot)
        await wait_idle(pilot)
        assert view(app).runs == before["runs"] == stored()
        assert app.snapshot.settings["top_k"] == 2 and panel_values(app)["top_k"] == "2"
        assert panel_values(app)["chars"] == "30"
        # no model given: the story's own model is used
        assert card_text(app).startswith("tiny.safetensors")
        assert app.card["path"] == str(tiny_model.resolve())

    run_app(first, model=tiny_model)
    run_app(second)


# --- the real worker process -------------------------------------------------------------------------------

PROCESS_START = 90  # s: a new python imports torch and loads the model, on a busy machine


def test_the_real_worker_process_writes_a_turn_and_leaves_with_the_app(home, tiny_model):
    seen = {}

    async def test(app, pilot):
        await wait_ready(pilot, PROCESS_START)
        seen["pid"] = app.client.pid
        assert app.client.pid != os.getpid()  # the model is in another process
        assert card_text(app).splitlines()[0] == "tiny.safetensors"
        assert card_text(app).splitlines()[1].startswith("LSTM 48x2, ")
        assert title_text(app) == "charterm  story: untitled  model: tiny.safetensors"
        await submit(pilot, "/chars 40")
        await write_turn(pilot, "Anna")
        turns = stored()
        assert turns[0] == (PERSON, "Anna") and turns[1][0] == MODEL and whole_word_turn(turns[1][1], 40)
        assert view(app).runs == turns
        assert stored_settings()["chars"] == 40
        os.kill(seen["pid"], 0)  # still there while the app runs
        await pilot.press("ctrl+q")

    app = run_app(test, model=tiny_model, in_thread=False)
    assert not app.is_running
    wait_gone(seen["pid"])
    assert app.errors() == []
    assert not any("worker stopped" in m for m in app.messages())
    assert len(stored()) == 2


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_nothing_committed_is_lost(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot, PROCESS_START)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Once")
        # the model writes a long turn, and has saved part of it as a draft
        await wait_until(
            pilot,
            lambda: app.writing and (d := stored_story().draft) is not None and len(d.text) > 200,
            30,
            "a draft of the model's turn",
        )
        committed = stored()
        assert committed == [(PERSON, "Once")]
        draft = stored_story().draft.text
        old_pid = app.client.pid
        os.kill(old_pid, signal.SIGKILL)

        await wait_until(pilot, lambda: app.client.pid != old_pid, 10, "a new worker")
        await wait_idle(pilot, PROCESS_START)
        wait_gone(old_pid)
        stopped = [(sev, m) for sev, m, _ in app.notes if "worker stopped" in m]
        assert len(stopped) == 1 and stopped[0][0] == "warning"
        assert stopped[0][1].startswith("the model worker stopped (killed by signal 9")
        assert stopped[0][1].endswith("; restarting it")
        turns = stored()
        assert turns[: len(committed)] == committed  # nothing committed is lost
        assert len(turns) == 2 and turns[1][0] == MODEL and turns[1][1].startswith(draft)  # the draft, as a turn
        assert stored_story().draft is None
        assert f"recovered {len(turns[1][1]):,} chars the model wrote before charterm stopped" in app.messages()
        assert view(app).runs == turns
        assert title_text(app) == "charterm  story: untitled  model: tiny.safetensors"
        assert app.snapshot.settings["chars"] == 100_000 and app.snapshot.turns == 2

        # writing goes on with the new worker
        await submit(pilot, "/chars 20")
        await write_turn(pilot, " Then")
        after = stored()
        assert after[:2] == turns and after[2] == (PERSON, " Then")
        assert len(after) == 4 and after[3][0] == MODEL and whole_word_turn(after[3][1], 20)
        assert view(app).runs == runs_of(after)
        assert len([m for m in app.messages() if "worker stopped" in m]) == 1
        assert app.errors() == []

    run_app(test, model=tiny_model, in_thread=False)


# --- settings sent while the model writes -----------------------------------------------------------------


def test_two_settings_typed_while_the_model_writes_both_show_in_the_panel(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Once")
        await wait_until(pilot, lambda: app.writing and len(view(app).text) > 50, 20, "the model to write")
        await submit(pilot, "/topk 3")
        await submit(pilot, "/temp 0.5")
        await pilot.pause()
        shown_while_writing = panel_values(app)
        await pilot.press("escape")
        await wait_idle(pilot)
        assert stored_settings()["top_k"] == 3 and stored_settings()["temperature"] == 0.5
        assert panel_values(app) == {**DEFAULT_PANEL, "top_k": "3", "temperature": "0.5", "chars": "100000"}
        assert shown_while_writing == {**DEFAULT_PANEL, "top_k": "3", "temperature": "0.5", "chars": "100000"}

    run_app(test, model=tiny_model)

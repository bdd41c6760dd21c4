"""The full-screen app driven through Textual's Pilot: the story, keys, slash commands, training, restarts.

Every test runs the real CharTermApp (model thread, store, timers) on a temporary CHARTERM_HOME with the
session's tiny model, headless.
"""

import shutil
import sys
import threading

import pytest
from apphelpers import (
    FAKE_TRAINER,
    card_text,
    idle,
    panel_values,
    run_app,
    shown,
    submit,
    title_text,
    type_line,
    view,
    wait_idle,
    wait_ready,
    wait_until,
)
from textual.widgets import Input, ProgressBar

from charterm.app.screens import HelpScreen
from charterm.app.story_view import MODEL, PERSON
from charterm.app.training_pane import TrainingPane
from charterm.app.widgets import PromptInput
from charterm.store import Store


def whole_word_turn(text: str, chars: int) -> bool:
    """The app's turns run past `chars` to the end of a word: up to the first whitespace at or
    after the limit (included), or WORD_SLACK chars past it."""
    from charterm.session import WORD_SLACK

    n = len(text)
    if n == chars + WORD_SLACK:
        return not any(c.isspace() for c in text[chars - 1 : -1])
    return chars <= n < chars + WORD_SLACK and text[-1].isspace() and not any(c.isspace() for c in text[chars - 1 : -1])


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CHARTERM_HOME", str(home))
    monkeypatch.delenv("CHARTERM_MODEL", raising=False)
    return home


def stored(name: str = "untitled") -> list[tuple[str, str]]:
    """The story's turns as the database has them (read through a second connection)."""
    store = Store()
    try:
        story = store.load(name)
        return [(t.author, t.text) for t in story.turns] if story else []
    finally:
        store.close()


def status(app) -> str:
    """The app's status line (the training pane has a #status of its own)."""
    return shown(app, "#status-line")


def prompt(app) -> PromptInput:
    return app.query_one(PromptInput)


async def write_turn(pilot, text: str) -> None:
    """Type `text` + Enter in the prompt and wait until the model's turn has been committed."""
    app = pilot.app
    before = len(app.session.turns)
    await type_line(pilot, text)
    await wait_until(pilot, lambda: len(app.session.turns) > before and idle(app), 20, "the turn to end")


# --- start-up and writing ---------------------------------------------------------------------------


def test_first_frame_comes_before_the_model_and_input_typed_meanwhile_is_kept(home, tiny_model, monkeypatch):
    import charterm.checkpoint

    gate = threading.Event()
    real_load = charterm.checkpoint.load_model

    def slow_load(*args, **kw):
        assert gate.wait(20), "the test never let the model load"
        return real_load(*args, **kw)

    monkeypatch.setattr(charterm.checkpoint, "load_model", slow_load)

    async def test(app, pilot):
        await pilot.pause()
        assert app.session is None
        assert card_text(app) == "loading the model..."
        assert prompt(app).has_focus
        await type_line(pilot, "/chars 10")  # a setting needs the model: an error, not a crash
        assert app.errors() == ["the model is still loading; try again in a moment"]
        await type_line(pilot, "Anna")
        assert status(app) == "the model is still loading; your input is queued"
        assert view(app).text == ""
        gate.set()
        await wait_ready(pilot)
        assert card_text(app).splitlines()[0] == "tiny.safetensors"
        assert card_text(app).splitlines()[1].startswith("LSTM 48x2, ")
        assert panel_values(app) == {"top_k": "5", "temperature": "1.0", "chars": "300", "stop_at": "none"}
        assert title_text(app) == "charterm  story: untitled  model: tiny.safetensors"
        # the queued "Anna" was written, and the model answered it
        await wait_until(pilot, lambda: len(app.session.turns) == 2 and idle(app), 20, "the queued turn")
        runs = view(app).runs
        assert runs[0] == (PERSON, "Anna") and runs[1][0] == MODEL and whole_word_turn(runs[1][1], 300)
        assert status(app).startswith("2 turns, ")

    run_app(test, model=tiny_model)


def test_input_queued_while_loading_counts_as_busy(home, tiny_model, monkeypatch):
    import charterm.checkpoint

    gate = threading.Event()
    real_load = charterm.checkpoint.load_model
    monkeypatch.setattr(charterm.checkpoint, "load_model", lambda *a, **kw: gate.wait(20) and real_load(*a, **kw))
    store = Store()  # a story whose turns are long, so the model is still writing when we look
    story = store.open("untitled", str(tiny_model))
    store.set_settings(story.id, {"chars": 100_000})
    store.close()

    async def test(app, pilot):
        await pilot.pause()
        await type_line(pilot, "Anna")
        gate.set()
        await wait_until(pilot, lambda: app._continuation is not None, 20, "the model to write")
        busy = app._busy
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(app.session.turns) == 2 and idle(app), 10, "the stop")
        assert busy == 1

    run_app(test, model=tiny_model)


def test_a_turn_is_shown_and_stored(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await type_line(pilot, "/chars 40")
        assert prompt(app).value == ""
        await wait_idle(pilot)
        assert app.session.settings.chars == 40
        await write_turn(pilot, "Anna")
        runs = view(app).runs
        assert runs[0] == (PERSON, "Anna")
        assert runs[1][0] == MODEL and whole_word_turn(runs[1][1], 40)
        assert app.session.runs() == runs
        assert stored() == runs
        assert status(app) == f"2 turns, {4 + len(runs[1][1])} chars"

        # Enter on an empty line: the model continues; the view merges its two turns into one run
        await write_turn(pilot, "")
        s = app.session
        assert [t.author for t in s.turns] == [PERSON, MODEL, MODEL]
        assert whole_word_turn(s.turns[2].text, 40)
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, s.turns[1].text + s.turns[2].text)]
        assert view(app).text == s.text
        assert stored() == s.runs()

    run_app(test, model=tiny_model)


def test_escape_stops_a_long_generation_and_keeps_what_was_shown(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Once")
        await wait_until(pilot, lambda: len(view(app).text) > 100, 20, "the model to write")
        assert app._continuation is not None
        assert status(app).startswith("writing... ")
        await pilot.press("escape")
        await wait_until(pilot, lambda: idle(app), 5, "the generation to stop")
        s = app.session
        assert [t.author for t in s.turns] == [PERSON, MODEL]
        model_text = s.turns[-1].text
        assert 100 < len(model_text) < 100_000
        assert view(app).runs == [(PERSON, "Once"), (MODEL, model_text)]
        assert view(app).text == s.text == "".join(text for _, text in stored())

    run_app(test, model=tiny_model)


def test_stop_command_without_an_argument_stops_the_model(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 100000")
        await type_line(pilot, "Once")
        await wait_until(pilot, lambda: len(view(app).text) > 100, 20, "the model to write")
        await submit(pilot, "/stop")
        await wait_until(pilot, lambda: idle(app), 5, "the generation to stop")
        assert 100 < len(app.session.turns[-1].text) < 100_000
        assert app.session.settings.stop_at == "none"
        assert view(app).text == app.session.text == "".join(text for _, text in stored())

    run_app(test, model=tiny_model)


def test_a_turn_written_elsewhere_shows_up_in_an_idle_window(home, tiny_model):
    from charterm.store import Turn

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await write_turn(pilot, "Anna")
        other = Store()  # another window, or `charterm generate --story`, on the same story
        story = other.load("untitled")
        other.append_turn(story.id, story.revision, Turn(PERSON, " Levin came in."))
        other.close()
        await wait_until(pilot, lambda: view(app).text.endswith(" Levin came in."), 10, "the reload")
        assert app.session.text == view(app).text == "".join(text for _, text in stored())
        assert any("changed in another window" in m for m in app.messages())
        await write_turn(pilot, " Then")  # this window's next turn goes after the other window's
        assert [text for _, text in stored()][2:4] == [" Levin came in.", " Then"]

    run_app(test, model=tiny_model)


def test_undo_and_retry(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 40")
        await write_turn(pilot, "Anna")
        first = app.session.turns[-1]

        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.session.turns[-1] is not first and idle(app), 20, "the retry")
        s = app.session
        assert [t.author for t in s.turns] == [PERSON, MODEL] and s.turns[0].text == "Anna"
        retried = s.turns[-1]
        assert retried is not first and whole_word_turn(retried.text, 40)
        assert retried.text != first.text  # 40 sampled chars: the same text again is all but impossible
        assert view(app).runs == [(PERSON, "Anna"), (MODEL, retried.text)]
        assert stored() == s.runs()

        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: len(app.session.turns) == 1 and idle(app), 10, "the undo")
        assert view(app).runs == [(PERSON, "Anna")]
        assert app.session.runs() == [(PERSON, "Anna")] == stored()
        assert f"undid the model's {len(retried.text)} chars" in app.messages()

        # retry after a person's turn just lets the model write
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: len(app.session.turns) == 2 and idle(app), 20, "the model's turn")
        assert [a for a, _ in app.session.runs()] == [PERSON, MODEL] == [a for a, _ in stored()]

    run_app(test, model=tiny_model)


# --- slash commands -------------------------------------------------------------------------------------


def test_setting_commands_update_the_session_the_panel_and_the_store(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        for line in ("/topk 3", "/temp 0.5", "/chars 50", "/stop sentence"):
            await submit(pilot, line)
        assert panel_values(app) == {"top_k": "3", "temperature": "0.5", "chars": "50", "stop_at": "sentence"}
        await wait_idle(pilot)
        s = app.session.settings
        assert (s.top_k, s.temperature, s.chars, s.stop_at) == (3, 0.5, 50, "sentence")
        store = Store()
        try:
            assert store.load("untitled").settings == s.to_dict()
        finally:
            store.close()
        assert app.errors() == []

        before = app.session.settings
        for line in ("/topk x", "/temp -1", "/nope", "/chars", "/stop often"):
            await submit(pilot, line)
        await wait_idle(pilot)
        errors = app.errors()
        assert len(errors) == 5
        assert errors[0] == "/topk: 'x' is not a number"
        assert errors[1].startswith("temperature must be between 0 and 10")
        assert errors[2].startswith("unknown command /nope")
        assert errors[3].startswith("/chars needs a value")
        assert errors[4].startswith("stop must be one of")
        assert app.session.settings == before
        assert panel_values(app) == {"top_k": "3", "temperature": "0.5", "chars": "50", "stop_at": "sentence"}

    run_app(test, model=tiny_model)


def test_tab_completes_commands_and_their_choices(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await type_line(pilot, "/to", enter=False)
        await pilot.press("tab")
        assert prompt(app).value == "/topk " and prompt(app).cursor_position == 6
        prompt(app).value = ""
        await type_line(pilot, "/stop s", enter=False)
        await pilot.press("tab")
        assert prompt(app).value == "/stop sentence"
        await pilot.press("enter")
        await wait_idle(pilot)
        assert app.session.settings.stop_at == "sentence"

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
        s = app.session
        assert txt.read_text(encoding="utf-8") == s.text
        from charterm.store import render

        assert md.read_text(encoding="utf-8") == render("untitled", s.turns, "md")
        assert md.read_text(encoding="utf-8").startswith("# untitled\n\n<strong>Anna \\*said\\*</strong>")
        assert f"wrote {txt}" in app.messages() and f"wrote {md}" in app.messages()
        await submit(pilot, "/export")
        assert app.errors()[-1].startswith("/export needs a path")

    run_app(test, model=tiny_model)


def test_story_command_opens_a_new_story_and_lists_them(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await write_turn(pilot, "One")
        await submit(pilot, "/story other")
        await wait_until(pilot, lambda: app.session.name == "other" and idle(app), 10)
        await pilot.pause()
        assert title_text(app) == "charterm  story: other  model: tiny.safetensors"
        assert view(app).runs == [] and app.session.turns == []
        assert app.session.settings.chars == 300  # settings belong to a story
        await submit(pilot, "/story")
        listing = [m for sev, m, title in app.notes if title == "stories"]
        assert len(listing) == 1
        lines = listing[0].splitlines()
        untitled = len(Store().load("untitled").text)
        assert sorted(lines) == ["other  (0 turns, 0 chars)", f"untitled  (2 turns, {untitled} chars)"]
        await write_turn(pilot, "Two")
        assert stored("other")[0] == (PERSON, "Two")
        assert stored("untitled")[0] == (PERSON, "One")

    run_app(test, model=tiny_model)


def test_model_command_switches_models_and_keeps_the_story(home, tiny_model, tmp_path):
    other = tmp_path / "second.safetensors"
    shutil.copy(tiny_model, other)

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/chars 20")
        await write_turn(pilot, "Anna")
        text = app.session.text
        await submit(pilot, f"/model {other}")
        await wait_until(pilot, lambda: card_text(app).startswith("second.safetensors") and idle(app), 10)
        assert app.session.loaded.path == other
        assert title_text(app) == "charterm  story: untitled  model: second.safetensors"
        assert app.session.text == view(app).text == text
        assert "now writing with second.safetensors" in app.messages()
        await submit(pilot, f"/model {tmp_path / 'missing.safetensors'}")
        await wait_idle(pilot)
        assert "no such model file" in app.errors()[-1]
        assert card_text(app).startswith("second.safetensors")
        store = Store()
        try:
            assert store.load("untitled").model_path == str(other)
        finally:
            store.close()

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
        await wait_until(pilot, lambda: len(app.session.turns) == 4 and idle(app), 20, "the second turn")
        person = [text for author, text in app.session.runs() if author == PERSON]
        assert person == ["[b]x[/b]", "\nNew line\tand \\n"]
        assert view(app).text == app.session.text
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
        assert app.session.settings.top_k == 7
        assert field.value == "7"
        assert prompt(app).has_focus
        field.focus()
        await pilot.pause()
        await type_line(pilot, "x")
        await wait_idle(pilot)
        assert app.errors() and set(app.errors()) == {"/topk: 'x' is not a number"}
        assert app.session.settings.top_k == 7
        assert field.value == "7"  # the panel shows the setting again

    run_app(test, model=tiny_model)


def test_a_bad_value_in_the_side_pane_is_reported_once(home, tiny_model):
    async def test(app, pilot):
        await wait_ready(pilot)
        app.query_one("#set-temperature", Input).focus()
        await pilot.pause()
        await type_line(pilot, "-1")
        await pilot.pause(0.2)
        assert len(app.errors()) == 1 and app.errors()[0].startswith("temperature must be between 0 and 10")

    run_app(test, model=tiny_model)


# --- training -------------------------------------------------------------------------------------------


@pytest.fixture
def fake_training(monkeypatch):
    """Make the app's /train start tests/fake_trainer.py instead of `charterm train`."""
    import charterm.jobs

    real = charterm.jobs.TrainingJob
    started = []

    def fake(args, on_event, **kw):
        job = real(args, on_event, argv=[sys.executable, str(FAKE_TRAINER)], **kw)
        started.append(job)
        return job

    monkeypatch.setattr(charterm.jobs, "TrainingJob", fake)
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
        await submit(pilot, f"/train --steps 6 --delay 0.2 --out {better}")
        assert len(fake_training) == 1
        job = fake_training[0]
        assert job.command[-4:] == ["--out", str(better), "--data", str(corpus)]  # the model's own training text
        assert "training started in the background (Ctrl+T or /cancel stops it)" in app.messages()
        await wait_until(pilot, lambda: pane.step >= 3, 10, "steps")
        bar = app.query_one(ProgressBar)
        assert bar.total == 6 and bar.progress >= 3
        assert shown(app, "TrainingPane > #status").startswith(("training epoch 1/1 step", "evaluating", "done"))
        await wait_until(pilot, lambda: app.job is None, 10, "the child to exit")
        assert shown(app, "TrainingPane > #status") == f"done: best val 1.500 at {better}"
        assert bar.progress == 6 and [n for n, _ in pane.train] == [1, 2, 3, 4, 5, 6] and pane.val == [(6, 1.5)]
        assert app.trained_path == str(better)
        offer = [m for m in app.messages() if m.startswith("training wrote a better model")]
        assert offer == ["training wrote a better model (val 1.5000): Ctrl+L or /load to switch to it"]
        assert card_text(app).startswith("tiny.safetensors")

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: card_text(app).startswith("better.safetensors") and idle(app), 10)
        assert app.session.loaded.path == better

    run_app(test, model=tiny_model)


def test_follow_switches_to_each_checkpoint(home, tiny_model, tmp_path, fake_training):
    followed = tmp_path / "followed.safetensors"
    shutil.copy(tiny_model, followed)

    async def test(app, pilot):
        await wait_ready(pilot)
        await submit(pilot, "/follow on")
        assert app.follow
        await submit(pilot, f"/train --steps 3 --out {followed}")
        await wait_until(pilot, lambda: card_text(app).startswith("followed.safetensors") and idle(app), 15)
        await wait_until(pilot, lambda: app.job is None, 10, "the child to exit")
        assert not any(m.startswith("training wrote a better model") for m in app.messages())
        assert "now writing with followed.safetensors" in app.messages()
        await submit(pilot, "/follow sometimes")
        assert app.errors() == ["/follow on or /follow off"]

    run_app(test, model=tiny_model)


def test_training_without_training_text_is_an_error_not_a_crash(home, tiny_model, tmp_path, fake_training):
    from charterm.checkpoint import load_model, save_model

    loaded = load_model(tiny_model)
    info = {k: v for k, v in loaded.info.items() if k not in ("train_config", "fingerprint")}
    nodata = tmp_path / "nodata.safetensors"
    save_model(nodata, loaded.model, loaded.vocab, info)

    async def test(app, pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert app.job is None and fake_training == []
        assert app.errors()[-1].startswith("no training text found: /train --data PATH")
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
    store = Store()
    try:
        assert store.load("untitled").draft is None
    finally:
        store.close()


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
        assert view(app).runs == before["runs"]
        assert app.session.settings.top_k == 2 and panel_values(app)["top_k"] == "2"
        # no model given: the story's own model is used
        assert card_text(app).startswith("tiny.safetensors")

    run_app(first, model=tiny_model)
    run_app(second)

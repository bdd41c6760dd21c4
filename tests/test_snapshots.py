"""What the app looks like at 80x24: SVG snapshots (pytest-textual-snapshot) of fixed, model-free states.

The story is written into the store beforehand (no generation), the model is a small untrained LSTM over a
fixed alphabet, saved under a fixed name with fixed metadata (the card shows its name, size and val loss), the
cursor does not blink and the training pane's progress bar runs on a mock clock, so the screens are the same on
every run and every machine.
Regenerate after an intended change with `pytest tests/test_snapshots.py --snapshot-update`, and look at them.
"""

import string

import pytest
from apphelpers import RecordingApp, wait_idle, wait_until
from textual.clock import MockClock
from textual.widgets import ProgressBar

from charterm import train_events as te
from charterm.app.training_pane import TrainingPane
from charterm.story.store import MODEL, PERSON, Store, Turn

SIZE = (80, 24)
STORY = [
    (PERSON, "Happy families are all alike; "),
    (MODEL, "every unhappy family is unhappy in its own way.\n\nEverything was in confusion in the house."),
    (PERSON, " The wife had found out"),
    (MODEL, " that the husband was carrying on an intrigue."),
]


def write_model(path) -> None:
    """A small untrained LSTM over a fixed alphabet: nothing on screen depends on the training text or on luck."""
    import torch

    from charterm.config import ModelConfig
    from charterm.engine.checkpoint import save_model
    from charterm.engine.model import CharModel
    from charterm.engine.text import Vocabulary

    vocab = Vocabulary(sorted(set("\n !'(),-.:;?" + string.ascii_letters + string.digits)))
    torch.manual_seed(0)
    model = CharModel(ModelConfig(vocab_size=len(vocab), hidden=48, layers=2))
    save_model(path, model, vocab, {"val_loss": 1.8765, "steps": 100})


def story_app(tmp_path, monkeypatch, turns) -> RecordingApp:
    """An app on a fresh CHARTERM_HOME (~/home, with $HOME at `tmp_path`) holding the story "tale" of `turns`,
    with the model at .../anna-tiny.safetensors (its worker on a thread of this process)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CHARTERM_HOME", str(home))
    model = tmp_path / "anna-tiny.safetensors"
    write_model(model)
    store = Store()
    try:
        story = store.open("tale", str(model))
        revision = story.revision
        for author, text in turns:
            revision = store.append_turn(story.id, revision, Turn(author, text))
        store.set_last_story("tale")
    finally:
        store.close()
    return RecordingApp(model=str(model), in_thread=True)


BRANCHES = [  # (parent's index in this list, or None for the story's start; author; text): a story with versions
    (None, PERSON, "Happy families are all alike; "),
    (0, MODEL, "every unhappy family is unhappy in its own way."),
    (1, PERSON, " The wife had found out"),
    (2, MODEL, " that the husband was carrying on an intrigue."),
    (0, MODEL, "each happy family is\nhappy in the same way."),
    (4, PERSON, " Anna smiled."),
    (2, MODEL, " about the French governess."),
]
HEAD = 6  # the story shown: 0, 1, 2, 6 (its last turn is version 2/2)


def branched_app(tmp_path, monkeypatch) -> RecordingApp:
    """The app on the story "tale" holding the tree of BRANCHES (ids 1 to 7), at HEAD."""
    app = story_app(tmp_path, monkeypatch, [])
    store = Store()
    try:
        story = store.load("tale")
        turns = [Turn(author, text) for _, author, text in BRANCHES]
        for turn, (parent, _, _) in zip(turns, BRANCHES, strict=True):
            after = None if parent is None else turns[parent].id
            story.revision = store.append_turn(story.id, story.revision, turn, after)
        store.move_head(story.id, story.revision, turns[HEAD].id, turns[HEAD].id)
    finally:
        store.close()
    return app


def shown_path() -> list[tuple[str, str]]:
    """The turns from the start to HEAD."""
    path, i = [], HEAD
    while i is not None:
        path.insert(0, BRANCHES[i][1:])
        i = BRANCHES[i][0]
    return path


@pytest.fixture
def snap_app(tmp_path, monkeypatch):
    return story_app(tmp_path, monkeypatch, STORY)


async def settle(pilot, turns=STORY) -> None:
    """Wait until the model is loaded and the story shown, then stop the cursors blinking."""
    app = pilot.app
    await wait_idle(pilot)
    await wait_until(pilot, lambda: app.query_one("#story").text == "".join(t for _, t in turns), 10)
    for widget in app.query("Input, TextArea"):
        widget.cursor_blink = False
    await pilot.pause()


def test_main_screen_with_a_story(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=settle)


def test_help_screen(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, press=["f1"], run_before=settle)


def test_side_pane_hidden(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, press=["ctrl+b"], run_before=settle)


def test_training_pane_after_some_events(snap_compare, snap_app):
    async def run_before(pilot):
        await settle(pilot)
        pane = pilot.app.query_one(TrainingPane)
        pane.query_one(ProgressBar)._clock = MockClock()  # no ETA from the wall clock
        pane.handle(
            te.Start(
                params=21_345,
                chars=100_000,
                train_chars=90_000,
                val_chars=10_000,
                vocab_size=72,
                steps_per_epoch=100,
                total_steps=200,
                epochs=2,
                step=0,
                resumed=False,
                device="cpu",
                processes=1,
                out="models/anna-2.safetensors",
                max_time=0.0,
                config={"eval_every": 50},
            )
        )
        for n in range(1, 121):
            pane.handle(
                te.Step(
                    step=n,
                    total_steps=200,
                    epoch=n / 100,
                    loss=3.5 - 1.5 * n / 120,
                    lr=0.002,
                    chars_per_sec=12_345.6,
                    elapsed=n / 10,
                    progress=n / 200,
                )
            )
            if n % 50 == 0:
                val = 3.2 - n / 100
                pane.handle(
                    te.Eval(
                        step=n,
                        epoch=n / 100,
                        val_loss=val,
                        train_loss=val - 0.1,
                        best_val_loss=val,
                        improved=True,
                        seconds=0.1,
                    )
                )
        before = pane.redraws
        await wait_until(pilot, lambda: pane.redraws > before and not pane._redraw_pending, 5, "the chart")
        await pilot.pause()

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


BOOK = [  # as the book has it: a hard line break about every 70 chars
    (
        MODEL,
        "Happy families are all alike; every unhappy family is unhappy in its own\n"
        "way.\n\n"
        "Everything was in confusion in the Oblonskys' house. The wife had\n"
        "discovered that the husband was carrying on an intrigue with a French\n"
        "girl, who had been a governess in their family, and she had announced\n"
        "to her husband that she could not go on living in the same house with\n"
        "him.",
    ),
    (PERSON, "\n\nAnna came in,\nsmiling."),
]


def test_a_soft_wrapped_story(snap_compare, tmp_path, monkeypatch):
    """The book's hard line breaks don't show: each paragraph fills the pane."""

    async def run_before(pilot):
        await settle(pilot, BOOK)

    assert snap_compare(story_app(tmp_path, monkeypatch, BOOK), terminal_size=SIZE, run_before=run_before)


def test_the_welcome_of_an_empty_story(snap_compare, tmp_path, monkeypatch):
    async def run_before(pilot):
        await settle(pilot, [])

    assert snap_compare(story_app(tmp_path, monkeypatch, []), terminal_size=SIZE, run_before=run_before)


NEXT_WORDS = [
    {"text": " Stepan", "p": 0.1332},
    {"text": " the", "p": 0.1026},
    {"text": " Levin,", "p": 0.0786},
    {"text": "\nAnna", "p": 0.0555},
    {"text": ".", "p": 0.0544},
]
WRITTEN = " Oblonsky had rushed in."
SURE = [0.9, 0.35, 0.97, 0.99, 0.15, 0.98, 0.99, 0.99, 0.97, 0.6, 0.04, 0.9, 0.99, 0.5, 0.02, 0.12, 0.99, 0.99]
SURE += [0.99, 0.7, 0.18, 0.99, 0.01, 0.95]


async def show_next_words(pilot) -> None:
    """The list as the worker's answer to a `next` fills it (the words are given: nothing depends on luck)."""
    from charterm.app.app import WorkerEvent
    from charterm.app.widgets import CandidateList
    from charterm.worker import protocol as p

    await settle(pilot)
    app = pilot.app
    app.query_one(CandidateList).wait_for(999)
    app.post_message(WorkerEvent(app.client, p.Candidates(id=999, words=NEXT_WORDS)))
    await wait_until(pilot, lambda: app.query_one(CandidateList).words, 5, "the next words")
    await pilot.pause()


async def show_shading(pilot) -> None:
    """/shade on, then model text as the worker sends it, with how sure the model was of each char."""
    from charterm.app.app import WorkerEvent
    from charterm.app.widgets import PromptInput
    from charterm.worker import protocol as p

    await settle(pilot)
    app = pilot.app
    prompt = app.query_one(PromptInput)
    prompt.text = "/shade on"
    await pilot.press("enter")
    app.post_message(WorkerEvent(app.client, p.Appended(author="model", text=WRITTEN, probs=SURE)))
    await wait_until(pilot, lambda: app.query_one("#story").text.endswith(WRITTEN), 5, "the model's text")
    app.clear_notifications()
    await pilot.pause()


@pytest.fixture
def mono_app(monkeypatch, request):
    """The app without colour (NO_COLOR, read when the app is made)."""
    monkeypatch.setenv("NO_COLOR", "1")
    return request.getfixturevalue("snap_app")


def test_next_words_list(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=show_next_words)


def test_shading_in_colour(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=show_shading)


def test_shading_without_colour(snap_compare, mono_app):
    assert snap_compare(mono_app, terminal_size=SIZE, run_before=show_shading)


def test_the_fork_list_of_a_branched_story(snap_compare, tmp_path, monkeypatch):
    """Every turn, the story shown marked (*), the versions of a place indented under the turn before them."""
    from charterm.app.screens import ForkScreen

    async def run_before(pilot):
        await settle(pilot, shown_path())
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ForkScreen), 5, "the fork list")
        await wait_idle(pilot)
        await pilot.pause()

    assert snap_compare(branched_app(tmp_path, monkeypatch), terminal_size=SIZE, run_before=run_before)


async def show_notices(pilot) -> None:
    """Two notices as the app gives them (a short one, and one that wraps), in their rows above the status line."""
    from charterm.app.notices import Notice

    await settle(pilot)
    app = pilot.app
    app.notify("version 1/2", timeout=60)
    app.notify(
        "training wrote a better model: val 1.2345 against 1.3456 for anna-tiny on the same text; "
        "Ctrl+L or /load to switch to it",
        timeout=60,
        markup=False,
    )
    await wait_until(pilot, lambda: len(app.query(Notice)) == 2, 5, "the notices")
    await pilot.pause()


def test_notices_above_the_status_line(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=show_notices)

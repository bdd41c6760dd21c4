"""The next words (Ctrl+N, /next) and the shading of unsure chars (/shade), in the real app with the shipped model.

The app runs headless on a temporary CHARTERM_HOME with models/anna.safetensors, its worker on a thread of the
test process over real pipes; what the list offers is checked against a Session of the same story in the test,
what is picked against the store (read through a second connection).
"""

import asyncio

import pytest
from apphelpers import RecordingApp, idle, stored, submit, type_line, view, wait_idle, wait_ready, wait_until
from conftest import ROOT
from textual.app import App, ComposeResult

from charterm.app.story_view import MODEL, PERSON, SHADES, StoryView, levels_of
from charterm.app.widgets import CandidateList, PromptInput
from charterm.story.store import Store, Turn

ANNA = ROOT / "models" / "anna.safetensors"
OPENING = '"What are you doing?" said'


@pytest.fixture
def home(home):
    """The data dir (conftest.py's), holding a story the person has begun."""
    store = Store()
    story = store.open("untitled", str(ANNA))
    store.append_turn(story.id, story.revision, Turn(PERSON, OPENING))
    store.close()
    return home


@pytest.fixture(scope="module")
def loaded():
    from charterm.engine.checkpoint import load_model

    return load_model(ANNA)


@pytest.fixture(scope="module")
def expected(loaded):
    """The words a Session on the story as stored offers (what the list must show): with the weights the model
    learned of the person's turns, as the worker's."""
    from charterm.story.session import Session

    def words(n: int = 5) -> list[str]:
        store = Store()
        try:
            return [c.text for c in Session(loaded, store, store.load("untitled")).next_words(n)]
        finally:
            store.close()

    return words


class ProbsApp(RecordingApp):
    """The real app, also keeping the probabilities the worker sent with the model's chars."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.probs: list[float] = []

    def _on_appended(self, ev) -> None:
        if ev.author == MODEL:
            self.probs += ev.probs
        super()._on_appended(ev)


def run(test, app_class=RecordingApp, size=(100, 30)):
    app = app_class(model=str(ANNA), in_thread=True)

    async def main():
        async with app.run_test(size=size) as pilot:
            try:
                await wait_ready(pilot)
                await test(app, pilot)
            finally:
                await pilot.press("ctrl+q")

    asyncio.run(main())


def offer(app) -> CandidateList:
    return app.query_one(CandidateList)


async def offered(pilot) -> list[str]:
    """Wait for the list to show words (it has none from a pick until the next ones come); returns them."""
    words = offer(pilot.app)
    await wait_until(pilot, lambda: words.words, 10, "the next words")
    return words.words


def test_ctrl_n_offers_the_next_words_and_1_or_enter_picks_one_and_offers_more(home, expected):
    async def test(app, pilot):
        await pilot.press("ctrl+n")
        words = await offered(pilot)
        assert words == expected() and offer(app).has_focus and offer(app).display
        rows = [str(offer(app).get_option_at_index(i).prompt) for i in range(len(words))]
        assert [r.split()[0] for r in rows] == ["1", "2", "3", "4", "5"] and all(r.endswith("%") for r in rows)
        await pilot.press("1")
        await wait_until(pilot, lambda: len(stored()) == 2 and idle(app), 10, "the pick")
        assert stored() == [(PERSON, OPENING), (MODEL, words[0])] and view(app).text == OPENING + words[0]
        then = await offered(pilot)  # at once, the words after it
        assert then == expected()
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: len(stored()) == 3 and idle(app), 10, "the second pick")
        assert stored()[2] == (MODEL, then[1]) and view(app).text == OPENING + words[0] + then[1]
        await offered(pilot)
        await pilot.press("escape")
        assert not offer(app).display and app.query_one(PromptInput).has_focus
        await wait_idle(pilot)
        assert len(stored()) == 3 and app.errors() == []

    run(test)


def test_next_command_and_typing_goes_back_to_the_prompt(home, expected):
    async def test(app, pilot):
        await submit(pilot, "/next 3")
        assert await offered(pilot) == expected(3)
        await type_line(pilot, "Le", enter=False)  # typing: back to the prompt, with what was typed
        prompt = app.query_one(PromptInput)
        assert not offer(app).display and prompt.has_focus and prompt.text == "Le"
        prompt.text = ""
        await pilot.press("ctrl+n")  # /next 3 is remembered
        assert len(await offered(pilot)) == 3
        await pilot.press("escape")
        await submit(pilot, "/next 12")
        assert app.errors() == ["/next N: N is how many words to offer, 1 to 9 (got '12')"]
        await wait_idle(pilot)
        assert stored() == [(PERSON, OPENING)]

    run(test)


def drawn(v: StoryView) -> list[tuple[str, int]]:
    """(char, mark) of every char drawn but blanks: mark 0, or 1 + the index in SHADES of the style it is in."""
    names = {name: i + 1 for i, (_, name) in enumerate(SHADES)}
    return [(c, names.get(a, 0)) for line in v._lines for a, text in line.segments for c in text if not c.isspace()]


def meant(text: str, levels) -> list[tuple[str, int]]:
    """(char, mark) of every char of the story but blanks, as `levels` (one per char) marks them."""
    return [(c, lv) for c, lv in zip(text, levels, strict=True) if not c.isspace()]


def stepped_probs(loaded, turns: list[str], written: str) -> list[float]:
    """The probability of each char of `written` after the person's `turns`, stepped one char at a time through
    the int8 Stepper the worker writes with."""
    import torch

    from charterm.story.session import Session

    s = Session(loaded)
    for text in turns:
        s.append_person_turn(text)
    layers, logits, probs = s.stepper.from_state(s.state), s.logits(s.state), []
    for c in written:
        i = loaded.vocab.index[c]
        probs.append(float(torch.softmax(logits, 0)[i]))
        logits = s.stepper.step(torch.tensor([i]), layers).reshape(-1)
    return probs


def test_shade_marks_the_chars_the_model_was_unsure_of_and_survives_a_reflow(home, loaded):
    store = Store()  # the base weights write (charterm.story.learning has its own tests)
    store.set_settings(store.load("untitled").id, {"adapt": False})
    store.close()

    async def test(app, pilot):
        for line in ("/seed 3", "/chars 150", "/shade on"):
            await submit(pilot, line)
        await type_line(pilot, " Anna.")
        await wait_until(pilot, lambda: len(stored()) == 3 and idle(app), 20, "the model's turn")
        written = stored()[2][1]
        assert app.probs == pytest.approx(stepped_probs(loaded, [OPENING, " Anna."], written), abs=1e-3)
        want = meant(view(app).text, bytes(len(OPENING + " Anna.")) + levels_of(app.probs))
        assert drawn(view(app)) == want
        assert 0 < sum(1 for _, lv in want if lv) < len(want) / 2  # some chars are marked, most not
        assert view(app)._style(SHADES[1][1]).underline and view(app)._style(SHADES[0][1]).reverse
        before = view(app)._wrap_width
        await pilot.press("ctrl+b")  # the side pane goes: the story is wider
        await wait_until(pilot, lambda: view(app)._wrap_width > before, 5, "the reflow")
        assert drawn(view(app)) == want
        await submit(pilot, "/shade off")
        assert not any(lv for _, lv in drawn(view(app)))

    run(test, ProbsApp)


# --- the story view alone -----------------------------------------------------------------------------


class Host(App):
    def compose(self) -> ComposeResult:
        yield StoryView()


def test_story_view_keeps_each_chars_mark_through_reflow_newlines_tabs_undo_and_reload():
    text = "It was\n\ta fine\nday, and Anna went out to the ball in the evening."
    probs = [(i * 37 % 100) / 100 for i in range(len(text))]

    async def main():
        async with Host().run_test(size=(16, 14)) as pilot:
            v = pilot.app.query_one(StoryView)
            v.append("Yes. ", PERSON)
            for i in range(0, len(text), 4):  # as the worker sends them: in batches, across newlines
                v.append(text[i : i + 4], MODEL, probs[i : i + 4])
            v.append(" No.", PERSON)
            v.show_shade(True)
            await pilot.pause()
            levels = bytes(5) + levels_of(probs) + bytes(4)
            want = meant(v.text, levels)
            assert drawn(v) == want and {lv for _, lv in want} == {0, 1, 2}
            await pilot.resize_terminal(30, 14)
            await pilot.pause()
            assert drawn(v) == want
            v.set_runs([(PERSON, "Yes. "), (MODEL, text[:20])])  # undo: the start is the same, its marks stay
            await pilot.pause()
            assert drawn(v) == meant(v.text, levels[:25])
            v.set_runs([(PERSON, "No. "), (MODEL, text[:20])])  # another story: nothing is known
            assert not any(lv for _, lv in drawn(v))
            v.show_shade(False)
            v.set_runs([(MODEL, text)])
            v.append("!", MODEL, [0.01])
            assert not any(lv for _, lv in drawn(v))
            v.show_shade(True)
            assert drawn(v) == meant(v.text, bytes(len(text)) + b"\x01")

    asyncio.run(main())

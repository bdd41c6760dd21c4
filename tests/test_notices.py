"""Notices (what the app tells the person: `notify`) never cover the prompt, the status line or the
story's last rows, at 80x24 and larger, and still say all they say: the real app under Pilot, on a
story longer than the screen. What is on top at a cell is asked of the screen (get_widget_at)."""

import pytest
from apphelpers import idle, run_app, wait_until
from conftest import small_text
from textual.geometry import Region
from textual.widgets import Static

from charterm.app.story_view import StoryView
from charterm.story.store import MODEL, PERSON, Store, Turn

SHORT = "version 1/2"
LONG = (
    "training wrote a better model: val 1.2345 against 1.3456 for anna.safetensors on the same text; "
    "Ctrl+L or /load to switch to it"
)


@pytest.fixture
def long_story(home, tiny_model) -> str:
    """The story "tale": turns of the book (chars the model knows), longer than any screen here."""
    text = small_text()[:12_000]
    store = Store()
    try:
        story = store.open("tale", str(tiny_model))
        revision = story.revision
        for i, start in enumerate(range(0, len(text), 1_000)):
            turn = Turn(PERSON if i % 2 else MODEL, text[start : start + 1_000])
            revision = store.append_turn(story.id, revision, turn)
    finally:
        store.close()
    return text


def cells(region):
    return [(x, y) for y in range(region.y, region.bottom) for x in range(region.x, region.right)]


def on_top(app, region, widget) -> list[tuple[int, int]]:
    """The cells of `region` where something other than `widget` (or a child of it) is drawn on top."""
    covered = []
    for x, y in cells(region):
        top, _ = app.screen.get_widget_at(x, y)
        if widget not in top.ancestors_with_self:
            covered.append((x, y))
    return covered


def notices_saying(app, message: str) -> list[Static]:
    """The widgets on the screen showing `message` (whatever draws notices: toasts, a notice line)."""
    found = []
    for widget in app.screen.walk_children():
        if isinstance(widget, Static) and widget.region.area and widget.id != "status-line":
            shown = widget.render()
            if message in " ".join(str(getattr(shown, "plain", shown)).split()):
                found.append(widget)
    return found


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (200, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_notices_cover_neither_the_prompt_nor_the_status_line_nor_the_story_end(size, long_story, tiny_model):
    async def test(app, pilot):
        await wait_until(pilot, lambda: idle(app) and app.query_one(StoryView).text == long_story, 20, "the story")
        app.notify(SHORT)
        app.notify(LONG, timeout=8, markup=False)
        await wait_until(pilot, lambda: notices_saying(app, SHORT) and notices_saying(app, LONG), 5, "the notices")
        await pilot.pause()
        await pilot.pause()
        status, prompt, view = app.query_one("#status-line"), app.query_one("#prompt"), app.query_one(StoryView)
        assert on_top(app, status.region, status) == [], "a notice covers the status line"
        assert on_top(app, prompt.region, prompt) == [], "a notice covers the prompt"
        last_rows = Region(view.region.x, view.region.bottom - 3, view.region.width, 3)
        assert on_top(app, last_rows, view) == [], "a notice covers the story's end"
        assert view.scroll_offset.y >= view.max_scroll_y, "the story's last lines are not in view"
        for message in (SHORT, LONG):  # each said in full, nothing drawn over it
            (notice,) = notices_saying(app, message)
            assert app.screen.region.contains_region(notice.region), message
            assert on_top(app, notice.region, notice) == [], message

    run_app(test, model=tiny_model, story="tale", size=size, notifications=True)

"""The screen survives any resize: the real `charterm` on a pty, its output replayed into a terminal emulator
(tests/ptyterm.py), resized in bursts faster than the app can follow, and with its frames in flight while the
terminal is another size. Once the size settles, the whole screen is drawn at that size.
"""

import random
import re

import pytest
from ptyterm import PtyTerminal
from test_e2e import LOAD_TIMEOUT, SIDE_BORDER, drawn_whole, shown_story, squash, status_line, story_of

pytestmark = pytest.mark.slow
SETTLE = 10.0  # from the last resize to the whole screen drawn anew: a frame or two, on a busy machine


@pytest.fixture
def terminal(tmp_path, tiny_model):
    terminals = []

    def start(size=(100, 30)) -> PtyTerminal:
        t = PtyTerminal(tmp_path / "home", tiny_model, size)
        terminals.append(t)
        t.wait_for(lambda s: "story: " in s and re.search(r"\d+ turns", status_line(s)), LOAD_TIMEOUT, "the app")
        return t

    yield start
    for t in terminals:
        t.close()
        assert t.exit_code == 0


def wait_whole(t: PtyTerminal, what: str) -> str:
    cols, lines = t.screen.columns, t.screen.lines
    return t.wait_for(lambda s: drawn_whole(s, cols, lines) is None, SETTLE, f"{what}: the whole app at {cols}x{lines}")


def start_writing(t: PtyTerminal) -> None:
    """A very long model turn, written as the test goes on."""
    t.type("/chars 100000")
    t.wait_for(lambda s: re.search(r"\bchars +100000\b", s), 10, "chars 100000 in the settings")
    t.type("Anna")
    t.wait_for(lambda s: re.search(r"writing\.\.\. [\d,]+ chars", status_line(s)), 20, "the model writing")


def stop_and_check_the_story(t: PtyTerminal, home) -> None:
    """Esc; then the story pane's last lines are the stored story's end."""
    t.send("\x1b")
    t.wait_for(lambda s: re.search(r"\b2 turns", status_line(s)), 20, "the stopped turn saved")
    screen = wait_whole(t, "after Esc")
    shown = shown_story(screen)
    assert len(shown) > 100 and squash(story_of(home)).endswith(shown), screen


BURSTS = [[(80, 24), (100, 30)], [(200, 60), (100, 30)], [(60, 20), (100, 30)], [(100, 29), (99, 30), (100, 30)]]


def test_a_burst_of_resizes_back_to_the_same_size_redraws_the_whole_screen(terminal):
    """The terminal dropped lines as it shrank and the app, hearing of the sizes only once it was back, reads
    the size it is laid out for: it must still repaint everything (Textual alone repaints only what its
    layout changed). With the side pane shown, then hidden (Ctrl+B)."""
    t = terminal()
    wait_whole(t, "at the start")
    for side in ("shown", "hidden"):
        if side == "hidden":
            t.send("\x02")  # Ctrl+B
            t.wait_for(lambda s: SIDE_BORDER not in "".join(s.split("\n")[1:-4]), 10, "the side pane hidden")
        for burst in BURSTS:
            t.burst(*burst)
            assert drawn_whole(t.text(), 100, 30) is not None  # the terminal's resizes damaged the screen
            wait_whole(t, f"side pane {side}, after the burst {burst}")


def test_frames_that_land_at_another_size_are_painted_over(terminal, tmp_path):
    """Frames the app wrote at 100x30 reach the terminal after it shrank to 80x24 (a slow link): they scroll
    it. The app hears of 80x24 and 100x30 together, once the terminal is back at 100x30."""
    t = terminal()
    start_writing(t)
    t.hold = True
    t.pump(0.5)  # frames in flight
    t.hold_winch()
    t.resize(80, 24)
    scrolls = t.screen.scrolls
    t.release()
    assert t.screen.scrolls > scrolls  # the stale frames scrolled the shrunk terminal
    t.resize(100, 30)
    t.free_winch()
    wait_whole(t, "after frames landed at 80x24")
    stop_and_check_the_story(t, tmp_path / "home")


def test_any_sequence_of_resizes_while_the_model_writes_settles_whole(terminal, tmp_path):
    """Sizes between 60x20 and 200x60, some in bursts the app cannot follow, some one by one with the app
    drawing between them, frames held in flight now and then, the side pane toggled: at the end, the whole
    screen at the last size, and the story's end as stored."""
    rng = random.Random(22)
    t = terminal()
    start_writing(t)
    for _ in range(12):
        size = (rng.randint(60, 200), rng.randint(20, 60))
        step = rng.choice(["burst", "one", "in flight", "side"])
        if step == "burst":
            t.burst((rng.randint(60, 200), rng.randint(20, 60)), size)
        elif step == "one":
            t.resize(*size)
        elif step == "in flight":
            t.hold = True
            t.pump(rng.uniform(0.05, 0.3))
            t.hold_winch()
            t.resize(*size)
            t.release()
            t.free_winch()
        else:
            t.send("\x02")
        t.pump(rng.uniform(0.0, 0.3))
    wait_whole(t, "after the sequence")
    last = (t.screen.columns, t.screen.lines)
    t.burst((80, 24), last)
    wait_whole(t, "after a last burst")
    stop_and_check_the_story(t, tmp_path / "home")

"""Choices and bans in the real app in a real 80x24 terminal (tmux), with the shipped model: Ctrl+O writes three
continuations shown stacked under the story, 3 picks the third, the others stay versions; a banned text never
reaches the screen. Uses tests/test_e2e.py's `Term` (its own tmux server per test)."""

import re

import pytest
from conftest import ROOT
from test_e2e import Term, pytestmark, shown_story, squash, story_lines, tree_of  # noqa: F401 (pytestmark: slow)

ANNA = ROOT / "models" / "anna.safetensors"


@pytest.fixture
def term(tmp_path):
    t = Term(tmp_path, ANNA)
    yield t
    t.close()


def begin(term: Term) -> None:
    term.launch()
    term.wait_ready()
    for line in ("/adapt off", "/seed 4"):
        term.type(line)
    term.set_chars(0)
    term.type("Anna")
    term.wait_status(r"\b1 turns")
    term.set_chars(60)


def test_ctrl_o_shows_three_choices_at_80x24_and_3_picks_the_third(term):
    begin(term)
    term.keys("C-o")
    term.wait_for(lambda: len(tree_of(term.home)[0]) == 4, 40, "the three choices kept")
    screen = term.wait_screen(lambda s: re.search(r"\b2 turns", s) and re.search(r"^ *3  \S", s, re.M), 10, "the list")
    rows = [i for i, line in enumerate(screen.split("\n")) if re.match(r" *[123]  \S", line)]
    assert len(rows) == 3 and rows == sorted(rows) and rows[0] > 3  # stacked, under some of the story
    turns, head = tree_of(term.home)
    anna, *versions = turns
    assert len(versions) == 3 and all(v[1] == anna[0] for v in versions) and head == versions[0][0]
    term.keys("3")
    term.wait_status(r"\b2 turns, .*, version 3/3$")
    assert tree_of(term.home)[1] == versions[2][0]
    term.wait_screen(lambda s: shown_story(s).endswith(squash(versions[2][3])[-20:]), 10, "the third choice")
    term.quit()


def test_a_banned_text_never_reaches_the_screen(term):
    begin(term)
    term.type("/ban the")
    term.set_chars(2000)
    lines = []
    term.type(" and")
    term.wait_for(lambda: lines.extend(story_lines(term.capture())) or len(tree_of(term.home)[0]) == 3, 60, "the turn")
    written = tree_of(term.home)[0][-1][3]
    assert "the" not in written and len(written) >= 2000
    lines += story_lines(term.stable_capture())
    assert len(lines) > 100 and not [line for line in lines if "the" in line]
    term.quit()

"""What the app remembers across runs: preferences and the inputs sent (charterm/app/preferences.py)."""

import json
import os
import stat

import pytest

from charterm.app.preferences import HISTORY_LIMIT, InputHistory, load_preferences, save_preference
from charterm.paths import history_path, preferences_path

pytestmark = pytest.mark.usefixtures("home")  # every test on a fresh data dir (conftest.py)


def test_up_and_down_walk_the_inputs_and_come_back_to_the_draft():
    history = InputHistory()
    for entry in ("one", "two\nlines", "   ", "", "two\nlines", "three"):
        history.add(entry)
    assert history.entries == ["one", "two\nlines", "three"]  # no blanks, no repeat of the newest
    assert history.newer() is None
    assert [history.older("draft") for _ in range(4)] == ["three", "two\nlines", "one", None]
    assert [history.newer() for _ in range(4)] == ["two\nlines", "three", "draft", None]
    history.older("")
    history.add("four")  # sending starts the walk again from the newest
    assert history.older("") == "four"


def test_inputs_are_kept_in_the_data_dir_capped_owner_only(home):
    first = InputHistory(history_path(), limit=3)
    other = InputHistory(history_path(), limit=3)  # another window, started at the same time
    first.add("a")
    other.add("b")
    first.add("c")
    first.add("d")
    assert json.loads(history_path().read_text(encoding="utf-8")) == ["b", "c", "d"]
    assert first.entries == ["a", "c", "d"] and other.entries == ["b"]
    assert InputHistory(history_path(), limit=3).entries == ["b", "c", "d"]
    assert stat.S_IMODE(os.stat(history_path()).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert sorted(os.listdir(home)) == ["history.json"]  # no temp file left


def test_the_default_cap():
    history = InputHistory()
    for i in range(HISTORY_LIMIT + 20):
        history.add(str(i))
    assert len(history.entries) == HISTORY_LIMIT == 500 and history.entries[0] == "20"


@pytest.mark.parametrize("damaged", [b"", b"{not json", b'{"a": 1}', b'[1, null, "kept"]', b"\xff\xfe["])
def test_a_damaged_file_reads_as_empty_and_is_replaced(home, damaged):
    home.mkdir()
    history_path().write_bytes(damaged)
    preferences_path().write_bytes(damaged.replace(b'{"a": 1}', b"[]"))
    history = InputHistory(history_path())
    assert history.entries == (["kept"] if b"kept" in damaged else [])
    assert load_preferences() == {}
    history.add("new")
    assert json.loads(history_path().read_text(encoding="utf-8"))[-1] == "new"
    save_preference("wrap", "hard")
    assert load_preferences() == {"wrap": "hard"}


def test_a_preference_is_saved_beside_the_others():
    assert load_preferences() == {}
    save_preference("theme", "nord")
    save_preference("wrap", "hard")
    save_preference("theme", "gruvbox")
    assert load_preferences() == {"theme": "gruvbox", "wrap": "hard"}
    assert stat.S_IMODE(os.stat(preferences_path()).st_mode) == 0o600

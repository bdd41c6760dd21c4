"""The stories database: real SQLite files in tmp dirs. Stories and turns round-trip, names are
labels (never paths), files are owner-only, writers with a stale revision are refused, drafts
live and die with turns, and damaged or too-new databases are one-line errors."""

import os
import random
import sqlite3
import stat

import pytest
from conftest import run_cli

from charterm.errors import CharTermError, UsageError
from charterm.story.store import (
    MODEL,
    PERSON,
    SCHEMA_VERSION,
    Store,
    StoryChanged,
    Turn,
    check_name,
    home,
    render,
    slug,
)


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    d = tmp_path / "home"
    monkeypatch.setenv("CHARTERM_HOME", str(d))
    return d


@pytest.fixture
def store(data_home):
    s = Store()
    yield s
    s.close()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def add(store, name, *turns):
    """Append (author, text) turns to a story, passing the current revision each time."""
    story = store.load(name)
    rev = story.revision
    for author, text in turns:
        rev = store.append_turn(story.id, rev, Turn(author, text))
    return rev


# --- stories ----------------------------------------------------------------------------------


def test_create_load_list_delete(store):
    assert store.load("tale") is None
    assert store.list_stories() == []
    created = store.create("tale", model_path="/models/x.safetensors", settings={"top_k": 3})
    assert (created.name, created.model_path, created.settings, created.revision) == (
        "tale",
        "/models/x.safetensors",
        {"top_k": 3},
        0,
    )
    assert created.turns == [] and created.draft is None and created.text == ""
    add(store, "tale", (PERSON, "Anna "), (MODEL, "went home.\n"), (PERSON, "Then "), (MODEL, "she slept."))

    story = store.load("tale")
    assert [(t.author, t.text) for t in story.turns] == [
        (PERSON, "Anna "),
        (MODEL, "went home.\n"),
        (PERSON, "Then "),
        (MODEL, "she slept."),
    ]
    assert story.text == "Anna went home.\nThen she slept."
    assert all(t.id is not None and t.created > 0 for t in story.turns)
    assert story.revision == 4

    store.create("other")
    rows = {r.name: r for r in store.list_stories()}
    assert set(rows) == {"tale", "other"}
    tale = rows["tale"]
    assert (tale.turns, tale.chars, tale.model_path) == (4, len(story.text), "/models/x.safetensors")
    assert (rows["other"].turns, rows["other"].chars) == (0, 0)

    store.delete("tale")
    assert store.load("tale") is None
    assert [r.name for r in store.list_stories()] == ["other"]
    # the turns went with the story (ON DELETE CASCADE)
    assert store.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0


def test_list_is_most_recent_first(store):
    for name in ("a", "b", "c"):
        store.create(name)
    add(store, "a", (PERSON, "x"))  # "a" is now the most recently updated
    assert [r.name for r in store.list_stories()][0] == "a"


def test_open_creates_if_missing_and_loads_if_present(store):
    story = store.open("new one", "/m.safetensors")
    assert story.name == "new one" and story.model_path == "/m.safetensors" and story.turns == []
    add(store, "new one", (PERSON, "hi"))
    again = store.open("new one", "/another.safetensors")
    assert again.id == story.id and again.model_path == "/m.safetensors"
    assert [t.text for t in again.turns] == ["hi"]


def test_duplicate_create_is_a_one_line_error(store):
    store.create("dup")
    with pytest.raises(CharTermError) as e:
        store.create("  dup ")  # the same name once trimmed
    msg = str(e.value)
    assert "already exists" in msg and "dup" in msg and "\n" not in msg
    assert len(store.list_stories()) == 1


def test_deleting_an_unknown_story_errors(store):
    store.create("kept")
    with pytest.raises(CharTermError, match="no story named 'nope'"):
        store.delete("nope")
    assert [r.name for r in store.list_stories()] == ["kept"]


def test_last_story_is_remembered_and_forgotten_on_delete(store):
    assert store.last_story() is None
    store.create("x")
    store.set_last_story("x")
    assert store.last_story() == "x"
    store.delete("x")
    assert store.last_story() is None


def test_delete_by_an_untrimmed_name_also_forgets_it_as_the_last_story(store):
    store.create("x")
    store.set_last_story("x")
    store.delete("  x  ")  # the same story (names are trimmed)
    assert store.load("x") is None
    assert store.last_story() is None


# --- files ------------------------------------------------------------------------------------


def test_data_dir_is_0700_and_files_0600_and_wal(store, data_home):
    assert store.path == data_home / "stories.db" == home() / "stories.db"
    assert mode(data_home) == 0o700
    store.create("s")
    add(store, "s", (PERSON, "hello"))
    files = [store.path] + [p for p in (data_home / "stories.db-wal", data_home / "stories.db-shm") if p.exists()]
    assert len(files) == 3, "a WAL database with an open connection has -wal and -shm files"
    for f in files:
        assert mode(f) == 0o600, f
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_an_existing_loose_home_dir_is_tightened(tmp_path, monkeypatch):
    d = tmp_path / "loose"
    d.mkdir()
    os.chmod(d, 0o755)
    monkeypatch.setenv("CHARTERM_HOME", str(d))
    Store().close()
    assert mode(d) == 0o700
    assert mode(d / "stories.db") == 0o600


def test_explicit_path_needs_no_charterm_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARTERM_HOME", str(tmp_path / "unused"))
    s = Store(tmp_path / "deep" / "er" / "my.db")
    s.create("t")
    s.close()
    assert (tmp_path / "deep" / "er" / "my.db").exists()
    assert mode(tmp_path / "deep" / "er") == 0o700
    assert not (tmp_path / "unused").exists()
    assert [r.name for r in Store(tmp_path / "deep" / "er" / "my.db").list_stories()] == ["t"]


# --- names ------------------------------------------------------------------------------------


def test_check_name_trims_and_accepts_up_to_100_chars():
    assert check_name("  my story \t") == "my story"
    assert check_name("x" * 100) == "x" * 100
    assert check_name(" " + "y" * 100 + " ") == "y" * 100  # the limit applies after trimming
    assert check_name("Анна — café 😀") == "Анна — café 😀"
    assert check_name("cafe\u0301") == "caf\u00e9"  # NFC: one name, however it was typed


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "\t\n", "a\x00b", "two\nlines", "tab\there", "bell\x07", "del\x7f", "x" * 101, " " + "z" * 101],
)
def test_check_name_rejects(bad):
    with pytest.raises(UsageError) as e:
        check_name(bad)
    assert "\n" not in str(e.value)


def test_path_like_names_are_labels_not_paths(store, data_home, tmp_path):
    before = sorted(os.listdir(data_home))
    names = ["../x", "a/b", "/etc/passwd", "..", "C:\\temp\\y", "~/z"]
    for i, name in enumerate(names):
        store.create(name)
        add(store, name, (PERSON, f"turn {i}"))
    for i, name in enumerate(names):
        story = store.load(name)
        assert story.name == name and story.text == f"turn {i}"
    assert {r.name for r in store.list_stories()} == set(names)
    # nothing but the database files in the data dir, and nothing new beside it
    assert set(os.listdir(data_home)) <= {"stories.db", "stories.db-wal", "stories.db-shm"}
    assert set(before) <= set(os.listdir(data_home))
    assert sorted(os.listdir(tmp_path)) == ["home"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("My Story", "My-Story"),
        ("../x", "x"),
        ("a/b", "a-b"),
        ("..", "story"),
        ("", "story"),
        ("😀", "story"),
        (".hidden", "hidden"),
        ("C:\\temp\\y", "C--temp-y"),
        ("café_1.2", "café_1.2"),
    ],
)
def test_slug_makes_safe_file_names(name, expected):
    assert slug(name) == expected


def test_slug_is_short_and_never_a_path():
    for name in ["x" * 300, "/" * 50, "../" * 30 + "etc", "a\x00b", " . ", "-.-"]:
        s = slug(name)
        assert 0 < len(s) <= 80
        assert "/" not in s and "\\" not in s and "\x00" not in s and not s.startswith(".")
        assert s not in (".", "..")


# --- revisions --------------------------------------------------------------------------------


def test_revision_counts_changes_and_stale_writers_are_refused(store):
    story = store.create("r")
    assert story.revision == 0 and store.revision(story.id) == 0
    rev = store.append_turn(story.id, 0, Turn(PERSON, "one"))
    assert rev == 1 == store.revision(story.id)
    rev = store.append_turn(story.id, rev, Turn(MODEL, "two"))
    assert rev == 2

    with pytest.raises(StoryChanged):
        store.append_turn(story.id, 1, Turn(PERSON, "stale"))
    with pytest.raises(StoryChanged):
        store.append_turn(story.id, 3, Turn(PERSON, "from the future"))
    loaded = store.load("r")
    with pytest.raises(StoryChanged):
        store.move_head(story.id, 1, loaded.turns[0].id, loaded.tip)
    assert [t.text for t in loaded.turns] == ["one", "two"] and loaded.revision == 2

    rev = store.move_head(story.id, 2, loaded.turns[0].id, loaded.tip)
    assert rev == 3
    assert [t.text for t in store.load("r").turns] == ["one"]


def test_save_state_and_settings_do_not_bump_the_revision(store):
    story = store.create("s")
    rev = store.append_turn(story.id, 0, Turn(PERSON, "abc"))
    turn_id = store.load("s").turns[0].id
    store.save_state(turn_id, b"\x01\x02state", "fp123")
    store.save_draft(story.id, MODEL, "half a sen")
    loaded = store.load("s")
    assert loaded.revision == rev == 1
    assert (loaded.turns[0].state, loaded.turns[0].fingerprint) == (b"\x01\x02state", "fp123")


def test_turn_state_round_trips_through_append(store):
    story = store.create("st")
    turn = Turn(MODEL, "x", state=b"\x00\xff" * 10, fingerprint="abc")
    store.append_turn(story.id, 0, turn)
    assert turn.id is not None and turn.created > 0
    got = store.load("st").turns[0]
    assert (got.state, got.fingerprint, got.id) == (b"\x00\xff" * 10, "abc", turn.id)


def test_writing_to_a_deleted_story_is_story_changed(store):
    story = store.create("gone")
    store.delete("gone")
    with pytest.raises(StoryChanged, match="deleted"):
        store.append_turn(story.id, 0, Turn(PERSON, "x"))
    with pytest.raises(StoryChanged, match="deleted"):
        store.revision(story.id)


# --- drafts -----------------------------------------------------------------------------------


def test_draft_is_loaded_and_dropped_by_the_next_turn(store):
    story = store.create("d")
    rev = store.append_turn(story.id, 0, Turn(PERSON, "Anna "))
    store.save_draft(story.id, MODEL, "went")
    store.save_draft(story.id, MODEL, "went to Moscow")  # a later save replaces the earlier one
    loaded = store.load("d")
    assert loaded.draft is not None
    assert (loaded.draft.author, loaded.draft.text) == (MODEL, "went to Moscow")
    assert loaded.draft.created > 0
    assert loaded.text == "Anna "  # a draft is not (yet) part of the story

    store.append_turn(story.id, rev, Turn(MODEL, "went to Moscow."))
    loaded = store.load("d")
    assert loaded.draft is None
    assert store.db.execute("SELECT COUNT(*) FROM drafts").fetchone()[0] == 0


def test_refused_append_keeps_the_draft(store):
    story = store.create("d2")
    store.append_turn(story.id, 0, Turn(PERSON, "a"))
    store.save_draft(story.id, MODEL, "bcd")
    with pytest.raises(StoryChanged):
        store.append_turn(story.id, 0, Turn(MODEL, "bcd"))
    assert store.load("d2").draft.text == "bcd"


def test_empty_draft_and_drop_draft(store):
    story = store.create("d3")
    store.save_draft(story.id, MODEL, "")
    assert store.load("d3").draft is None
    store.save_draft(story.id, MODEL, "abc")
    store.drop_draft(story.id)
    assert store.load("d3").draft is None


# --- two connections --------------------------------------------------------------------------


def test_two_stores_on_one_file_see_each_other_and_stale_writers_are_refused(data_home):
    a, b = Store(), Store()
    try:
        story_a = a.create("shared")
        story_b = b.load("shared")
        assert story_b is not None and story_b.id == story_a.id

        rev_a = a.append_turn(story_a.id, story_a.revision, Turn(PERSON, "from a. "))
        assert [t.text for t in b.load("shared").turns] == ["from a. "]
        # b still holds revision 0: its append is refused and writes nothing
        with pytest.raises(StoryChanged):
            b.append_turn(story_b.id, story_b.revision, Turn(MODEL, "from b"))
        assert [t.text for t in a.load("shared").turns] == ["from a. "]

        story_b = b.load("shared")
        rev_b = b.append_turn(story_b.id, story_b.revision, Turn(MODEL, "from b"))
        assert rev_b == rev_a + 1
        with pytest.raises(StoryChanged):
            a.move_head(story_a.id, rev_a, None, None)
        assert [(t.author, t.text) for t in a.load("shared").turns] == [(PERSON, "from a. "), (MODEL, "from b")]
        assert a.revision(story_a.id) == b.revision(story_b.id) == 2
        assert a.integrity_check() == "ok"
    finally:
        a.close()
        b.close()


# --- render -----------------------------------------------------------------------------------


TURNS = [
    Turn(PERSON, "Anna *said*\n\nthen_left"),
    Turn(MODEL, " and 2*3 = 6 \\ done_ok.\n"),
    Turn(PERSON, "End"),
]


def test_render_txt_is_the_plain_text():
    assert render("T", TURNS, "txt") == "".join(t.text for t in TURNS)
    assert render("T", [], "txt") == ""


def test_render_md_bolds_the_person_per_line_and_escapes_specials():
    md = render("My tale", TURNS, "md")
    assert md == (
        "# My tale\n\n<strong>Anna \\*said\\*</strong>\n\n"
        "<strong>then\\_left</strong> and 2\\*3 \\= 6 \\\\ done\\_ok.\n<strong>End</strong>\n"
    )


def _md_html(md: str) -> str:
    from markdown_it import MarkdownIt  # CommonMark (rich's markdown parser)

    return MarkdownIt("commonmark").render(md)


def test_render_md_reads_back_as_the_story_in_commonmark():
    html = _md_html(render("My tale", TURNS, "md"))
    assert "<strong>Anna *said*</strong>" in html
    assert "<strong>then_left</strong>" in html
    assert "2*3 = 6 \\ done_ok." in html
    assert "<em>" not in html


def test_render_md_bold_survives_spaces_at_the_ends_of_a_person_turn():
    turns = [Turn(PERSON, "Anna said "), Turn(MODEL, "nothing.\n"), Turn(PERSON, " Then")]
    html = _md_html(render("T", turns, "md"))
    assert "**" not in html
    assert "<strong>Anna said</strong>" in html and "<strong>Then</strong>" in html


def test_render_unknown_format_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown format"):
        render("T", TURNS, "html")


# --- damaged and newer databases --------------------------------------------------------------


def test_a_newer_schema_is_a_clear_error(tmp_path):
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(CharTermError) as e:
        Store(path)
    msg = str(e.value)
    assert "newer charterm" in msg and "99" in msg and "\n" not in msg
    # and the file was not "upgraded" down to our schema
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'stories'").fetchone() is None
    db.close()


@pytest.mark.parametrize(
    "content",
    [b"this is not a database\n" * 100, random.Random(0).randbytes(8192), b"SQLite format 3\x00" + b"\xff" * 200],
    ids=["text", "random", "bad-header"],
)
def test_a_non_database_file_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "stories.db"
    path.write_bytes(content)
    with pytest.raises(CharTermError) as e:
        Store(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert path.read_bytes() == content  # left as it was


def test_cli_on_a_damaged_database_is_one_line_not_a_traceback(tmp_path):
    home_dir = tmp_path / "h"
    home_dir.mkdir(mode=0o700)
    (home_dir / "stories.db").write_bytes(b"garbage, not sqlite\n" * 50)
    r = run_cli("stories", "list", env={"CHARTERM_HOME": str(home_dir)})
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charterm: error: ") and "Traceback" not in r.stderr
    assert "stories.db" in lines[0]


# --- the tree of turns --------------------------------------------------------------------------


def test_a_turn_after_an_earlier_head_is_a_branch_and_moving_the_head_deletes_nothing(store):
    story = store.create("tree")
    rev = store.append_turn(story.id, 0, one := Turn(PERSON, "Anna "))
    rev = store.append_turn(story.id, rev, first := Turn(MODEL, "smiled."))
    rev = store.move_head(story.id, rev, one.id, first.id)  # undo: back to "Anna ", redo goes to "smiled."
    back = store.load("tree")
    assert [t.text for t in back.turns] == ["Anna "] and back.tip == first.id
    rev = store.append_turn(story.id, rev, second := Turn(MODEL, "wept."))
    tree = store.load("tree")
    assert [t.text for t in tree.turns] == ["Anna ", "wept."] and tree.tip == second.id
    assert tree.children == {None: [one.id], one.id: [first.id, second.id]}
    assert tree.versions(tree.turns[-1]) == [first.id, second.id] and second.parent == one.id
    assert tree.branch_end(one.id) == second.id and tree.branch_end(first.id) == first.id
    rev = store.move_head(story.id, rev, first.id, first.id)
    assert [t.text for t in store.load("tree").turns] == ["Anna ", "smiled."]
    rev = store.move_head(story.id, rev, None, first.id)  # before the first turn
    assert store.load("tree").turns == [] and len(store.load("tree").children[one.id]) == 2
    with pytest.raises(UsageError, match="no turn 999"):
        store.move_head(story.id, rev, 999, None)
    assert [(s.name, s.turns, s.chars) for s in store.list_stories()] == [("tree", 0, 0)]

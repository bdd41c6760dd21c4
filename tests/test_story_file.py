"""A story as one file: `charterm stories export --format json`, `stories import`, `/export PATH json`.

Real parts throughout: the session's tiny model, SQLite in a temporary CHARTERM_HOME, the real command
(in this process where that is fast, as a subprocess once), the app under Pilot. Every refused import is
checked against a dump of every row of the database, before and after.
"""

import json
import re
import shutil
import sqlite3
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, cli_in_process, run_cli

from charterm.story import exchange
from charterm.story.store import Store, Turn

SCHEMA = json.loads((ROOT / "docs" / "charterm-story-1.schema.json").read_text(encoding="utf-8"))
FIXTURES = Path(__file__).parent / "fixtures"  # stories_v1.db: made by charterm at commit 735a349 (schema 1)


def valid(doc: dict) -> dict:
    """`doc` if the format's JSON Schema accepts it (times checked as date-time too)."""
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(doc)
    return doc


def dump(home: Path) -> dict:
    """Every row of every table of the stories database, and its schema version."""
    db = sqlite3.connect(home / "stories.db")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
        out["user_version"] = db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()
    return out


def cli(capsys, monkeypatch, *args):
    return cli_in_process(capsys, monkeypatch, *map(str, args))


def one_line(code_out_err, code: int) -> str:
    rc, out, err = code_out_err
    assert rc == code, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charterm: error: ") and "Traceback" not in err, err
    return lines[0]


def branched_story(home: Path, model: Path, name: str = "the ball") -> None:
    """A story with versions, a branch, an edit, changed settings and a head moved back (tip ahead of it)."""
    from charterm.engine.checkpoint import load_model
    from charterm.story.session import Session

    store = Store(home / "stories.db")
    s = Session.open(store, name, load_model(model))
    s.update_settings(chars=12, top_k=3, temperature=0.7, seed=5, stop_at="sentence", adapt=False, bans=["Levin said"])
    s.append_person_turn("Kitty said ")
    s.continue_().run()
    s.retry().run()  # a second version of the model's turn
    s.append_person_turn(" and then ")
    s.continue_().run()
    s.edit(0, "Levin said ")  # a new version of the first turn: a branch from the start
    s.continue_().run()
    s.checkout(s.turns[0].id)
    s.switch_version(-1)  # back on the first branch, at its end
    s.undo()  # the head one turn back, the tip ahead
    other = Session.open(store, "other", s.loaded)
    other.append_person_turn("Another story.")
    store.close()


@pytest.fixture(scope="module")
def made(tiny_model, tmp_path_factory) -> Path:
    """A database with the branched story "the ball" and a one-turn "other", made once."""
    home = tmp_path_factory.mktemp("made")
    branched_story(home, tiny_model)
    return home / "stories.db"


@pytest.fixture
def home(made, tmp_path, monkeypatch) -> Path:
    d = tmp_path / "home"
    d.mkdir()
    shutil.copy(made, d / "stories.db")
    monkeypatch.setenv("CHARTERM_HOME", str(d))
    monkeypatch.delenv("CHARTERM_MODEL", raising=False)
    return d


def export_json(capsys, monkeypatch, name: str) -> dict:
    rc, out, err = cli(capsys, monkeypatch, "stories", "export", name, "--format", "json")
    assert rc == 0, err
    return valid(json.loads(out))


def normalized(doc: dict) -> dict:
    """The file with its turn ids counted 1, 2, ... in the order of its turns (an import renumbers them)."""
    ids = {t["id"]: i + 1 for i, t in enumerate(doc["turns"])} | {None: None}
    turns = [{**t, "id": ids[t["id"]], "parent": ids[t["parent"]]} for t in doc["turns"]]
    return {**doc, "turns": turns, "head": ids[doc["head"]], "tip": ids[doc["tip"]], "name": ""}


def tree_without_ids(capsys, monkeypatch, name: str) -> list[str]:
    rc, out, _ = cli(capsys, monkeypatch, "stories", "show", name, "--tree")
    assert rc == 0
    return [re.sub(r"^(.) +\d+ ", r"\1 ", line) for line in out.splitlines()]


# --- out -------------------------------------------------------------------------------------------


def test_the_json_export_carries_the_whole_tree_and_matches_the_schema(home, tiny_model, capsys, monkeypatch):
    out = home / "ball.json"
    rc, _, err = cli(capsys, monkeypatch, "stories", "export", "the ball", "--format", "json", "--out", out)
    assert rc == 0 and f"{out}: " in err
    doc = valid(json.loads(out.read_text(encoding="utf-8")))
    assert doc == export_json(capsys, monkeypatch, "the ball")  # stdout and the file alike
    store = Store(home / "stories.db")
    story = store.load("the ball")
    turns = store.all_turns(story.id)
    store.close()
    assert doc["format"] == "charterm-story/1" and doc["name"] == "the ball"
    assert [(t["id"], t["parent"], t["author"], t["text"]) for t in doc["turns"]] == [
        (t.id, t.parent, t.author, t.text) for t in turns
    ]
    assert len(turns) == 7 and len(story.turns) == 3  # two versions at the start, two after "Kitty said "
    assert [t["version"] for t in doc["turns"]] == [1, 1, 2, 1, 1, 2, 1]
    assert doc["head"] == story.turns[-1].id and doc["tip"] == story.tip != doc["head"]
    assert doc["settings"] == {"top_k": 3, "temperature": 0.7, "chars": 12, "stop_at": "sentence", "seed": 5,
                               "adapt": False, "bans": ["Levin said"]}  # fmt: skip
    assert doc["model"]["path"] == str(tiny_model.resolve()) and doc["model"]["card"]["name"] == "tiny.safetensors"
    assert doc["model"]["fingerprint"] == story.turns[0].fingerprint and doc["model"]["card"]["hidden"] == 48
    assert "state" not in out.read_text(encoding="utf-8")  # the LSTM states are a cache and stay out
    assert doc["draft"] is None
    robot = {**doc, "turns": [{**doc["turns"][0], "author": "robot"}, *doc["turns"][1:]]}
    with pytest.raises(jsonschema.ValidationError):  # the schema says something: it refuses a robot's turn
        valid(robot)


def test_a_story_from_an_earlier_release_exports_whole(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(FIXTURES / "stories_v1.db", home / "stories.db")
    monkeypatch.setenv("CHARTERM_HOME", str(home))
    old = sqlite3.connect(FIXTURES / "stories_v1.db")
    rows = old.execute("SELECT s.name, t.author, t.text, t.fingerprint FROM turns t JOIN stories s "
                       "ON s.id = t.story_id ORDER BY t.id").fetchall()  # fmt: skip
    old.close()
    lighthouse = export_json(capsys, monkeypatch, "the lighthouse")
    second = export_json(capsys, monkeypatch, "second story")
    got = [(d["name"], t["author"], t["text"], d["model"]["fingerprint"]) for d in (lighthouse, second)
           for t in d["turns"]]  # fmt: skip
    assert got == rows
    assert lighthouse["settings"] == {"top_k": 3, "temperature": 0.8, "chars": 40, "stop_at": "sentence", "seed": 7,
                                      "adapt": True, "bans": []}  # fmt: skip
    assert [t["parent"] for t in lighthouse["turns"]] == [None, 1, 2, 3] and lighthouse["head"] == 4
    assert second["draft"] == {"author": "model", "text": " And then"}  # what it showed before it stopped
    monkeypatch.setenv("CHARTERM_HOME", str(tmp_path / "elsewhere"))
    (tmp_path / "second.json").write_text(json.dumps(second), encoding="utf-8")
    assert cli(capsys, monkeypatch, "stories", "import", tmp_path / "second.json")[0] == 0
    assert Store().load("second story").draft.text == " And then"  # recovered as a turn when it opens


# --- the round trip -----------------------------------------------------------------------------------


def test_export_import_export_gives_the_same_tree_and_text(home, capsys, monkeypatch):
    first = export_json(capsys, monkeypatch, "the ball")
    path = home / "ball.json"
    path.write_text(json.dumps(first), encoding="utf-8")
    rc, _, err = cli(capsys, monkeypatch, "stories", "import", path, "--name", "copy")
    assert rc == 0 and "as 'copy': 7 turns" in err
    again = export_json(capsys, monkeypatch, "copy")
    assert again["name"] == "copy" and {t["id"] for t in again["turns"]}.isdisjoint(t["id"] for t in first["turns"])
    assert normalized(again) == normalized(first)
    assert tree_without_ids(capsys, monkeypatch, "copy") == tree_without_ids(capsys, monkeypatch, "the ball")
    for fmt in ("txt", "md"):
        texts = [cli(capsys, monkeypatch, "stories", "export", n, "--format", fmt)[1] for n in ("the ball", "copy")]
        assert texts[0] == texts[1].replace("# copy", "# the ball", 1) and texts[0]


def test_on_another_machine_the_file_comes_back_byte_for_byte(home, tmp_path, capsys, monkeypatch):
    """Into a database with stories of its own the ids are renumbered; into an empty one they come out as
    they went in (the story's ids are 1, 2, ...), so the second export is the first."""
    path = home / "ball.json"
    assert cli(capsys, monkeypatch, "stories", "export", "the ball", "--format", "json", "--out", path)[0] == 0
    first = json.loads(path.read_text(encoding="utf-8"))
    assert [t["id"] for t in first["turns"]] == list(range(1, 8))
    monkeypatch.setenv("CHARTERM_HOME", str(tmp_path / "laptop"))
    laptop = Store()
    laptop.add_story("mine", [Turn("person", "My own.", id=1)], 1, 1)
    laptop.close()
    assert cli(capsys, monkeypatch, "stories", "import", path)[0] == 0
    there = export_json(capsys, monkeypatch, "the ball")
    assert [t["id"] for t in there["turns"]] == list(range(2, 9)) and normalized(there) == normalized(first)
    monkeypatch.setenv("CHARTERM_HOME", str(tmp_path / "server"))
    assert cli(capsys, monkeypatch, "stories", "import", path)[0] == 0
    again = tmp_path / "again.json"
    assert cli(capsys, monkeypatch, "stories", "export", "the ball", "--format", "json", "--out", again)[0] == 0
    assert again.read_bytes() == path.read_bytes()


def test_the_imported_story_opens_where_it_was_left_with_its_states_rebuilt(home, tiny_model, capsys, monkeypatch):
    import torch

    from charterm.engine.checkpoint import load_model
    from charterm.story.session import Session

    path = home / "ball.json"
    path.write_text(json.dumps(export_json(capsys, monkeypatch, "the ball")), encoding="utf-8")
    assert cli(capsys, monkeypatch, "stories", "import", path, "--name", "copy")[0] == 0
    store = Store()
    copy = store.load("copy")
    cached = store.db.execute("SELECT COUNT(*) FROM turns WHERE story_id = ? AND state IS NOT NULL", (copy.id,))
    assert cached.fetchone()[0] == 0 and copy.turns  # no states travelled
    loaded = load_model(tiny_model)
    old, new = Session.open(store, "the ball", loaded), Session.open(store, "copy", loaded)
    assert new.runs() == old.runs() and new.settings == old.settings and new.versions() == old.versions()
    assert [new.versions(i) for i in range(len(new.turns))] == [old.versions(i) for i in range(len(old.turns))]
    assert store.load("copy").turns[-1].fingerprint == loaded.fingerprint  # the head's state, rebuilt and cached
    # rebuilt by feeding the text to the model, as after a model change
    assert all(torch.equal(a, b) for a, b in zip(new.state, new._run_text(new.text, new._start), strict=True))
    assert new.redo().text == old.redo().text  # redo goes on towards the tip, as it did there
    store.close()


def test_a_json_export_and_import_through_the_real_command(home, tmp_path):
    env = {"CHARTERM_HOME": str(home)}
    path = tmp_path / "ball.json"
    assert run_cli("stories", "export", "the ball", "--format", "json", "--out", path, env=env).returncode == 0
    r = run_cli("stories", "import", path, "--name", "copy", env=env)
    assert r.returncode == 0 and "charterm --story copy" in r.stderr, r.stderr
    show = [run_cli("stories", "show", n, env=env).stdout for n in ("the ball", "copy")]
    assert show[0] == show[1] and show[0]


# --- --force -------------------------------------------------------------------------------------------


def test_force_replaces_the_story_of_that_name_and_nothing_else(home, capsys, monkeypatch):
    other = export_json(capsys, monkeypatch, "other")
    path = home / "other.json"
    path.write_text(json.dumps({**other, "name": "the ball"}), encoding="utf-8")
    before = dump(home)
    one_line(cli(capsys, monkeypatch, "stories", "import", path), 2)
    assert dump(home) == before
    assert cli(capsys, monkeypatch, "stories", "import", path, "--force")[0] == 0
    assert dump(home) != before
    store = Store()
    assert store.load("the ball").text == "Another story." and len(store.all_turns(store.load("the ball").id)) == 1
    assert store.load("other").text == "Another story."
    store.close()
    db = sqlite3.connect(home / "stories.db")
    assert db.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 2  # the old tree went with its story
    db.close()


def test_a_failure_inside_the_import_rolls_the_replaced_story_back(home):
    store = Store()
    before = dump(home)
    dangling = [Turn("person", "a", id=1), Turn("model", "b", id=2, parent=7)]  # 7 is no turn of the file
    with pytest.raises(KeyError):
        store.add_story("the ball", dangling, 2, 2, replace=True)  # fails after the old story was deleted
    store.close()
    assert dump(home) == before


# --- text in -----------------------------------------------------------------------------------------------


def test_a_text_file_becomes_person_turns_the_model_continues_and_learns(home, tiny_model, capsys, monkeypatch):
    from charterm.engine.checkpoint import load_model
    from charterm.story.session import Session

    chapter = home / "My Chapter.md"
    chapter.write_bytes(b"\xef\xbb\xbf\r\nVelmorth kept the light.\r\nHe was old.\r\n  \r\nKitty came.\n\n\nThe end.\n")
    rc, _, err = cli(capsys, monkeypatch, "stories", "import", chapter)
    assert rc == 0 and "as 'My Chapter': 3 turns" in err
    store = Store()
    s = Session.open(store, "My Chapter", load_model(tiny_model))
    assert s.runs() == [("person", "\nVelmorth kept the light.\nHe was old.\n  \n"), ("person", "Kitty came.\n\n\n"),
                        ("person", "The end.\n")]  # fmt: skip
    learned = sum(len(s.learner.ids(t.text)) for t in s.turns) if s.learner else 0
    assert learned > 0 and s.learner.chars == learned  # it learned the chapter on opening
    s.continue_(20).run()
    assert s.turns[-1].author == "model" and len(s.turns[-1].text) == 20
    assert [t.author for t in store.load("My Chapter").turns] == ["person"] * 3 + ["model"]
    store.close()


def test_paragraphs_split_on_blank_lines_and_join_back_to_the_text():
    text = "\n\n a\nb\n\n\t\n c\n \n\n"
    assert exchange.split_paragraphs(text) == ["\n\n a\nb\n\n\t\n", " c\n \n\n"]
    assert "".join(exchange.split_paragraphs(text)) == text and exchange.split_paragraphs(" \n\n ") == []


# --- refused, with nothing stored ---------------------------------------------------------------------


def story_doc(**changes) -> dict:
    """A small valid charterm-story/1 object named "the ball" (a story of that name exists)."""
    t = "2026-12-02T10:00:00Z"
    doc = {
        "format": "charterm-story/1", "name": "the ball", "created": t, "settings": {}, "head": 2, "tip": 2,
        "model": {"path": None, "fingerprint": None, "card": None},
        "turns": [{"id": 1, "parent": None, "author": "person", "text": "A", "created": t, "version": 1},
                  {"id": 2, "parent": 1, "author": "model", "text": "b", "created": t, "version": 1}],
    }  # fmt: skip
    return {**doc, **changes}


def turns_with(**changes) -> list[dict]:
    """story_doc's turns with the second one changed."""
    first, second = story_doc()["turns"]
    return [first, {**second, **changes}]


HOSTILE = {  # file name -> (contents, exit status, what the error says)
    "newer.json": (json.dumps(story_doc(format="charterm-story/2")), 1, "newer charterm (charterm-story/2)"),
    "other.json": (json.dumps(story_doc(format="loom-tree/1")), 1, "not a charterm story file"),
    "broken.json": ('{"format": "charterm-story/1", "turns": [', 1, "not JSON"),
    "list.json": ("[1, 2]", 1, "not a charterm story file"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, 1, "not a charterm story file"),
    "latin1.json": (json.dumps(story_doc()).replace("A", "\xe9").encode("latin-1"), 1, "not UTF-8 at byte offset"),
    "cycle.json": (json.dumps(story_doc(turns=[{**turns_with()[0], "parent": 2}, turns_with()[1]])), 1,
                   "cycle: 1 -> 2 -> 1"),  # fmt: skip
    "self.json": (json.dumps(story_doc(turns=turns_with(parent=2))), 1, "cycle: 2 -> 2"),
    "orphan.json": (json.dumps(story_doc(turns=turns_with(parent=99))), 1, "its parent 99 is not in the file"),
    "author.json": (json.dumps(story_doc(turns=turns_with(author="robot"))), 1, "unknown author 'robot'"),
    "twice.json": (json.dumps(story_doc(turns=turns_with(id=1))), 1, "two turns have this id"),
    "text.json": (json.dumps(story_doc(turns=turns_with(text=7))), 1, "text must be a string"),
    "surrogate.json": (json.dumps(story_doc(turns=turns_with(text="\ud800"))), 1, "lone surrogate"),
    "version.json": (json.dumps(story_doc(turns=turns_with(version=2))), 1, "version 2, but it is no. 1"),
    "when.json": (json.dumps(story_doc(turns=turns_with(created="yesterday"))), 1, "not an ISO 8601 time"),
    "head.json": (json.dumps(story_doc(head=5)), 1, "head 5 is not a turn"),
    "setting.json": (json.dumps(story_doc(settings={"top_k": -1})), 1, "settings: top-k must be"),
    "noturns.json": (json.dumps({k: v for k, v in story_doc().items() if k != "turns"}), 1, "turns must be a list"),
    "bad.txt": (b"Kitty came.\n\nLevin \xe2\x28 said", 1, "not valid UTF-8 at byte offset 19"),
    "empty.txt": (" \n\n\t\n", 1, "has no text to import"),
}


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("file", sorted(HOSTILE))
def test_a_hostile_file_is_refused_in_one_line_and_nothing_is_stored(home, capsys, monkeypatch, file, force):
    contents, code, says = HOSTILE[file]
    path = home / file
    path.write_bytes(contents if isinstance(contents, bytes) else contents.encode())
    before = dump(home)
    line = one_line(cli(capsys, monkeypatch, "stories", "import", path, *(["--force"] if force else [])), code)
    assert says in line and str(path) in line
    assert dump(home) == before


def test_a_name_that_exists_a_bad_name_and_a_missing_file_are_usage_errors(home, capsys, monkeypatch):
    path = home / "other.json"
    path.write_text(json.dumps(story_doc(name="other")), encoding="utf-8")
    before = dump(home)
    exists = one_line(cli(capsys, monkeypatch, "stories", "import", path), 2)
    assert "a story named 'other' already exists; pass --name NEW, or --force" in exists
    assert "cannot be empty" in one_line(cli(capsys, monkeypatch, "stories", "import", path, "--name", " "), 2)
    assert "no such file" in one_line(cli(capsys, monkeypatch, "stories", "import", home / "gone.json"), 2)
    assert "is not a file" in one_line(cli(capsys, monkeypatch, "stories", "import", home), 2)
    assert dump(home) == before


def test_a_file_over_the_cap_is_refused_unread(home, capsys, monkeypatch):
    path = home / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(exchange.MAX_BYTES + 1)  # sparse: 50 MB of nothing, made at once
    before = dump(home)
    assert "is over 50 MB" in one_line(cli(capsys, monkeypatch, "stories", "import", path), 1)
    assert dump(home) == before


# --- in the app ---------------------------------------------------------------------------------------------


def test_slash_export_json_parses():
    from charterm.app.commands import parse_export

    assert parse_export("a b.json json") == ("a b.json", "json")
    assert parse_export("s.json --format=json") == ("s.json", "json")
    assert parse_export("s.json") == ("s.json", "txt")


def test_the_app_opens_an_imported_story_where_it_was_left_and_exports_it_whole(home, tiny_model, capsys, monkeypatch):
    from apphelpers import run_app, submit, view, wait_idle, wait_ready

    path, written = home / "ball.json", home / "out" / "app.json"
    assert cli(capsys, monkeypatch, "stories", "export", "the ball", "--format", "json", "--out", path)[0] == 0
    assert cli(capsys, monkeypatch, "stories", "import", path, "--name", "copy")[0] == 0
    expected = Store().load("the ball").text

    async def test(app, pilot):
        await wait_ready(pilot)
        assert view(app).text == expected
        await submit(pilot, f"/export {written} json")
        await wait_idle(pilot)
        assert f"wrote {written}" in app.messages()

    run_app(test, model=tiny_model, story="copy")
    from_app = valid(json.loads(written.read_text(encoding="utf-8")))
    assert from_app == export_json(capsys, monkeypatch, "copy")  # the worker and the command write one format
    assert normalized(from_app) == normalized(json.loads(path.read_text(encoding="utf-8")))

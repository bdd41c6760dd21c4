"""Saved stories from the command line: `generate --story` and `stories list|show|export|rm`.

No terminal here: every command runs as a subprocess with CHARTERM_HOME in tmp_path.
"""

import json
import os
import re
import stat
import subprocess
import sys

import pytest
from conftest import run_cli


def home_env(home):
    return {"CHARTERM_HOME": str(home)}


def one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("charterm: error: ") and "Traceback" not in r.stderr
    return lines[0]


def gen(home, model, story, prime, chars=50, seed=1, cwd=None):
    return run_cli(
        "generate", "--story", story, "--prime", prime, "--chars", chars, "--seed", seed, "--model", model,
        env=home_env(home), cwd=cwd,
    )  # fmt: skip


def test_story_lifecycle_generate_list_show_export_rm(tiny_model, tmp_path):
    home = tmp_path / "home"
    env = home_env(home)

    first = gen(home, tiny_model, "s", "Anna")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout) == 50  # the new text only: no prime, no newline when not a terminal
    second = gen(home, tiny_model, "s", " Levin", seed=2)
    assert second.returncode == 0, second.stderr
    assert len(second.stdout) == 50
    expected = "Anna" + first.stdout + " Levin" + second.stdout

    listing = run_cli("stories", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = [line for line in listing.stdout.splitlines() if line.strip()]
    assert len(rows) == 1
    assert re.match(r"^\*\s+s\s+4 turns\s+110 chars\s", rows[0]), rows[0]  # '*': the last story used

    as_json = run_cli("stories", "list", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert len(data) == 1
    assert data[0]["name"] == "s" and data[0]["turns"] == 4 and data[0]["chars"] == len(expected)
    assert data[0]["last"] is True
    assert data[0]["model_path"] == str(tiny_model.resolve())

    show = run_cli("stories", "show", "s", env=env)
    assert show.returncode == 0, show.stderr
    assert show.stdout == expected + ("" if expected.endswith("\n") else "\n")

    md_path = tmp_path / "f.md"
    md = run_cli("stories", "export", "s", "--format", "md", "--out", md_path, env=env)
    assert md.returncode == 0, md.stderr
    markdown = md_path.read_text(encoding="utf-8")
    assert markdown.startswith("# s\n\n<strong>Anna</strong>")
    assert "4 turns" in md.stderr and md.stdout == ""

    txt = run_cli("stories", "export", "s", "--format", "txt", env=env)
    assert txt.returncode == 0, txt.stderr
    assert txt.stdout == expected
    # `show` is `export --format txt` plus a final newline when the story has none
    assert show.stdout == txt.stdout + ("" if txt.stdout.endswith("\n") else "\n")

    rm = run_cli("stories", "rm", "s", env=env)
    assert rm.returncode == 0, rm.stderr
    assert "removed story 's' (4 turns)" in rm.stderr
    gone = run_cli("stories", "show", "s", env=env)
    assert "no story named 's'" in one_line_error(gone, 1)
    assert gone.stdout == ""
    one_line_error(run_cli("stories", "rm", "s", env=env), 1)
    empty = run_cli("stories", "list", "--json", env=env)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []


def test_export_md_bolds_a_turn_that_starts_with_a_space():
    # '** Levin**' would not be bold in CommonMark: the spaces go outside the markers
    from charterm.story.store import MODEL, PERSON, Turn, render

    md = render("s", [Turn(PERSON, "Anna"), Turn(MODEL, " said"), Turn(PERSON, " Levin "), Turn(MODEL, "smiled")], "md")
    assert "<strong>Anna</strong> said <strong>Levin</strong> smiled" in md


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("a\nb", id="newline"),
        pytest.param("x" * 500, id="500-chars"),
    ],
)
def test_bad_story_names_are_usage_errors(tiny_model, tmp_path, name):
    r = gen(tmp_path / "home", tiny_model, name, "Anna")
    msg = one_line_error(r, 2)
    assert "story name" in msg
    assert r.stdout == ""
    listing = run_cli("stories", "list", "--json", env=home_env(tmp_path / "home"))
    assert listing.returncode == 0 and json.loads(listing.stdout) == []


def test_a_bad_story_name_touches_nothing(tiny_model, tmp_path):
    r = gen(tmp_path / "home", tiny_model, "", "Anna")
    one_line_error(r, 2)
    assert not (tmp_path / "home").exists()


def test_a_path_like_name_is_just_a_name(tiny_model, tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    r = gen(home, tiny_model, "../etc", "Anna", chars=20, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 20
    data = json.loads(run_cli("stories", "list", "--json", env=home_env(home)).stdout)
    assert [d["name"] for d in data] == ["../etc"]
    show = run_cli("stories", "show", "../etc", env=home_env(home))
    assert show.returncode == 0 and show.stdout.startswith("Anna" + r.stdout)
    # nothing written anywhere but the data dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "home"]
    assert list(cwd.iterdir()) == []
    assert {p.name for p in home.iterdir()} <= {"stories.db", "stories.db-wal", "stories.db-shm"}


def test_same_seed_same_text_in_two_fresh_stories(tiny_model, tmp_path):
    home = tmp_path / "home"
    a = gen(home, tiny_model, "a", "The ", chars=80, seed=5)
    b = gen(home, tiny_model, "b", "The ", chars=80, seed=5)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout and len(a.stdout) == 80


def test_data_dir_is_private(tmp_path):
    home = tmp_path / "deep" / "home"
    r = run_cli("stories", "list", env=home_env(home))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "stories.db").stat().st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        p = home / f"stories.db{suffix}"
        if p.exists():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_an_existing_open_data_dir_is_tightened(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    r = run_cli("stories", "list", env=home_env(home))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_the_app_without_a_terminal_points_to_generate(tmp_path):
    r = run_cli("--story", "x", env=home_env(tmp_path / "home"), input="")
    msg = one_line_error(r, 2)
    assert "charterm generate" in msg and "terminal" in msg
    assert not (tmp_path / "home").exists()  # it failed before touching the data dir


def test_story_option_before_a_command_is_refused(tmp_path):
    r = run_cli("--story", "x", "stories", "list", env=home_env(tmp_path / "home"))
    assert "after the command" in one_line_error(r, 2)


def test_stories_list_on_an_empty_home(tmp_path):
    r = run_cli("stories", "list", env=home_env(tmp_path / "home"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "no stories yet" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_show_on_an_empty_home_is_an_error(tmp_path):
    r = run_cli("stories", "show", "nope", env=home_env(tmp_path / "home"))
    assert "no story named 'nope'" in one_line_error(r, 1)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["stories", "--help"], ["stories", "list"], ["stories", "show", "nope"], [], ["--story", "x"]],
    ids=lambda a: " ".join(a) or "no-args",
)
def test_light_commands_import_neither_torch_nor_textual(argv, tmp_path):
    code = (
        "import sys\nfrom charterm.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'textual') if m in sys.modules)\n"
        "print('HEAVY:' + ','.join(heavy), file=sys.stderr)"
    )
    env = {**os.environ, "CHARTERM_HOME": str(tmp_path / "home")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert r.stderr.strip().splitlines()[-1] == "HEAVY:", r.stderr
    if "--help" in argv:
        assert "Usage: charterm" in r.stdout


# --- the tree of turns ------------------------------------------------------------------------


def test_retry_writes_versions_the_tree_shows_them_and_checkout_forks(tiny_model, tmp_path, capsys, monkeypatch):
    from conftest import cli_in_process

    monkeypatch.setenv("CHARTERM_HOME", str(tmp_path / "home"))

    def cli(*args):
        return cli_in_process(capsys, monkeypatch, *args)

    common = ("--story", "t", "--model", str(tiny_model), "--chars", "20")
    code, first, _ = cli("generate", *common, "--prime", "Anna said", "--seed", "1")
    assert code == 0 and len(first) == 20
    versions = [first]
    for seed in (2, 3):
        code, out, err = cli("generate", *common, "--retry", "--seed", str(seed))
        assert code == 0 and len(out) == 20 and f"version {seed}/{seed} of the last turn" in err, err
        versions.append(out)
    assert len(set(versions)) == 3
    code, shown, _ = cli("stories", "show", "t")
    assert code == 0 and shown == "Anna said" + versions[2] + "\n"  # the newest version is the story
    code, tree, _ = cli("stories", "show", "t", "--tree")
    lines = tree.splitlines()
    assert code == 0 and lines[0].split() == ["turn", "author", "chars", "text"] and len(lines) == 5
    assert lines[1].startswith("*") and "'Anna said'" in lines[1]
    for k, (line, text) in enumerate(zip(lines[2:], versions, strict=True), 1):
        assert f"[{k}/3] {text!r}" in line and line.startswith("*" if k == 3 else " "), line
    code, _, err = cli("stories", "checkout", "t", "2")
    assert code == 0 and "now ends at turn 2" in err
    code, out, _ = cli("generate", *common, "--prime", " Levin", "--seed", "4")
    code, shown, _ = cli("stories", "show", "t")
    assert shown == "Anna said" + versions[0] + " Levin" + out + "\n"
    code, tree, _ = cli("stories", "show", "t", "--tree")
    assert len(tree.splitlines()) == 7 and tree.count("*") == 4  # every version kept; the path: 4 turns


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "--retry"),
        ("generate", "--story", "t", "--retry", "--prime", "x"),
        ("stories", "checkout", "t", "999"),
    ],
    ids=["retry-without-story", "retry-with-prime", "unknown-turn"],
)
def test_tree_commands_refuse_what_they_cannot_do_in_one_line(tiny_model, tmp_path, args, capsys, monkeypatch):
    from conftest import cli_in_process

    monkeypatch.setenv("CHARTERM_HOME", str(tmp_path / "home"))
    assert cli_in_process(capsys, monkeypatch, "generate", "--story", "t", "--model", tiny_model, "--chars", 5)[0] == 0
    extra = ("--model", tiny_model) if args[0] == "generate" else ()
    code, _, err = cli_in_process(capsys, monkeypatch, *args, *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("charterm: error: "), err

import locale
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANNA = ROOT.parent / "shared" / "data" / "anna.txt"
ANNA_SHA256 = "568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9"
needs_anna = pytest.mark.skipif(not ANNA.exists(), reason="../shared/data/anna.txt is not beside the repo")

# --- the environment the tests run in -------------------------------------------------------------
# What a person's shell may set that changes what a test sees (colour, sizes, the locale, Textual's
# own switches, charterm's settings): removed, or set to one value, for the whole run and for every
# process a test starts (they inherit os.environ). A test that needs one sets it itself.
UNSET = (
    "NO_COLOR", "FORCE_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "COLORTERM", "COLUMNS", "LINES", "ESCDELAY",
    "TTY_COMPATIBLE", "TTY_INTERACTIVE", "PYTHONIOENCODING", "LANGUAGE", "CHARTERM_TESTS_RESTARTED",
)  # fmt: skip
UNSET_PREFIXES = ("CHARTERM_", "TEXTUAL_", "LC_")
KEPT = ("TEXTUAL_SNAPSHOT_",)  # the snapshot plugin's own (its temp dir, set when the session starts)
# One torch thread in every process: the tests run in parallel workers (more than there are cores),
# and a pool of threads per process on a shared CPU spends most of its time waiting (the suite took
# 970 CPU seconds with torch's default threads, 620 with one).
PINNED = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1"}


def unpinned(environ) -> list[str]:
    """The names in `environ` that the tests' environment does not have."""
    return [
        name
        for name in environ
        if name not in PINNED and not name.startswith(KEPT) and (name in UNSET or name.startswith(UNSET_PREFIXES))
    ]


def read_at_start(environ) -> bool:
    """Whether this process took a setting it cannot drop later: Textual reads TEXTUAL_* and ESCDELAY
    when it is imported (the snapshot plugin imports it before this file), Python its locale's
    encoding when it starts."""
    textual = any(n == "ESCDELAY" or (n.startswith("TEXTUAL_") and not n.startswith(KEPT)) for n in environ)
    return textual or locale.getpreferredencoding(False).lower().replace("-", "") != "utf8"


RESTART = read_at_start(os.environ) and "CHARTERM_TESTS_RESTARTED" not in os.environ
for _name in unpinned(os.environ):
    del os.environ[_name]
os.environ.update(PINNED)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """A run started in an environment Textual or Python had already read starts again in the pinned
    one (once; only a `pytest` or `python -m pytest` process, never one that called pytest.main)."""
    if RESTART and sys.argv[0].endswith(("pytest", "py.test", os.path.join("pytest", "__main__.py"))):
        os.environ["CHARTERM_TESTS_RESTARTED"] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: a worker more than there are cores, as many tests spend part of their time waiting
    on a process they started (the app in tmux, a worker, a training run)."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True, scope="session")
def _session_env(tmp_path_factory) -> dict[str, str]:
    """What the suite itself sets, before any fixture: token files go to one temp cache (shared by
    the session, like a user's), the data dir is a temp one (a test's own with `home`), and the
    default training text is never downloaded from the network (a port nothing listens on)."""
    env = {
        **PINNED,
        "CHARTERM_CACHE": str(tmp_path_factory.mktemp("cache")),
        "CHARTERM_HOME": str(tmp_path_factory.mktemp("data-dir")),
        "CHARTERM_DATA_URL": f"http://127.0.0.1:{unused_port()}/anna.txt",
    }
    os.environ.update(env)
    return env


@pytest.fixture(autouse=True)
def pinned_environment(_session_env, monkeypatch) -> None:
    """Every test starts in the pinned environment, whatever the shell or an earlier test set."""
    for name in unpinned(os.environ):
        if name not in _session_env:
            monkeypatch.delenv(name)
    for name, value in _session_env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh data dir ($CHARTERM_HOME) for the test: stories, preferences, models training writes."""
    d = tmp_path / "home"
    monkeypatch.setenv("CHARTERM_HOME", str(d))
    return d


def run_cli(*args, cwd=None, env=None, input=None, timeout=120):
    """Run the real `charterm` command (as `python -m charterm`) and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "charterm", *map(str, args)],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_in_process(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """charterm.cli.main in this process (fast, for the one-line-error cases); returns
    (exit code, stdout, stderr)."""
    from charterm.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def small_text() -> str:
    """About 30k chars of the book when it is beside the repo, else a synthetic text."""
    if ANNA.exists():
        with open(ANNA, encoding="utf-8") as f:
            return f.read(30_000)
    import random
    import string

    words = "happy families are all alike every unhappy family is unhappy in its own way".split()
    words += list(string.ascii_letters) + list(string.digits) + ["Anna", "Levin", "Kitty", "Oblonsky"]
    rng = random.Random(0)
    paragraphs = []
    for _ in range(350):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            s = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize()
            s = s.replace(" ", ", ", 1) if rng.random() < 0.5 else s
            end = rng.choice(".!?;:")
            sentences.append(f'"{s}{end}" said Anna.' if rng.random() < 0.3 else f"{s} ({rng.choice(words)}){end}")
        paragraphs.append("\n".join(sentences))
    return "\n\n".join(paragraphs) + "\n"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "small.txt"
    p.write_text(small_text(), encoding="utf-8")
    return p


TINY = dict(hidden=48, layers=2, batch_size=8, seq_length=32, epochs=2, lr=0.01, warmup_steps=5, seed=7)


@pytest.fixture(scope="session")
def tiny_model(corpus, tmp_path_factory) -> Path:
    """A small LSTM trained for a few seconds on the small corpus."""
    from charterm.config import TrainConfig
    from charterm.engine.training import run_training

    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    run_training(TrainConfig(data=str(corpus), out=str(out), **TINY), command="pytest tiny_model")
    return out


def stored_turns(home: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(turns, drafts) as the database has them, after an integrity check."""
    db = sqlite3.connect(home / "stories.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        turns = db.execute("SELECT author, text FROM turns ORDER BY seq").fetchall()
        drafts = db.execute("SELECT author, text FROM drafts").fetchall()
    finally:
        db.close()
    return turns, drafts

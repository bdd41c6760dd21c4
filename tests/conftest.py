import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANNA = ROOT.parent / "shared" / "data" / "anna.txt"
ANNA_SHA256 = "568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9"
needs_anna = pytest.mark.skipif(not ANNA.exists(), reason="../shared/data/anna.txt is not beside the repo")


@pytest.fixture(autouse=True, scope="session")
def _token_cache(tmp_path_factory):
    """Token files of every test go to one temp cache (shared by the session, like a user's)."""
    os.environ["CHARTERM_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def run_cli(*args, cwd=None, env=None, input=None, timeout=120):
    """Run the real `charterm` command (as `python -m charterm`) and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CHARTERM_DEBUG", None)
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

    monkeypatch.delenv("CHARTERM_DEBUG", raising=False)
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

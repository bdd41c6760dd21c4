"""`charterm train` as typed, with no --data and no --out (charterm/paths.py's one rule): the text is
found in the checkout's data/ or the data dir's, or downloaded (a real HTTP server on 127.0.0.1), or
the run stops with one line; the model goes to a new file, never over the shipped model or a run
before it. The real command runs from a copy of the package: a checkout, or an installed one."""

import hashlib
import json
import re
import shutil
import sys

import pytest
from apphelpers import run_app, wait_ready, wait_until
from conftest import ANNA_SHA256, ROOT, needs_anna, run_cli, small_text
from test_data import NO_PROXY, Server

TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--seq-length", "16", "--max-steps", "3"]
TINY += ["--eval-chars", "500", "--progress", "none"]
NEW_RUN = re.compile(r"anna-\d{8}-\d{6}(-\d+)?\.safetensors")


def copy_package(to, checkout: bool):
    """charterm's source at `to` (what PYTHONPATH should be): a checkout (pyproject.toml, models/
    with the shipped model, data/) or, without them, as a wheel installs it."""
    shutil.copytree(ROOT / "charterm", to / "charterm", ignore=shutil.ignore_patterns("__pycache__"))
    if checkout:
        shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")
        (to / "models").mkdir()
        shutil.copy(ROOT / "models" / "anna.safetensors", to / "models" / "anna.safetensors")
        (to / "data").mkdir()
    return to


def train(source, home, cwd, *args, env=None):
    """`charterm train TINY ARGS` from the package at `source`; (the result, the model file it named)."""
    r = run_cli(
        "train", *TINY, *args, cwd=cwd, timeout=240,
        env={"PYTHONPATH": str(source), "CHARTERM_HOME": str(home), "OMP_NUM_THREADS": "1", **NO_PROXY, **(env or {})},
    )  # fmt: skip
    named = re.search(r"the model goes to (.+)", r.stderr)
    return r, named and named.group(1).strip()


def trained_on(model) -> str:
    """The text a model file says it was trained on."""
    from charterm.engine.checkpoint import load_model

    return load_model(model).info["train_config"]["data"]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_two_new_runs(first, second, home) -> None:
    """Both runs worked, each wrote a new file in the data dir's models/, said where at the start and the end."""
    for r, out in (first, second):
        assert r.returncode == 0, r.stderr
        assert out and NEW_RUN.fullmatch((home / "models" / out.rsplit("/", 1)[-1]).name), r.stderr
        assert f"at {out} (" in r.stderr.splitlines()[-1]  # the last line: the best model and where it is
    assert first[1] != second[1]
    assert sorted(p.name for p in (home / "models").glob("*.safetensors")) == sorted(
        out.rsplit("/", 1)[-1] for _, out in (first, second)
    )


def test_train_twice_from_a_checkout_and_from_another_folder(tmp_path):
    source = copy_package(tmp_path / "checkout", checkout=True)
    (source / "data" / "anna.txt").write_text(small_text(), encoding="utf-8")
    shipped = source / "models" / "anna.safetensors"
    before = (sha256(shipped), shipped.stat().st_mtime_ns)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    first = train(source, home, source)
    second = train(source, home, elsewhere)
    assert_two_new_runs(first, second, home)
    assert trained_on(first[1]) == trained_on(second[1]) == str(source / "data" / "anna.txt")
    assert (sha256(shipped), shipped.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (source / "models").iterdir()) == ["anna.safetensors"]
    assert list(elsewhere.iterdir()) == []


def test_train_twice_outside_a_checkout_reads_the_data_dir(tmp_path):
    source = copy_package(tmp_path / "site", checkout=False)
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "anna.txt").write_text(small_text(), encoding="utf-8")
    first = train(source, home, tmp_path)
    second = train(source, home, tmp_path)
    assert_two_new_runs(first, second, home)
    assert trained_on(first[1]) == str(home / "data" / "anna.txt")


def test_resume_without_out_continues_the_newest_run(tmp_path):
    source = copy_package(tmp_path / "site", checkout=False)
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "anna.txt").write_text(small_text(), encoding="utf-8")
    r, out = train(source, home, tmp_path)
    assert r.returncode == 0, r.stderr
    resumed, again = train(source, home, tmp_path, "--resume", "--max-steps", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert again == out and "resuming at step 3" in resumed.stderr


@needs_anna
def test_train_downloads_the_book_when_it_is_nowhere(tmp_path):
    server = Server()
    try:
        source = copy_package(tmp_path / "site", checkout=False)
        home = tmp_path / "home"
        url = {"CHARTERM_DATA_URL": server.url("/anna.txt")}
        first = train(source, home, tmp_path, env=url)
        assert sha256(home / "data" / "anna.txt") == ANNA_SHA256
        assert "downloaded and verified" in first[0].stderr
        second = train(source, home, tmp_path, env=url)
        assert server.requests == ["/anna.txt"], "the book is downloaded once"
    finally:
        server.close()
    assert_two_new_runs(first, second, home)


def test_train_offline_is_one_line_naming_both_ways_on(tmp_path):
    """The suite's CHARTERM_DATA_URL is a port nothing listens on (conftest.py)."""
    source = copy_package(tmp_path / "site", checkout=False)
    home = tmp_path / "home"
    r, _ = train(source, home, tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("charterm: error: "), r.stderr
    assert "downloading anna.txt" in lines[0] and "refused" in lines[0].lower()
    assert "`charterm data fetch anna`" in lines[0] and "--data PATH" in lines[0]
    assert not (home / "data" / "anna.txt").exists() and not (home / "models").exists()


def test_eval_reads_the_default_text_where_train_finds_it(tmp_path, tiny_model):
    source = copy_package(tmp_path / "site", checkout=False)
    home = tmp_path / "home"
    env = {"PYTHONPATH": str(source), "CHARTERM_HOME": str(home)}
    missing = run_cli("eval", "--model", tiny_model, cwd=tmp_path, env=env)
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1, missing.stderr
    assert f"not in {home / 'data'}" in missing.stderr and "charterm data fetch anna" in missing.stderr
    (home / "data").mkdir(parents=True)
    (home / "data" / "anna.txt").write_text(small_text(), encoding="utf-8")
    found = run_cli("eval", "--model", tiny_model, "--json", cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["chars"] > 0


# --- the app's Ctrl+T follows the same rule ------------------------------------------------------


@pytest.fixture
def bare_model(tiny_model, tmp_path):
    """The tiny model with no record of its training text (as an imported one): /train takes the book."""
    from charterm.engine.checkpoint import load_model, save_model

    loaded = load_model(tiny_model)
    path = tmp_path / "bare.safetensors"
    save_model(path, loaded.model, loaded.vocab, {k: v for k, v in loaded.info.items() if k != "train_config"})
    return path


def test_ctrl_t_trains_on_the_default_text_into_a_new_file(home, bare_model, monkeypatch):
    import charterm.worker.jobs
    from charterm import paths

    monkeypatch.setattr(paths, "checkout", lambda: None)  # the book in the data dir, not in this checkout
    (home / "data").mkdir(parents=True)
    (home / "data" / "anna.txt").write_text(small_text(), encoding="utf-8")
    started = []
    real = charterm.worker.jobs.TrainingJob
    fake_trainer = ROOT / "tests" / "fake_trainer.py"

    def fake(args, on_event, **kw):
        started.append(args)
        return real(args, on_event, argv=[sys.executable, str(fake_trainer)], **kw)

    monkeypatch.setattr(charterm.worker.jobs, "TrainingJob", fake)

    async def test(app, pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: started and app.job is None, 20, "the run to end")

    run_app(test, model=bare_model)
    args = started[0]
    assert args[args.index("--data") + 1] == str(paths.default_text())
    out = args[args.index("--out") + 1]
    assert out.startswith(str(home / "models") + "/") and NEW_RUN.fullmatch(out.rsplit("/", 1)[-1])


@pytest.mark.slow
def test_ctrl_t_with_the_text_nowhere_fails_in_one_line(home, bare_model, tmp_path, monkeypatch):
    """The real child tries the download (refused here) and the pane says what to do."""
    from charterm import paths

    monkeypatch.setattr(paths, "checkout", lambda: None)  # the app's own data/: not looked at
    source = copy_package(tmp_path / "site", checkout=False)  # nor the child's
    monkeypatch.setenv("PYTHONPATH", str(source))
    monkeypatch.chdir(tmp_path)  # `python -m charterm` would import the package in the current folder

    async def test(app, pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+t")
        assert app.errors() == [] and "training started" in app.messages()[-1]  # it may have ended already
        await wait_until(pilot, lambda: app.job is None, 60, "the child to exit")
        status = str(app.query_one("TrainingPane > #status").render())
        assert status.startswith("failed: ") and "no training text, and downloading anna.txt" in status, status
        assert f"to {home / 'data' / 'anna.txt'} failed" in status
        assert "`charterm data fetch anna`" in status and "--data PATH" in status

    run_app(test, model=bare_model)

"""The real `charterm` command: output, determinism, and one-line errors with the right exit codes."""

import json
import subprocess
import sys

import pytest
from conftest import cli_in_process, run_cli


@pytest.fixture
def cli(capsys, monkeypatch):
    """The CLI in this process (no interpreter and torch start-up per call); answers like run_cli."""

    def run(*args):
        code, out, err = cli_in_process(capsys, monkeypatch, *args)
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("charterm: error: ") and "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["generate", "--help"]])
def test_help_does_not_import_torch(argv):
    code = (
        "import sys\nfrom charterm.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH"
    assert "Usage: charterm" in r.stdout


COMMANDS = [[], ["train"], ["generate"], ["eval"], ["info"], ["export"], ["data", "fetch"], ["stories", "export"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_states_each_default_once(command):
    import re

    text = " ".join(run_cli(*command, "--help").stdout.split())  # rich wraps lines anywhere
    assert "Usage: charterm" in text
    for option in re.split(r"(?=\s--[a-z])", text):
        assert option.count("[default:") <= 1, option


def test_shell_completion_offers_commands_and_options():
    def complete(words: str) -> list[str]:
        env = {"_CHARTERM_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
        r = run_cli(env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("charterm ge") == ["generate"]
    assert "--top-k" in complete("charterm generate --to")
    assert set(complete("charterm stories ")) >= {"list", "show", "export", "rm"}
    script = run_cli(env={"_CHARTERM_COMPLETE": "source_bash"})  # what --show-completion prints in bash
    assert script.returncode == 0 and "_CHARTERM_COMPLETE=complete_bash" in script.stdout


def test_generate_writes_the_prime_then_the_continuation(tiny_model):
    r = run_cli("generate", "--model", tiny_model, "--prime", "Anna", "--chars", "200", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Anna") and len(r.stdout) == 204
    assert r.stderr == ""


def test_same_seed_same_text_byte_for_byte(tiny_model, cli):
    args = ("generate", "--model", tiny_model, "--prime", "The ", "--chars", "300", "--top-k", "5")
    a, b = run_cli(*args, "--seed", "11"), cli(*args, "--seed", "11")  # a real process, and this one
    c = cli(*args, "--seed", "12")
    assert a.stdout == b.stdout and a.stdout != c.stdout
    fp = cli(*args, "--seed", "11", "--precision", "fp32")
    assert fp.returncode == 0 and fp.stdout.startswith("The ")


def test_greedy_is_deterministic_without_a_seed(tiny_model, cli):
    args = ("generate", "--model", tiny_model, "--prime", "He", "--chars", "80", "--temperature", "0")
    assert cli(*args).stdout == cli(*args).stdout


def test_prime_with_unknown_chars_is_folded_and_reported(tiny_model):
    prime = "\u201cWell,\u201d said Ann\u00e9 \u0416\U0001f600"
    r = run_cli("generate", "--model", tiny_model, "--prime", prime, "--chars", "20", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(prime)
    warning = r.stderr.strip()
    assert warning.startswith("charterm: warning: prime: changed")
    assert "'\u201c'->'\"'" in warning and "dropped" in warning and "'\u0416'" in warning


def test_prime_file_and_zero_chars(tiny_model, tmp_path):
    p = tmp_path / "prime.txt"
    p.write_text("Levin said\r\n", encoding="utf-8")
    r = run_cli("generate", "--model", tiny_model, "--prime-file", p, "--chars", "0")
    assert r.returncode == 0 and r.stdout == "Levin said\n"


def test_eval_json_and_int8_agree(tiny_model, corpus, cli):
    fp = cli("eval", "--model", tiny_model, "--data", corpus, "--json")
    q = cli("eval", "--model", tiny_model, "--data", corpus, "--json", "--precision", "int8")
    a, b = json.loads(fp.stdout), json.loads(q.stdout)
    assert set(a) >= {"loss", "bits_per_char", "perplexity", "chars"}
    assert a["bits_per_char"] == pytest.approx(a["loss"] / 0.6931471805599453)
    assert abs(a["loss"] - b["loss"]) <= 0.01
    whole = json.loads(cli("eval", "--model", tiny_model, "--data", corpus, "--json", "--split", "all").stdout)
    assert whole["chars"] > 5 * a["chars"]
    text = cli("eval", "--model", tiny_model, "--data", corpus)
    assert text.stdout.startswith("val: ") and "nats/char" in text.stdout


def test_info_json(tiny_model, cli):
    r = cli("info", "--model", tiny_model, "--json")
    card = json.loads(r.stdout)
    assert card["hidden"] == 48 and card["layers"] == 2 and card["params"] > 0
    assert isinstance(card["val_loss"], float) and card["vocab_size"] == len(card["vocab"])
    human = cli("info", "--model", tiny_model).stdout
    assert "LSTM 48x2" in human and "parameters" in human


def test_train_jsonl_progress(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    r = run_cli(
        "train",
        "--data",
        corpus,
        "--out",
        out,
        "--hidden",
        "32",
        "--batch-size",
        "8",
        "--seq-length",
        "32",
        "--max-steps",
        "12",
        "--eval-every",
        "6",
        "--progress",
        "jsonl",
    )
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("eval") == 2
    assert events[0]["params"] > 0 and events[0]["chars"] > 0
    assert all(isinstance(e["step"], int) for e in events if e["event"] == "step")
    again = run_cli("train", "--data", corpus, "--out", out, "--max-steps", "1")
    assert "already exists" in one_line_error(again, 2)


def test_train_prints_size_and_params_without_progress(corpus, tmp_path):
    r = run_cli(
        "train",
        "--data",
        corpus,
        "--out",
        tmp_path / "m.safetensors",
        "--hidden",
        "16",
        "--batch-size",
        "4",
        "--seq-length",
        "16",
        "--max-steps",
        "3",
        "--progress",
        "none",
    )
    assert r.returncode == 0 and r.stdout == ""
    assert "parameters" in r.stderr and "chars" in r.stderr and "best val loss" in r.stderr


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["generate", "--top-k", "-1"], 2, "top-k"),
        (["generate", "--chars", "-5"], 2, "--chars"),
        (["generate", "--temperature", "-1"], 2, "--temperature"),
        (["generate", "--prime", "a", "--prime-file", "x"], 2, "not both"),
        (["train", "--val-frac", "1"], 2, "--val-frac"),
        (["train", "--data", "."], 2, "no .txt files"),
        (["train", "--batch-size", "0"], 2, "--batch-size"),
        (["train", "--device", "tpu"], 2, "--device"),
        (["train", "--preset", "nope"], 2, "--preset"),
        (["train", "--progress", "fancy"], 2, "fancy"),
        (["train", "--nope"], 2, "--nope"),
        (["eval", "--data", "."], 2, "no .txt files"),
        (["eval", "--val-frac", "1.5"], 2, "--val-frac"),
        (["generate", "--model", "/nonexistent/m.safetensors"], 1, "no such model"),
        (["info", "--model", "/nonexistent/m.safetensors"], 1, "no such model"),
        (["nosuchcommand"], 2, "nosuchcommand"),
        (["data", "fetch", "bible"], 2, "anna"),
    ],
)
def test_bad_input_is_one_line(args, code, says, tmp_path):
    line = one_line_error(run_cli(*args, cwd=tmp_path), code)
    assert says in line


def test_missing_default_model_says_what_to_do(tmp_path):
    r = run_cli("generate", env={"CHARTERM_MODEL": str(tmp_path / "gone.safetensors")})
    assert "charterm train" in one_line_error(r, 1)


def test_text_too_small_is_a_usage_error(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("hello world, this is short\n" * 20)
    line = one_line_error(run_cli("train", "--data", p, "--out", tmp_path / "m.safetensors"), 2)
    assert "text too small" in line and "540 chars" in line


def test_preset_notebook_uses_the_notebooks_batch(corpus, tmp_path):
    line = one_line_error(run_cli("train", "--preset", "notebook", "--data", corpus, "--out", tmp_path / "m"), 2)
    assert "--batch-size 128 x --seq-length 100" in line


def test_invalid_utf8_training_text(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine text " * 10 + b"\xc3\x28 more")
    line = one_line_error(run_cli("train", "--data", p, "--out", tmp_path / "m.safetensors"), 1)
    assert "byte offset 100" in line and "--encoding" in line


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli("--debug", "info", "--model", tmp_path / "none.safetensors")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_rich_progress_shows_losses_rate_and_eta(corpus, tmp_path):
    r = run_cli(
        "train",
        "--data",
        corpus,
        "--out",
        tmp_path / "m.safetensors",
        "--hidden",
        "16",
        "--batch-size",
        "4",
        "--seq-length",
        "16",
        "--max-steps",
        "40",
        "--eval-every",
        "20",
        "--progress",
        "rich",
        env={"COLUMNS": "160"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    err = r.stderr
    assert "parameters" in err and "chars/s" in err and "ETA" in err and "loss" in err
    assert "step 20: train" in err and "val" in err and "best val loss" in err


@pytest.mark.slow
def test_an_older_typer_that_pyproject_allows_runs_every_command(tmp_path):
    """pyproject allows typer>=0.15, whose Click is the click package (Typer vendors it from 0.26):
    the CLI must not reach into either's private modules."""
    target = tmp_path / "old"
    old = ["typer==0.15.0", "click==8.1.7"]
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, *old],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install typer 0.15 here: {pip.stderr.strip().splitlines()[-1:]}")
    env = {"PYTHONPATH": str(target)}
    version = subprocess.run(
        [sys.executable, "-c", "import typer; print(typer.__version__)"], env=env, capture_output=True, text=True
    )
    assert version.stdout.strip() == "0.15.0"
    assert "Usage: charterm" in run_cli("--help", env=env).stdout
    assert "No such command" in one_line_error(run_cli("nosuchcommand", env=env), 2)
    assert "--top-k must be" in one_line_error(run_cli("generate", "--top-k", "-1", env=env), 2)
    assert run_cli("stories", "list", env={**env, "CHARTERM_HOME": str(tmp_path / "h")}).returncode == 0

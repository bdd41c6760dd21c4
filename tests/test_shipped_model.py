"""The model in models/ is what `charterm` uses with no flags: it must load, say how it was made, and write."""

import json
import re

import pytest
from conftest import ANNA, ANNA_SHA256, ROOT, needs_anna, run_cli

from charterm.engine.checkpoint import load_model
from charterm.paths import default_model_path

SHIPPED = ROOT / "models" / "anna.safetensors"


def test_default_model_is_the_shipped_one():
    assert default_model_path() == SHIPPED
    assert SHIPPED.stat().st_size <= 16 * 1024 * 1024


def test_metadata_says_how_it_was_made():
    loaded = load_model(SHIPPED)
    info = loaded.info
    made = [info]  # the run that wrote it, then the runs its starting weights came from
    while "parent" in made[-1]:
        made.append(made[-1]["parent"])
    for run in made:
        assert run["data"] == "anna.txt" and run["data_sha256"] == ANNA_SHA256
        assert run["command"].startswith("charterm train")
        for key in ("charterm_version", "epochs", "steps", "wall_time", "machine", "val_loss", "created"):
            assert run.get(key) not in (None, ""), key
    if loaded.dtype != "F32":
        assert info["export"]["dtype"] == loaded.dtype and info["export"]["command"].startswith("charterm export")
    assert len(loaded.vocab) == 83 and loaded.model.config.vocab_size == 83


def test_generates_with_no_flags():
    r = run_cli("generate", "--prime", "Anna", "--chars", "300", "--seed", "1")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("Anna") and len(text) == 304
    words = text.split()
    assert len(words) > 30 and sum(w.strip(".,;!?\"'").isalpha() for w in words) > 0.8 * len(words)


def test_info_with_no_flags():
    card = json.loads(run_cli("info", "--json").stdout)
    assert card["vocab_size"] == 83 and card["path"].endswith("anna.safetensors")


@pytest.mark.slow
@needs_anna
def test_eval_matches_the_recorded_val_loss():
    r = run_cli("eval", "--data", ANNA, "--split", "val", "--json")
    assert r.returncode == 0, r.stderr
    loss = json.loads(r.stdout)["loss"]
    assert abs(loss - load_model(SHIPPED).info["val_loss"]) < 0.002


@needs_anna
def test_it_writes_words_from_the_book_from_the_first_char():
    """Seeds 1-3 from the two README primes, as `charterm generate` does it (the state starts at
    zeros): at least 90% of the words after the prime occur in the book. A model that answers a
    short prime from the zero state with noise fails this."""
    import torch

    from charterm.engine.sampling import CharSampler, Generation, Stepper, run_ids

    book = set(re.findall(r"[a-z]+", open(ANNA, encoding="utf-8").read().lower()))
    loaded = load_model(SHIPPED)
    vocab = loaded.vocab
    for prime in ("Anna", "And Levin said"):
        for seed in (1, 2, 3):
            torch.manual_seed(seed)
            logits, state = run_ids(loaded.model, [vocab.index[c] for c in prime])
            gen = Generation(Stepper(loaded.model, "fp32"), logits, state, CharSampler(5, 1.0, seed, None))
            text = "".join(vocab.chars[i] for _, i in zip(range(300), gen, strict=False))
            words = re.findall(r"[a-z]+", text.lower())
            assert len(words) > 30 and sum(w in book for w in words) >= 0.9 * len(words), (prime, seed, text)

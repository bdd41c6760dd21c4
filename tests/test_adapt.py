"""Dynamic evaluation (`charterm eval --adapt`): each segment is scored before the model learns
from it, the model file is never changed, and a story's own words get easier to predict."""

import json

import pytest
import torch
from conftest import run_cli

from charterm.engine.checkpoint import load_model
from charterm.engine.evaluate import evaluate_adapting

STORY = "velmorth sat by the kandish stove and velmorth said to kandish, the stove is cold. " * 30


def ids_of(loaded, text):
    folded, _ = loaded.vocab.fold(text)
    return loaded.vocab.encode(folded)


def test_one_segment_is_scored_before_any_step_so_it_equals_the_static_loss(tiny_model):
    loaded = load_model(tiny_model)
    ids = ids_of(loaded, STORY[:600])
    adapted, static, n = evaluate_adapting(loaded.model, ids, segment=len(ids), lr=0.01)
    assert n == len(ids) - 1 and adapted == pytest.approx(static, abs=1e-5)


def test_a_zero_step_size_changes_nothing_and_the_model_is_left_as_it_was(tiny_model):
    loaded = load_model(tiny_model)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    ids = ids_of(loaded, STORY[:1500])
    adapted, static, _ = evaluate_adapting(loaded.model, ids, segment=50, lr=0.0)
    assert adapted == pytest.approx(static, abs=1e-5)
    evaluate_adapting(loaded.model, ids, segment=50, lr=0.01)
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in before.items())


def test_eval_adapt_learns_the_story_s_own_names(tiny_model, tmp_path):
    text = tmp_path / "story.txt"
    text.write_text(STORY, encoding="utf-8")
    model_bytes = tiny_model.read_bytes()
    args = ("eval", "--model", tiny_model, "--data", text, "--split", "all", "--adapt")
    r = run_cli(*args, "--adapt-lr", "3e-3", "--json")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no warnings either
    result = json.loads(r.stdout)
    assert set(result) >= {"loss", "static_loss", "bits_per_char", "chars", "adapt_lr", "adapt_segment"}
    assert result["chars"] == len(STORY) - 1 and result["adapt_segment"] == 50
    assert result["loss"] < result["static_loss"] - 0.5, result  # the repeated names are learned
    assert result["bits_per_char"] == pytest.approx(result["loss"] / 0.6931471805599453)
    assert tiny_model.read_bytes() == model_bytes
    human = run_cli(*args)
    assert human.returncode == 0 and "adapting, static" in human.stdout


@pytest.mark.parametrize(
    "options", [["--adapt-segment", "0"], ["--adapt-lr", "-1"], ["--precision", "int8"]], ids=lambda o: o[0]
)
def test_eval_adapt_refuses_options_it_cannot_use_in_one_line(tiny_model, corpus, options):
    r = run_cli("eval", "--model", tiny_model, "--data", corpus, "--adapt", *options)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("charterm: error: --adapt needs") and "Traceback" not in r.stderr

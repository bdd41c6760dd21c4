import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

from charterm import train_events as te
from charterm.config import TrainConfig
from charterm.engine.checkpoint import load_model
from charterm.engine.resume import ResumeState, StopFlag, resume_path_for
from charterm.engine.training import kept_rows, lr_at, run_training
from charterm.errors import CharTermError, UsageError


def cfg_for(corpus, out, **kw):
    return TrainConfig(data=str(corpus), out=str(out), **{**TINY, **kw})


def test_training_learns_and_reports_events(corpus, tmp_path):
    events = []
    out = tmp_path / "m.safetensors"
    result = run_training(cfg_for(corpus, out, eval_every=20), on_event=events.append, command="charterm train x")
    kinds = [e.KIND for e in events]
    first = kinds.index("start")
    assert set(kinds[:first]) <= {"data"} and kinds[-1] == "done"  # data: counting, encoding
    assert {"step", "eval", "checkpoint"} <= set(kinds)
    start = events[first]
    assert start.params > 0 and start.chars == start.train_chars + start.val_chars
    assert start.baseline is None and start.baseline_val_loss is None
    evals = [e.val_loss for e in events if isinstance(e, te.Eval)]
    assert evals[-1] < evals[0] < math.log(start.vocab_size) + 0.5
    loaded = load_model(out)
    assert loaded.info["val_loss"] == pytest.approx(min(evals))
    assert loaded.info["command"] == "charterm train x"
    assert loaded.info["steps"] == result.steps and result.best_val_loss == pytest.approx(min(evals))
    assert not result.interrupted
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_events_are_json_lines(corpus, tmp_path):
    import json

    lines = []
    run_training(
        cfg_for(corpus, tmp_path / "m.safetensors", max_steps=15), on_event=lambda e: lines.append(e.to_json())
    )
    for line in lines:
        obj = json.loads(line)
        assert obj["event"] in {"start", "step", "eval", "checkpoint", "done"} and "time" in obj


def test_the_baseline_is_scored_on_the_runs_validation_text(corpus, tmp_path, tiny_model):
    """`--baseline`: the model in use scored as the run scores itself, in the start and every checkpoint."""
    from charterm.engine.evaluate import evaluate
    from charterm.engine.text import Vocabulary, read_text, split_train_val
    from charterm.engine.training import BASELINE_CHARS

    events = []
    cfg = cfg_for(corpus, tmp_path / "m.safetensors", max_steps=20, eval_every=10)
    run_training(cfg, on_event=events.append, baseline=tiny_model)
    start = next(e for e in events if isinstance(e, te.Start))
    checkpoints = [e for e in events if isinstance(e, te.Checkpoint)]
    assert start.baseline == str(tiny_model) and checkpoints
    assert all(c.baseline_val_loss == start.baseline_val_loss for c in checkpoints)
    assert all(0 < c.compared_val_loss < math.log(60) for c in checkpoints)
    base = load_model(tiny_model)
    text = read_text(corpus)
    vocab = Vocabulary.from_text(text)
    assert vocab == base.vocab  # the tiny model was trained on this text: the same ids, the same windows
    _, val_ids = split_train_val(np.array([vocab.index[c] for c in text]), cfg.val_frac)
    windows = math.ceil(BASELINE_CHARS / (cfg.batch_size * cfg.seq_length))
    expected, _ = evaluate(base.model, val_ids, cfg.batch_size, cfg.seq_length, max_windows=windows)
    assert start.baseline_val_loss == pytest.approx(expected, rel=1e-6)
    assert 0 < start.baseline_val_loss < math.log(len(vocab))


def test_a_baseline_that_is_no_model_file_is_a_one_line_error(corpus, tmp_path):
    from conftest import run_cli

    out = tmp_path / "m.safetensors"
    r = run_cli("train", "--data", corpus, "--out", out, "--max-steps", "2", "--baseline", tmp_path / "none")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"charterm: error: --baseline {tmp_path / 'none'}: no such model file"
    ]
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    r = run_cli("train", "--data", corpus, "--out", out, "--max-steps", "2", "--baseline", junk)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_refuses_to_overwrite_without_force(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(UsageError, match="--force"):
        run_training(cfg_for(corpus, out, max_steps=2))
    assert out.read_bytes() == b"precious"
    run_training(cfg_for(corpus, out, max_steps=2), force=True)
    assert load_model(out).info["steps"] == 2


def _final_weights(out):
    return ResumeState.load(resume_path_for(out))


def test_resume_is_exact(corpus, tmp_path):
    """A run stopped part-way and resumed ends with the same weights as one never stopped."""
    kw = dict(max_steps=40, eval_every=10, dropout=0.2)
    a = tmp_path / "a.safetensors"
    run_training(cfg_for(corpus, a, **kw))
    b = tmp_path / "b.safetensors"
    stop = StopFlag()

    def stop_at_20(e):
        if isinstance(e, te.Eval) and e.step == 20:
            stop.set()

    first = run_training(cfg_for(corpus, b, **kw), on_event=stop_at_20, stop=stop)
    assert first.interrupted and 20 <= first.steps < 40
    second = run_training(cfg_for(corpus, b, **kw), resume=True)
    assert second.steps == 40 and not second.interrupted
    sa, sb = _final_weights(a), _final_weights(b)
    assert sa.step == sb.step == 40
    for k in sa.model:
        assert torch.allclose(sa.model[k], sb.model[k], atol=1e-6), k
    assert sa.best_val == pytest.approx(sb.best_val, abs=1e-6)


def test_resume_rejects_changed_text_and_vocabulary(corpus, tmp_path):
    data = tmp_path / "t.txt"
    data.write_text(corpus.read_text())
    out = tmp_path / "m.safetensors"
    run_training(cfg_for(data, out, max_steps=3))
    data.write_text(corpus.read_text().replace("e", "E", 3))  # same chars, different text
    with pytest.raises(CharTermError, match="changed since the saved run"):
        run_training(cfg_for(data, out, max_steps=6), resume=True)
    data.write_text(corpus.read_text() + "\u00e9\u00e8")
    with pytest.raises(CharTermError, match="new chars: '\u00e8\u00e9'"):
        run_training(cfg_for(data, out, max_steps=6), resume=True)
    with pytest.raises(UsageError, match="--hidden cannot change"):
        run_training(cfg_for(corpus, out, hidden=64), resume=True, explicit={"hidden"})


def test_resume_without_state_is_an_error(corpus, tmp_path):
    with pytest.raises(CharTermError, match="no resume state"):
        run_training(cfg_for(corpus, tmp_path / "none.safetensors"), resume=True)


def test_max_time_stops_and_shapes_the_schedule(corpus, tmp_path):
    events = []
    t0 = time.monotonic()
    run_training(cfg_for(corpus, tmp_path / "m.safetensors", epochs=1000, max_time=2.0), on_event=events.append)
    assert time.monotonic() - t0 < 15
    steps = [e for e in events if isinstance(e, te.Step)]
    assert steps[-1].progress > 0.9
    assert steps[-1].lr < 0.3 * TINY["lr"]  # cosine decayed over the time budget


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 0.01) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(0.1)
    assert lr_at(TrainConfig(lr=0.5, schedule="constant"), 100, 0.9) == 0.5


def test_gru_trains(corpus, tmp_path):
    out = tmp_path / "g.safetensors"
    run_training(cfg_for(corpus, out, cell="gru", max_steps=10))
    assert load_model(out).model.config.cell == "gru"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_saves_and_exits_130(corpus, tmp_path, sig):
    out = tmp_path / "m.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "charterm",
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--hidden",
        "48",
        "--batch-size",
        "8",
        "--seq-length",
        "32",
        "--epochs",
        "500",
        "--progress",
        "jsonl",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    steps = 0
    for line in proc.stdout:
        if '"event": "step"' in line:
            steps += 1
            if steps == 3:
                break
    t0 = time.monotonic()
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - t0 < 10
    assert "resume state saved" in err and "Traceback" not in err
    assert '"reason": "' in rest.splitlines()[-1] and '"event": "done"' in rest.splitlines()[-1]
    state = ResumeState.load(resume_path_for(out))
    assert state.step >= 1
    resumed = subprocess.run(
        cmd + ["--resume", "--max-steps", str(state.step + 5)], capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    assert ResumeState.load(resume_path_for(out)).step == state.step + 5


def test_state_resets_are_random_rows_fixed_by_seed_and_step():
    cfg = TrainConfig(state_reset=0.1, seed=3)
    masks = torch.stack([kept_rows(cfg, step, 64) for step in range(500)])
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert 0.08 < 1 - masks.mean().item() < 0.12  # about one row in ten starts from zeros
    assert torch.equal(kept_rows(cfg, 7, 64), masks[7])  # the same on --resume
    assert not torch.equal(masks[7], masks[8])
    assert kept_rows(TrainConfig(state_reset=0.0), 7, 64).min() == 1
    assert kept_rows(TrainConfig(state_reset=1.0), 7, 64).max() == 0


def test_state_resets_zero_the_rows_the_mask_picks(corpus, tmp_path, monkeypatch):
    from charterm.engine.model import CharModel

    seen = []
    forward = CharModel.forward

    def recording(self, ids, state=None):
        if self.training:
            seen.append(state[0].abs().sum(dim=(0, 2)) > 0)  # which rows came in with a carried state
        return forward(self, ids, state)

    monkeypatch.setattr(CharModel, "forward", recording)
    for p in (0.0, 0.5, 1.0):
        seen.clear()
        cfg = cfg_for(corpus, tmp_path / f"r{p}.safetensors", state_reset=p, max_steps=12, eval_every=1000)
        run_training(cfg)
        assert len(seen) == 12 and not seen[0].any()  # the first window of a run starts from zeros
        for step in range(1, 12):
            assert torch.equal(seen[step], kept_rows(cfg, step, cfg.batch_size).bool()), (p, step)
    assert seen[5].sum() == 0


FIXTURE = Path(__file__).parent / "fixtures" / "resume_v1"  # made by charterm 0.1.0 at commit 4b9f638


def test_a_resume_state_saved_by_the_earlier_release_continues(tmp_path):
    """tests/fixtures/resume_v1: a 12-step run (hidden 16, 1 layer, --eval-every 6) saved by the
    code before training became a Trainer; today's code resumes it where it stopped."""
    import hashlib
    import shutil

    for f in FIXTURE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    before = hashlib.sha256((FIXTURE / "old.resume.pt").read_bytes()).hexdigest()
    saved = ResumeState.load(tmp_path / "old.resume.pt")
    assert (saved.step, saved.epoch, saved.window, saved.world) == (12, 0, 12, 1)
    assert saved.train_config().hidden == 16 and saved.train_config().eval_every == 6
    r = run_cli(
        "train", "--data", tmp_path / "text.txt", "--out", tmp_path / "old.safetensors", "--resume",
        "--max-steps", "20", "--progress", "jsonl",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    start, done = events[0], events[-1]
    assert start["event"] == "start" and start["resumed"] and start["step"] == 12
    assert done["event"] == "done" and done["step"] == 20 and done["reason"] == "finished"
    assert ResumeState.load(tmp_path / "old.resume.pt").step == 20
    assert hashlib.sha256((FIXTURE / "old.resume.pt").read_bytes()).hexdigest() == before


def test_a_resume_state_from_a_newer_charterm_is_refused_and_left_alone(tmp_path, corpus):
    out = tmp_path / "m.safetensors"
    run_training(cfg_for(corpus, out, max_steps=2))
    rpath = resume_path_for(out)
    payload = torch.load(rpath, weights_only=True)
    torch.save({**payload, "format": "charterm-resume/2"}, rpath)
    before = rpath.read_bytes()
    with pytest.raises(CharTermError, match="saved by a newer charterm"):
        ResumeState.load(rpath)
    r = run_cli("train", "--data", corpus, "--out", out, "--resume", "--max-steps", "4")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "newer charterm" in r.stderr and "Traceback" not in r.stderr
    assert rpath.read_bytes() == before

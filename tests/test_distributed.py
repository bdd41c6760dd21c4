"""`torchrun --standalone --nproc_per_node=2 -m charterm train` on CPU: real processes, gloo."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import run_cli

from charterm.config import TrainConfig
from charterm.engine.checkpoint import load_model
from charterm.engine.resume import ResumeState
from charterm.engine.text import windows_in
from charterm.engine.training import run_training

pytestmark = pytest.mark.slow

ARGS = ["--hidden", "32", "--seq-length", "32", "--lr", "0.01", "--warmup-steps", "3", "--eval-every", "1000"]


def torchrun(nproc: int, *args, timeout=240) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "charterm"]
        + ["train", *map(str, args), "--device", "cpu", "--progress", "jsonl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r, events


def test_two_ranks_train_one_model_and_resume(tmp_path, corpus):
    out = tmp_path / "ddp.safetensors"
    r, events = torchrun(2, "--data", corpus, "--out", out, "--batch-size", "4", "--max-steps", "12", *ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1  # only rank 0 reports
    start, done = events[kinds.index("start")], events[-1]
    n_train = start["train_chars"]
    assert start["processes"] == 2 and start["steps_per_epoch"] == windows_in(n_train, 8, 32)  # 2 x 4 rows
    a, b = done["rank_fingerprints"]
    loaded = load_model(out)
    assert a == b == loaded.fingerprint  # both replicas hold the saved weights
    assert loaded.info["steps"] == 12 and "2 processes" in loaded.info["machine"]
    g = run_cli("generate", "--model", out, "--prime", "Anna", "--chars", "200", "--seed", "3")
    assert g.returncode == 0 and len(g.stdout) >= 200

    state = ResumeState.load(out.with_name("ddp.resume.pt"))
    assert state.world == 2 and len(state.hidden) == 2 and len(state.rng) == 2
    assert not torch.equal(state.hidden[0][0], state.hidden[1][0])  # each rank has its own rows

    r, events = torchrun(2, "--data", corpus, "--out", out, "--max-steps", "20", "--resume", *ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed"] and start["step"] == 12
    a, b = events[-1]["rank_fingerprints"]
    assert a == b and events[-1]["step"] == 20

    alone = run_cli("train", "--data", corpus, "--out", out, "--resume", "--max-steps", "30")
    assert alone.returncode == 2 and "--nproc_per_node=2" in alone.stderr and "Traceback" not in alone.stderr


def test_two_ranks_of_four_rows_equal_one_process_of_eight(tmp_path, corpus):
    """Without dropout, DDP's averaged gradients over 2 x 4 rows are the gradients of 8 rows."""
    two = tmp_path / "two.safetensors"
    r, _ = torchrun(2, "--data", corpus, "--out", two, "--batch-size", "4", "--max-steps", "8", *ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    one = tmp_path / "one.safetensors"
    cfg = TrainConfig(
        data=str(corpus),
        out=str(one),
        hidden=32,
        seq_length=32,
        lr=0.01,
        warmup_steps=3,
        eval_every=1000,
        batch_size=8,
        max_steps=8,
        device="cpu",
    )
    run_training(cfg)
    a, b = load_model(two), load_model(one)
    assert a.info["steps"] == b.info["steps"] == 8
    wa, wb = a.model.state_dict(), b.model.state_dict()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=2e-5), k
    assert a.info["val_loss"] == pytest.approx(b.info["val_loss"], abs=1e-4)  # validation reduced over ranks

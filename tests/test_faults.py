"""Fault injection on the real `charterm train` process: SIGKILL at chosen and random moments,
SIGINT/SIGTERM promptness, a text changed under a saved run.

Every child runs with OMP_NUM_THREADS=1 (tiny models train much faster on a busy machine, and
one thread keeps CPU results bit-for-bit reproducible between runs).
"""

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from charterm.config import TrainConfig
from charterm.engine.checkpoint import load_model
from charterm.engine.resume import ResumeState, resume_path_for
from charterm.engine.training import run_training

CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = ["--hidden", "32", "--batch-size", "8", "--seq-length", "32", "--epochs", "50", "--device", "cpu"]
EVENT_TIMEOUT = 40.0  # starting python and importing torch is slow on a busy machine


def train_args(corpus, out, *extra) -> list[str]:
    return ["train", "--data", str(corpus), "--out", str(out), "--progress", "jsonl", *SMALL, *map(str, extra)]


def _forked_train(argv, out_path, err_path):
    """Body of a forked `charterm train`: the CLI's own entry point with stdout/stderr to files."""
    os.environ.update(CHILD_ENV)
    torch.set_num_threads(1)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(f, fd)
        os.close(f)
    from charterm.cli import main

    main(argv)


_SERVER = []


def _forkserver():
    """Children forked from a server that has already imported torch and charterm: a kill-and-resume
    cycle then costs a second, not the ~5-8 s of starting python and torch on a busy machine."""
    if not _SERVER:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "charterm.cli", "charterm.engine.training", "charterm.engine.checkpoint"])
        _SERVER.append(ctx)
    return _SERVER[0]


class Trainer:
    """`charterm train` in a child process: `python -m charterm` (forked=False) or the CLI's main()
    in a child forked from a preloaded server (forked=True). Its JSONL stdout goes to a file that
    wait_for polls, so every wait has a timeout."""

    def __init__(self, args, folder: Path, name: str, forked=False):
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        self.out.touch()
        self.err.touch()
        self.events: list[dict] = []
        self._pos, self._buf = 0, ""
        if forked:
            self.proc = _forkserver().Process(target=_forked_train, args=(list(args), str(self.out), str(self.err)))
            self.proc.start()
        else:
            env = {**os.environ, **CHILD_ENV}
            env.pop("CHARTERM_DEBUG", None)
            with open(self.out, "w") as out, open(self.err, "w") as err:
                self.proc = subprocess.Popen([sys.executable, "-m", "charterm", *args], stdout=out, stderr=err, env=env)

    def returncode(self):
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll()
        return self.proc.exitcode

    def _new_events(self) -> list[dict]:
        with open(self.out) as f:
            f.seek(self._pos)
            chunk = f.read()
            self._pos = f.tell()
        self._buf += chunk
        *lines, self._buf = self._buf.split("\n")
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, pred, timeout=EVENT_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            ended = self.returncode() is not None
            for e in self._new_events():
                self.events.append(e)
                if pred(e):
                    return e
            if ended:
                pytest.fail(f"train ended (exit {self.returncode()}) before the awaited event: {self.stderr()}")
            if time.monotonic() > deadline:
                self.finish(signal.SIGKILL)
                pytest.fail(f"no matching event within {timeout}s; last events: {self.events[-3:]}")
            time.sleep(0.003)

    def finish(self, sig=None, timeout=60.0) -> int:
        if sig is not None and self.returncode() is None:
            os.kill(self.proc.pid, sig)
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.wait(timeout=timeout)
        self.proc.join(timeout)
        assert self.proc.exitcode is not None, "child did not exit"
        return self.proc.exitcode

    def stderr(self) -> str:
        return self.err.read_text()


def is_step(e) -> bool:
    return e["event"] == "step"


def stale_temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_loadable_files_and_a_resumable_run(corpus, tmp_path):
    """One chain of runs over the same --out: (a) killed during a step, (b) killed right after an
    eval event (so during the model/resume writes), then killed at random moments; each
    next run resumes from whatever the kill left. After every kill both files load; at the end a
    resumed run finishes with exit 0."""
    out = tmp_path / "m.safetensors"
    rpath = resume_path_for(out)
    rng = random.Random(20240601)
    plan = ["step", "eval"] + [rng.uniform(0.05, 1.5) for _ in range(4)]
    saved_steps, killed_at, temp_counts, timing = [], [], [], []
    for i, when in enumerate(plan):
        resuming = rpath.exists()
        extra = ["--eval-every", 5, "--resume" if resuming else "--force"]
        t_run = time.monotonic()
        run = Trainer(train_args(corpus, out, *extra), tmp_path, f"run{i}", forked=True)
        start = run.wait_for(lambda e: e["event"] == "start")
        timing.append(round(time.monotonic() - t_run, 1))
        assert start["resumed"] is resuming
        if resuming:
            assert start["step"] == saved_steps[-1]  # it continues from the state the kill left
        if when == "step":  # the next thing the child does is a plain training step
            last = run.wait_for(lambda e: is_step(e) and e["step"] > 5 and e["step"] % 5 in (1, 2))
        elif when == "eval":  # an improved eval: the model save and the resume save follow at once
            last = run.wait_for(lambda e: e["event"] == "eval" and e["improved"])
        else:
            last = run.wait_for(is_step)
            time.sleep(when)
        rc = run.finish(signal.SIGKILL)
        assert rc == -signal.SIGKILL, f"run {i} ended by itself (exit {rc}): {run.stderr()}"
        killed_at.append(last["step"])

        if out.exists():
            loaded = load_model(out)  # never a half-written model file
            assert 0 < loaded.info["steps"] and loaded.info["steps"] % 5 == 0
        assert rpath.exists(), f"no resume state after kill {i}"
        state = ResumeState.load(rpath)  # never a half-written resume state
        assert state.step % 5 == 0 and state.step >= (saved_steps[-1] if saved_steps else 5)
        saved_steps.append(state.step)
        temps = stale_temp_files(tmp_path)
        assert all(t.startswith((".m.safetensors.", ".m.resume.pt.")) for t in temps), temps
        temp_counts.append(len(temps))

    final = run_cli(
        *train_args(corpus, out, "--eval-every", 5, "--resume", "--max-steps", saved_steps[-1] + 10), env=CHILD_ENV
    )
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr
    assert ResumeState.load(rpath).step == saved_steps[-1] + 10
    assert load_model(out).info["steps"] <= saved_steps[-1] + 10
    print(
        f"\nkilled after events at steps {killed_at}; resume states at steps {saved_steps}; "
        f"seconds to the start event {timing}; stale temp files after each kill {temp_counts}; "
        f"after the finishing run: {stale_temp_files(tmp_path)}"
    )


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(corpus, tmp_path):
    """SIGKILL loses the steps since the last saved state; resuming repeats them and ends with the
    very weights (and optimizer state) of a run never stopped. Dropout makes the RNG state matter."""
    n = 200
    common = dict(hidden=32, batch_size=8, seq_length=32, epochs=50, eval_every=10, dropout=0.2, seed=7)
    a = tmp_path / "a.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the children: same kernels, same sums
    try:
        run_training(TrainConfig(data=str(corpus), out=str(a), max_steps=n, device="cpu", **common))
    finally:
        torch.set_num_threads(threads)

    b = tmp_path / "b.safetensors"
    flags = ["--eval-every", 10, "--dropout", 0.2, "--seed", 7, "--max-steps", n]
    run = Trainer(train_args(corpus, b, *flags), tmp_path, "b", forked=True)
    run.wait_for(lambda e: is_step(e) and e["step"] > 10)  # the step-10 eval and its saves are done
    rc = run.finish(signal.SIGKILL)
    assert rc == -signal.SIGKILL, run.stderr()
    killed_state = ResumeState.load(resume_path_for(b))
    assert 10 <= killed_state.step < n

    resumed = run_cli(*train_args(corpus, b, *flags, "--resume"), env=CHILD_ENV)
    assert resumed.returncode == 0, resumed.stderr
    sa, sb = ResumeState.load(resume_path_for(a)), ResumeState.load(resume_path_for(b))
    assert sa.step == sb.step == n
    for k in sa.model:
        assert torch.allclose(sa.model[k], sb.model[k], atol=1e-6), k
    for pid, pa in sa.optimizer["state"].items():
        pb = sb.optimizer["state"][pid]
        assert torch.allclose(pa["exp_avg"], pb["exp_avg"], atol=1e-6) and pa["step"] == pb["step"]
    assert sa.best_val == pytest.approx(sb.best_val, abs=1e-6)
    ma, mb = load_model(a), load_model(b)
    assert ma.info["steps"] == mb.info["steps"]
    wa, wb = ma.model.state_dict(), mb.model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_a_slow_step_promptly(corpus, tmp_path, sig):
    """With steps that take a noticeable time, the signal ends the run after the step in flight and
    one resume-state save: within one step + one save + 2 s slack, with exit status 130."""
    out = tmp_path / "m.safetensors"
    big = ["--hidden", "256", "--batch-size", "32", "--seq-length", "64"]
    run = Trainer(train_args(corpus, out, *big), tmp_path, "run")
    steps = [run.wait_for(is_step) for _ in range(3)]
    t0, sent = time.monotonic(), time.time()
    run.proc.send_signal(sig)
    done = run.wait_for(lambda e: e["event"] == "done", timeout=60)
    rc = run.finish(timeout=60)
    took = time.monotonic() - t0
    err = run.stderr()
    assert rc == 130, err
    assert done["reason"] == ("interrupted" if sig == signal.SIGINT else "terminated")
    assert "resume state saved" in err and "Traceback" not in err

    step_time = (steps[2]["elapsed"] - steps[1]["elapsed"]) / (steps[2]["step"] - steps[1]["step"])
    rpath = resume_path_for(out)
    state = ResumeState.load(rpath)
    assert state.step == done["step"] >= steps[2]["step"]
    probe = tmp_path / "probe.pt"
    s0 = time.monotonic()
    torch.save(state, probe)  # what one resume-state save costs here, now
    with open(probe, "rb+") as f:
        os.fsync(f.fileno())
    save_time = time.monotonic() - s0
    stopped = done["time"] - sent
    budget = step_time + save_time + 2.0
    print(
        f"\n{signal.Signals(sig).name}: done event after {stopped:.2f}s, exit 130 after {took:.2f}s; "
        f"step {step_time:.2f}s, save {save_time:.2f}s"
    )
    # Training stops after the step in flight and one save. The process exit then adds the
    # interpreter's teardown with torch loaded (0.6-1.7 s on a busy machine), hence its extra slack.
    assert stopped <= budget, f"done after {stopped:.2f}s > step {step_time:.2f}s + save {save_time:.2f}s + 2s"
    assert took <= budget + 2.0, f"exit after {took:.2f}s > step {step_time:.2f}s + save {save_time:.2f}s + 4s"


def test_resume_refuses_a_changed_text_in_one_line(corpus, tmp_path):
    data = tmp_path / "t.txt"
    shutil.copy(corpus, data)
    out = tmp_path / "m.safetensors"
    run_training(TrainConfig(data=str(data), out=str(out), hidden=32, batch_size=8, seq_length=32, max_steps=3))
    rpath = resume_path_for(out)
    before = rpath.read_bytes()
    with open(data, "a", encoding="utf-8") as f:
        f.write(corpus.read_text(encoding="utf-8")[0])  # a char the vocabulary already has

    r = run_cli("train", "--data", data, "--out", out, "--resume", "--progress", "none", env=CHILD_ENV)
    assert r.returncode in (1, 2), r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charterm: error:"), r.stderr
    assert "changed since the saved run" in lines[0] and "Traceback" not in r.stderr
    assert rpath.read_bytes() == before  # the saved run is untouched


@pytest.mark.slow
def test_train_cleans_temp_files_left_by_a_killed_run(corpus, tmp_path):
    """What SIGKILL during atomic_path leaves (seen in the kill chain above), planted directly."""
    out = tmp_path / "m.safetensors"
    run_training(TrainConfig(data=str(corpus), out=str(out), hidden=32, batch_size=8, seq_length=32, max_steps=3))
    stale = [tmp_path / ".m.safetensors.k1ll3d00.tmp", tmp_path / ".m.resume.pt.k1ll3d00.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    other = tmp_path / ".notes.txt.k1ll3d00.tmp"  # not ours: must stay
    other.write_bytes(b"x")
    run = Trainer(train_args(corpus, out, "--resume", "--max-steps", 6), tmp_path, "run", forked=True)
    assert run.finish(timeout=120) == 0, run.stderr()
    assert ResumeState.load(resume_path_for(out)).step == 6
    assert other.exists()
    assert stale_temp_files(tmp_path) == [other.name]

import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import ROOT

from charterm import train_events as te
from charterm.errors import UsageError
from charterm.worker.jobs import TrainingJob, parse_train_args

FAKE = [sys.executable, str(Path(__file__).with_name("fake_trainer.py"))]


class Recorder:
    """Collects a job's events (they arrive on its reader thread), as dicts of their fields."""

    def __init__(self):
        self.events: list[dict] = []
        self.received: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, event: te.Event) -> None:
        assert isinstance(event, te.Event)
        with self.lock:
            self.events.append({"event": event.KIND, **asdict(event)})
            self.received.append(time.monotonic())

    def steps(self) -> list[tuple[float, dict]]:
        """(when it arrived, the event) of each step event so far."""
        with self.lock:
            return [(t, e) for t, e in zip(self.received, self.events, strict=True) if e["event"] == "step"]

    def kinds(self) -> list[str]:
        with self.lock:
            return [e["event"] for e in self.events]

    def first(self, kind: str) -> dict:
        return next(e for e in self.events if e["event"] == kind)

    def wait_for(self, kind: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while kind not in self.kinds():
            assert time.monotonic() < deadline, f"no {kind!r} event in {timeout} s; got {self.kinds()}"
            time.sleep(0.01)


def fake_job(*args: str, **kw) -> tuple[TrainingJob, Recorder]:
    rec = Recorder()
    job = TrainingJob(list(args), rec, argv=FAKE, **kw)
    job.start()
    return job, rec


def test_events_arrive_in_order_then_one_exit_event():
    job, rec = fake_job("--steps", "6", "--out", "m.safetensors")
    assert job.wait(20) == 0
    kinds = rec.kinds()
    assert kinds == ["start"] + ["step"] * 6 + ["eval", "checkpoint", "done", "exit"]
    assert [e["step"] for e in rec.events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert rec.first("done")["out"] == "m.safetensors" and rec.first("eval")["improved"] is True
    assert rec.events[-1] == {"event": "exit", "returncode": 0, "stderr": "", "cancelled": False}
    assert not job.running and job.returncode == 0
    time.sleep(0.2)
    assert rec.kinds().count("exit") == 1


def test_non_json_stdout_becomes_a_log_event():
    job, rec = fake_job("--garbage")
    assert job.wait(20) == 0
    assert rec.events[1] == {"event": "log", "message": "this is not JSON {"}
    assert te.parse("[1, 2]") == te.Log(message="[1, 2]")
    assert te.parse('{"event": "step", "step": 3}') == te.Log(message='{"event": "step", "step": 3}')  # fields missing
    step = te.Step(step=3, total_steps=9, epoch=0.3, loss=2.5, lr=0.01, chars_per_sec=10.0, elapsed=1.0, progress=0.3)
    assert te.parse(step.to_json()) == step


def test_failure_carries_stderr_and_the_error_event():
    job, rec = fake_job("--fail")
    assert job.wait(20) == 1
    assert rec.kinds() == ["start", "step", "error", "exit"]
    assert rec.first("error")["message"] == "[b]oops[/b]: the text is too short"
    exit_event = rec.events[-1]
    assert exit_event["returncode"] == 1 and not exit_event["cancelled"]
    assert exit_event["stderr"] == "charterm: error: [b]oops[/b]: the text is too short"


def test_cancel_stops_a_hanging_child_promptly():
    job, rec = fake_job("--hang", "--delay", "0.02")
    rec.wait_for("step")
    assert job.running
    t0 = time.monotonic()
    job.cancel()
    job.cancel()  # a second SIGINT would stop the real trainer without saving: must be a no-op
    assert job.wait(10) == 130
    assert time.monotonic() - t0 < 3
    assert rec.first("done")["reason"] == "interrupted"
    assert rec.kinds().count("exit") == 1 and rec.kinds()[-1] == "exit"
    assert rec.events[-1]["cancelled"] is True and "resume state saved" in rec.events[-1]["stderr"]


def test_cancel_escalates_to_sigkill_when_the_child_ignores_signals():
    job, rec = fake_job("--stubborn", "--delay", "0.02")
    rec.wait_for("step")
    job.cancel(timeout=0.3)
    assert job.wait(10) == -signal.SIGKILL
    assert rec.events[-1]["cancelled"] is True and "done" not in rec.kinds()


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def paused_a_while(job: TrainingJob, rec: Recorder, seconds: float) -> tuple[list, list]:
    """Pause the job once it steps, for `seconds`, then resume it and let it step again; the step
    events (arrival, event) before the pause and those after it."""
    rec.wait_for("step", timeout=30)
    job.pause()
    time.sleep(0.2)  # a step event already in the pipe may still arrive
    before = rec.steps()
    assert job.paused and process_state(job.pid) == "T"  # stopped, not merely slowed
    time.sleep(seconds)
    assert rec.steps() == before  # not one step while paused
    job.resume()
    deadline = time.monotonic() + 30
    while len(rec.steps()) < len(before) + 3:
        assert time.monotonic() < deadline, "no steps after resume"
        time.sleep(0.01)
    return before, rec.steps()[len(before) :]


def test_a_paused_job_makes_no_step_until_resumed_and_its_clock_leaves_the_pause_out():
    job, rec = fake_job("--hang", "--delay", "0.01")
    try:
        before, after = paused_a_while(job, rec, 1.5)
    finally:
        job.cancel()
        job.wait(10)
    assert after[0][1]["step"] == before[-1][1]["step"] + 1  # it goes on where it stopped
    wall = after[0][0] - before[-1][0]
    assert job.paused_seconds >= 1.5 and wall >= 1.5
    assert after[0][1]["elapsed"] - before[-1][1]["elapsed"] < wall - 0.5 * job.paused_seconds
    assert job.returncode == 130 and not job.paused


def test_a_real_training_run_paused_counts_running_time_only(corpus, tmp_path):
    """`charterm train`'s elapsed and chars/s leave out the time the app kept it stopped."""
    args = ["--data", corpus, "--out", tmp_path / "m.safetensors", "--hidden", "32", "--layers", "1"]
    args += ["--batch-size", "8", "--seq-length", "32", "--epochs", "100", "--device", "cpu"]
    rec = Recorder()
    job = TrainingJob(args, rec, cwd=str(ROOT), nice=0)
    job.start()
    try:
        before, after = paused_a_while(job, rec, 2.0)
    finally:
        job.cancel()
        job.wait(30)
    (t0, last), (t1, first) = before[-1], after[0]
    assert first["elapsed"] - last["elapsed"] < (t1 - t0) - 0.5 * job.paused_seconds
    assert first["chars_per_sec"] > 0.5 * last["chars_per_sec"]
    assert job.returncode == 130


def test_child_runs_at_lower_priority_in_its_own_session():
    job, rec = fake_job("--hang")
    try:
        rec.wait_for("step")
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, job.pid) == min(19, ours + 10)
        assert os.getsid(job.pid) == job.pid != os.getsid(0)
        assert os.getpgid(job.pid) == job.pid != os.getpgid(0)
    finally:
        job.cancel()
        job.wait(10)
    assert job.returncode == 130


def test_command_adds_progress_jsonl_once():
    job = TrainingJob(["--epochs", "3"], print)
    assert job.command == [sys.executable, "-m", "charterm", "train", "--epochs", "3", "--progress", "jsonl"]
    assert TrainingJob(["--progress=none"], print).command[-1] == "--progress=none"
    assert TrainingJob(["--progress", "rich"], print).command.count("--progress") == 1
    assert TrainingJob(["--x"], print, argv=["fake"]).command == ["fake", "--x"]
    assert job.pid is None and not job.running and job.wait(0) is None


def test_parse_train_args():
    assert parse_train_args("") == []
    assert parse_train_args('--data "my book.txt"  --epochs 3') == ["--data", "my book.txt", "--epochs", "3"]
    with pytest.raises(UsageError, match="closing quotation") as e:
        parse_train_args('--data "my book.txt')
    assert "\n" not in str(e.value)
    for line in ("--progress rich", "--epochs 2 --progress=none"):
        with pytest.raises(UsageError, match="--progress is set by the app"):
            parse_train_args(line)


def test_real_training_run_cancels_and_saves_its_resume_state(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    rec = Recorder()
    args = ["--data", corpus, "--out", out, "--hidden", "32", "--layers", "1", "--batch-size", "8"]
    args += ["--seq-length", "32", "--epochs", "100", "--device", "cpu"]
    # nice=0: this machine may be busy; the priority itself is tested with the fake trainer
    job = TrainingJob(args, rec, cwd=str(ROOT), nice=0)
    job.start()
    try:
        rec.wait_for("step", timeout=30)
    finally:
        job.cancel()
    assert job.wait(30) == 130, rec.events[-1]
    kinds = rec.kinds()
    assert kinds[0] == "start" and "step" in kinds and kinds[-1] == "exit"
    assert rec.first("start")["out"] == str(out)
    done = rec.first("done")
    assert done["reason"] == "interrupted" and done["resume"] == str(tmp_path / "m.resume.pt")
    assert rec.events[-1]["cancelled"] is True
    assert (tmp_path / "m.resume.pt").exists()

"""Background training as a child process: `charterm train --progress jsonl`, read line by line.

The child gets its own session (a Ctrl+C in the terminal never reaches it; cancel signals its
process group) and a lower CPU priority, so the app that started it stays responsive; `pause`
stops it outright while the model writes, and its clock leaves the stops out (charterm.pauses).
POSIX only. Imports neither textual, typer nor torch.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path

from charterm import pauses
from charterm import train_events as te
from charterm.errors import UsageError

APP_OPTIONS = ("--progress",)  # options the app sets itself; refused in what a person types
STDERR_LINES = 50


def parse_train_args(line: str) -> list[str]:
    """Split what a person typed after `/train` into `charterm train` arguments."""
    try:
        args = shlex.split(line)
    except ValueError as e:
        raise UsageError(f"/train: {str(e).lower()} in {line.strip()!r}") from None
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in APP_OPTIONS:
            raise UsageError(f"/train: {name} is set by the app; leave it out")
    return args


class TrainingJob:
    """Runs `charterm train ARGS --progress jsonl` (or `argv + args`) in the background.

    `on_event` is called on a reader thread with each `charterm.train_events` event, in
    order (a line that is not one is a `Log`), then exactly once with an `Exit` (`returncode`,
    `stderr`: its last lines, `cancelled`); a Textual app should post them as messages.
    `env` adds to (does not replace) os.environ.
    """

    def __init__(
        self,
        args: list[str],
        on_event: Callable[[dict], None],
        *,
        argv: list[str] | None = None,
        cwd: str | None = None,
        env: dict | None = None,
        nice: int = 10,
    ):
        args = [str(a) for a in args]
        if argv is None:
            has_progress = any(a.split("=", 1)[0] == "--progress" for a in args)
            argv = [sys.executable, "-m", "charterm", "train"]
            args += [] if has_progress else ["--progress", "jsonl"]
        self.command = [*argv, *args]
        self.on_event = on_event
        self.cwd = cwd
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self._pauses_file: Path | None = None  # the seconds it has been stopped (charterm.pauses)
        self.nice = nice
        self.cancelled = False
        self.paused_seconds = 0.0  # stopped by `pause` in all, up to the last `resume`
        self._paused_at: float | None = None  # time.monotonic() of the `pause` not yet resumed
        self._pause_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._returncode: int | None = None
        self._finished = threading.Event()

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("a TrainingJob runs once; make a new one")
        fd, pauses_file = tempfile.mkstemp(prefix="charterm-train-pauses-")
        os.close(fd)
        self._pauses_file = Path(pauses_file)
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env={**self.env, pauses.PAUSES_ENV: pauses_file},
            stdin=subprocess.DEVNULL,  # the terminal belongs to the app
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        # Renice from here rather than in a preexec_fn (unsafe in a threaded parent). PRIO_PGRP
        # covers every thread and process in the new group; the child is still starting up.
        try:
            ours = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PGRP, self._proc.pid, min(19, ours + self.nice))
        except OSError:
            pass
        err = threading.Thread(target=self._read_stderr, name="training-stderr", daemon=True)
        err.start()
        threading.Thread(target=self._read_stdout, args=(err,), name="training-stdout", daemon=True).start()

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def _read_stdout(self, err: threading.Thread) -> None:
        for line in self._proc.stdout:
            if line.strip():
                self._emit(te.parse(line.rstrip("\n")))
        err.join()
        self._returncode = self._proc.wait()
        with contextlib.suppress(OSError):
            self._pauses_file.unlink()
        stderr = "\n".join(self._stderr)
        self._emit(te.Exit(returncode=self._returncode, stderr=stderr, cancelled=self.cancelled))
        self._finished.set()

    def _emit(self, event: dict) -> None:
        """A callback that raises is reported once and then skipped: the pipe must keep draining."""
        try:
            self.on_event(event)
        except Exception:
            traceback.print_exc()
            self.on_event = lambda event: None

    def _signal(self, sig: int) -> None:
        if self._proc.poll() is None:  # not yet reaped, so the group id is still ours
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        """Stop the child at once (SIGSTOP to its process group), until `resume`: it makes no step
        meanwhile, and its clock (chars/s, elapsed, --max-time) leaves the stop out."""
        with self._pause_lock:
            if self._paused_at is not None or self.cancelled or not self.running:
                return
            self._paused_at = time.monotonic()
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused child go on, having told its clock how long it was stopped."""
        with self._pause_lock:
            if self._paused_at is None:
                return
            stopped = self.paused_seconds + time.monotonic() - self._paused_at
            with contextlib.suppress(OSError):
                pauses.record(self._pauses_file, stopped)
            self.paused_seconds, self._paused_at = stopped, None
            self._signal(signal.SIGCONT)

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def cancel(self, timeout: float = 30.0) -> None:
        """Ask the child to stop after its current step and save its resume state (SIGINT); if it
        is still running `timeout` s later, SIGTERM, and `timeout` s after that, SIGKILL.
        Returns at once; `wait()` for the end. A second call does nothing (a second SIGINT would
        stop the child at once, without saving). A paused child is resumed first."""
        if self.cancelled or self._proc is None or self._proc.poll() is not None:
            return
        self.cancelled = True  # no pause from here on
        self.resume()
        self._signal(signal.SIGINT)
        threading.Thread(target=self._escalate, args=(timeout,), name="training-cancel", daemon=True).start()

    def _escalate(self, timeout: float) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                self._proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                self._signal(sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the exit event has been delivered; the return code, or None on timeout."""
        self._finished.wait(timeout)
        return self._returncode

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._finished.is_set()

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

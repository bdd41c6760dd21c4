"""A training run's running time, without the pauses the app makes while the model writes.

The app stops a training job it started (SIGSTOP to the job's process group) while the model
writes a turn, and continues it (SIGCONT) when the turn ends, so the two never share the CPU.
Before each SIGCONT it writes the seconds the job has been stopped in all to the file named by
$CHARTERM_TRAIN_PAUSES (`record`); the trainer's `clock()` is `time.monotonic()` less that, so
its chars/s, elapsed time and --max-time count running time only. Without the variable
(`charterm train` from a shell) `clock()` is `time.monotonic()`.
"""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

PAUSES_ENV = "CHARTERM_TRAIN_PAUSES"


def paused() -> float:
    """Seconds this process has been stopped by the app that started it (0 if none)."""
    path = os.environ.get(PAUSES_ENV)
    if not path:
        return 0.0
    try:
        return float(Path(path).read_text(encoding="utf-8") or 0.0)
    except (OSError, ValueError):
        return 0.0


def clock() -> float:
    """time.monotonic(), less the time stopped by the app."""
    return time.monotonic() - paused()


def record(path: Path, seconds: float) -> None:
    """Say the job has been stopped `seconds` in all (a whole file at once, before it runs on)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(repr(seconds), encoding="utf-8")
    os.replace(tmp, path)


def continue_if_orphaned() -> None:
    """Started by the app (the variable is set): if the app dies while this process is stopped, it
    goes on rather than wait for a SIGCONT that will never come (Linux: the parent-death signal)."""
    if not os.environ.get(PAUSES_ENV) or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGCONT), 0, 0, 0)

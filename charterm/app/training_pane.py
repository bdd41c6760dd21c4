"""The app's training side pane: status line, progress bar, speed and losses, a live loss chart.

It draws the `charterm.train_events` a `charterm.worker.jobs.TrainingJob` delivers; call `handle` on the app's thread.
"""

import math
import signal
import time

from textual.app import ComposeResult
from textual.clock import Clock
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static
from textual_plotext import PlotextPlot

from charterm import train_events as te

MAX_POINTS = 500  # train-loss points kept for the chart; halved (every other one) when exceeded
PAUSED = "paused while the model writes"
REDRAW_EVERY = 0.25  # seconds: the chart redraws at most this often, however fast events come


def _loss(x) -> str:
    return f"{x:.3f}" if isinstance(x, int | float) and math.isfinite(x) else "–"


class TrainingPane(Vertical):
    """Draws one training run at a time; `reset()` before the next."""

    DEFAULT_CSS = """
    TrainingPane {
        height: 1fr;
        min-width: 30;
    }
    TrainingPane > #status {
        height: auto;
        min-height: 2;
        text-style: bold;
    }
    TrainingPane > ProgressBar {
        width: 100%;
    }
    TrainingPane > ProgressBar > Bar {
        width: 1fr;
    }
    TrainingPane > #stats {
        height: auto;
        color: $text-muted;
    }
    TrainingPane > PlotextPlot {
        height: 1fr;
        min-height: 8;
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.redraws = 0
        self._redraw_pending = False
        self._clear("idle")

    def _clear(self, status: str) -> None:
        self.status = status
        self.train: list[tuple[int, float]] = []  # (step, loss), thinned to at most MAX_POINTS
        self.val: list[tuple[int, float]] = []
        self._stride, self._seen, self._latest = 1, 0, None
        self.total_steps = self.epochs = self.eval_every = self.step = 0
        self.loss = self.val_loss = self.best_val_loss = self.chars_per_sec = math.nan
        self.error: str | None = None
        self.outcome: str | None = None  # done | cancelled | failed
        self._paused_seconds, self._paused_at = 0.0, None  # the run's stops while the model writes

    def compose(self) -> ComposeResult:
        yield Static(self.status, id="status", markup=False)
        yield ProgressBar(total=1, id="progress", clock=Clock(get_time=self._running_time))  # ETA: running time
        yield Static(self._stats(), id="stats", markup=False)
        yield PlotextPlot(id="chart")

    def reset(self, *, starting: bool = False) -> None:
        """Forget the last run; `starting=True` while a new child process starts up."""
        self._clear("starting…" if starting else "idle")
        self.query_one(ProgressBar).update(total=None, progress=0)  # also resets its ETA
        if not starting:
            self.query_one(ProgressBar).update(total=1)
        self._show()
        self._schedule_redraw()

    def pause(self) -> None:
        """The run is stopped while the model writes: say so, and stop its ETA's clock."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self._show()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_seconds += time.monotonic() - self._paused_at
            self._paused_at = None
            self._show()

    def _running_time(self) -> float:
        now = time.monotonic()
        return now - self._paused_seconds - (now - self._paused_at if self._paused_at is not None else 0.0)

    def handle(self, event: te.Event) -> None:
        """Draw one event; kinds it does not draw are ignored, bad values never raise."""
        handler = getattr(self, f"_on_{event.KIND}", None)
        if handler is None:
            return
        try:
            handler(event)
        except (TypeError, ValueError):
            return
        self._show()

    # --- events --------------------------------------------------------------------------------

    def _on_start(self, e: te.Start) -> None:
        self.total_steps, self.epochs, self.step = int(e.total_steps), int(e.epochs), int(e.step)
        self.eval_every = int((e.config or {}).get("eval_every", 0))
        bar = self.query_one(ProgressBar)
        bar.update(total=None)
        bar.update(total=self.total_steps, progress=self.step)
        self.status = f"starting: {e.params:,} parameters on {e.device or '?'}"

    def _on_step(self, e: te.Step) -> None:
        self.step, self.loss = int(e.step), float(e.loss)
        self.total_steps = int(e.total_steps or self.total_steps)
        self.chars_per_sec = float(e.chars_per_sec)
        # --max-time runs report progress by time: show whichever is further
        self.query_one(ProgressBar).update(
            total=self.total_steps, progress=max(self.step, float(e.progress) * self.total_steps)
        )
        self._add_train_point(self.step, self.loss)
        if self.step >= self.total_steps or (self.eval_every and self.step % self.eval_every == 0):
            self.status = f"evaluating at step {self.step}"
        else:
            self.status = self._training_status(float(e.epoch))

    def _on_eval(self, e: te.Eval) -> None:
        self.val_loss, self.best_val_loss = float(e.val_loss), float(e.best_val_loss)
        if math.isfinite(self.val_loss):
            self.val.append((int(e.step), self.val_loss))
        self.status = self._training_status(float(e.epoch))
        self._schedule_redraw()

    def _on_done(self, e: te.Done) -> None:
        self.step = int(e.step)
        self.best_val_loss = float(e.best_val_loss)
        if e.reason == "finished":
            self.outcome = "done"
            self.status = f"done: best val {_loss(self.best_val_loss)} at {e.out}"
            self.query_one(ProgressBar).update(progress=self.total_steps)
        else:
            self.outcome = "cancelled"
            self.status = f"cancelled at step {self.step}; resume state saved"

    def _on_error(self, e: te.Error) -> None:
        self.error = str(e.message or "unknown error")
        self.outcome = "failed"
        self.status = f"failed: {self.error}"

    def _on_exit(self, e: te.Exit) -> None:
        rc = e.returncode
        if rc == 0:
            if self.outcome is None:
                self.status = "exited without a result"
        elif rc == 130 or e.cancelled:
            if self.outcome != "cancelled":
                self.outcome, self.status = "cancelled", "cancelled"
        elif self.outcome != "failed":
            lines = [line for line in str(e.stderr or "").splitlines() if line.strip()]
            self.outcome = "failed"
            self.status = f"failed: {lines[-1] if lines else self._describe_exit(rc)}"

    @staticmethod
    def _describe_exit(rc) -> str:
        if isinstance(rc, int) and rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                pass
        return f"exit status {rc}"

    # --- drawing -------------------------------------------------------------------------------

    def _training_status(self, epoch: float) -> str:
        shown = min(int(epoch) + 1, self.epochs) if self.epochs else int(epoch) + 1
        return f"training epoch {shown}/{self.epochs} step {self.step}/{self.total_steps}"

    def _stats(self) -> str:
        speed = f"{self.chars_per_sec:,.0f}" if math.isfinite(self.chars_per_sec) else "–"
        return f"{speed} chars/s  loss {_loss(self.loss)}\nval {_loss(self.val_loss)}  best {_loss(self.best_val_loss)}"

    def _show(self) -> None:
        paused = self._paused_at is not None and self.outcome is None
        self.query_one("#status", Static).update(PAUSED if paused else self.status)
        self.query_one("#stats", Static).update(self._stats())

    def _add_train_point(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self._latest = (step, loss)
        self._seen += 1
        if (self._seen - 1) % self._stride == 0:
            self.train.append(self._latest)
            if len(self.train) > MAX_POINTS:
                del self.train[1::2]
                self._stride *= 2
        self._schedule_redraw()

    def _schedule_redraw(self) -> None:
        if not self._redraw_pending:
            self._redraw_pending = True
            self.set_timer(REDRAW_EVERY, self._redraw)

    def _redraw(self) -> None:
        self._redraw_pending = False
        self.redraws += 1
        chart = self.query_one(PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        train = self.train + ([self._latest] if self._latest and self._latest != self.train[-1] else [])
        if train:
            plt.plot([s for s, _ in train], [v for _, v in train], marker="braille", label="train")
        if self.val:
            plt.plot([s for s, _ in self.val], [v for _, v in self.val], marker="dot", label="val")
        chart.refresh()

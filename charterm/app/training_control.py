"""The app's side of a training job: start it (`/train`, Ctrl+T), follow its events into the
training pane, and offer the model it writes only when it beats the one in use."""

import os
import threading
from pathlib import Path

from textual.message import Message

from charterm import train_events as te
from charterm.app.training_pane import TrainingPane
from charterm.errors import CharTermError


class TrainingUpdate(Message):
    def __init__(self, event: te.Event) -> None:
        super().__init__()
        self.event = event


class TrainingControl:
    """The training methods and actions of `CharTermApp` (a mixin: `self` is the app)."""

    def _start_training(self, arg: str) -> None:
        from charterm.app.commands import option_value
        from charterm.paths import DEFAULT_TEXT, new_run_path
        from charterm.worker.jobs import TrainingJob, parse_train_args

        if self.job is not None:
            raise CharTermError("training is already running; /cancel stops it")
        args = parse_train_args(arg)
        data = option_value(args, "--data")
        if data is None:
            data = self._training_text()
            args += ["--data", data] if data else []  # else `charterm train` downloads the book, as typed
        if option_value(args, "--out") is None and "--resume" not in args:
            args += ["--out", str(new_run_path(Path(data or DEFAULT_TEXT).stem))]
        if option_value(args, "--baseline") is None and self.card and self.card.get("path"):
            args += ["--baseline", self.card["path"]]
        self.trained_path = self.trained_score = self.in_use_score = None
        self.query_one(TrainingPane).reset(starting=True)
        # the model writes first: training gets the lowest priority and leaves one core to the worker and the UI
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 2) - 1))
        self.job = TrainingJob(
            args, lambda ev: self.post_message(TrainingUpdate(ev)), nice=19, env={"OMP_NUM_THREADS": threads}
        )
        self.job.start()
        self.notify("training started in the background (Ctrl+T or /cancel stops it)")

    def _training_text(self) -> str | None:
        """The model's own training text if it is here; else the book as `charterm train` finds it
        (None: nowhere yet, and the run downloads it). A model of another text that is gone: an error."""
        from charterm.paths import DEFAULT_TEXT, default_text

        data = (self.card or {}).get("train_text")
        if data and Path(data).is_file():
            return data
        if data and Path(data).name != DEFAULT_TEXT:
            raise CharTermError(f"no training text found at {data} (what this model learned from): /train --data PATH")
        found = default_text()
        return str(found) if found else None

    def _pause_training(self) -> None:
        """A turn is being written: training stops until it ends, so the two never share the CPU."""
        if self.job is not None and self.job.running and not self.job.paused:
            self.job.pause()
            self.query_one(TrainingPane).pause()

    def _resume_training(self) -> None:
        if self.job is not None and self.job.paused:
            self.job.resume()
            self.query_one(TrainingPane).resume()

    def _training_update(self, ev: te.Event) -> None:
        self.query_one(TrainingPane).handle(ev)
        if isinstance(ev, te.Start):
            self.in_use_score = ev.baseline_val_loss
        elif isinstance(ev, te.Checkpoint):
            self._checkpoint(ev)
        elif isinstance(ev, te.Exit):
            self.job = None
            self.query_one(TrainingPane).resume()

    def _checkpoint(self, ev: te.Checkpoint) -> None:
        """A model training wrote: offered only if it beats the model in use on the same text."""
        name = self.card["name"] if self.card else "the model in use"
        mine = ev.compared_val_loss if ev.compared_val_loss is not None else ev.val_loss
        if self.in_use_score is None:
            self.notify(
                f"training saved a model (val {ev.val_loss:.4f}); {name} was not scored on its text, "
                f"so it is not offered: /model {ev.path} to try it",
                timeout=8,
                markup=False,
            )
            return
        if not mine < self.in_use_score:
            self.notify(
                f"training saved a model with val {mine:.4f}, not better than {name} "
                f"({self.in_use_score:.4f} on the same text); keeping {name}",
                timeout=8,
                markup=False,
            )
            return
        self.trained_path, self.trained_score = ev.path, mine
        if self.follow:
            self.action_load_trained()
        else:
            self.notify(
                f"training wrote a better model: val {mine:.4f} against {self.in_use_score:.4f} "
                f"for {name} on the same text; Ctrl+L or /load to switch to it",
                timeout=8,
                markup=False,
            )

    def action_train(self) -> None:
        if self.job is not None:
            self.action_cancel_training()
            return
        try:
            self._start_training("")
        except CharTermError as e:
            self.notify(str(e), severity="error", markup=False)
            self.query_one(TrainingPane).handle(te.Error(message=str(e)))

    def action_cancel_training(self) -> None:
        if self.job is None:
            self.notify("no training is running")
            return
        threading.Thread(target=self.job.cancel, daemon=True).start()
        self.notify("stopping training; it saves a resume state")

    def action_load_trained(self) -> None:
        if not self.trained_path:
            self.notify("training has not written a model better than the one in use yet")
            return
        self._switch_model(self.trained_path)
        self.in_use_score = self.trained_score

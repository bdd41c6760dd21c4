"""How `charterm train` shows its progress: JSON lines, a rich bar, or a few lines on stderr."""

import sys

from charterm import train_events as te


class JsonlTrainView:
    """One JSON object per line on stdout, flushed: the app's child-process protocol."""

    def __call__(self, event: te.Event) -> None:
        print(event.to_json(), flush=True)

    def close(self) -> None:
        pass


def start_line(ev: te.Start) -> str:
    c = ev.config
    line = (
        f"charterm: {c['cell']} {c['hidden']}x{c['layers']}, {ev.params:,} parameters; text {ev.chars:,} chars "
        f"({ev.train_chars:,} train / {ev.val_chars:,} val), vocabulary {ev.vocab_size}; device {ev.device}"
    )
    line += f" x {ev.processes} processes" if ev.processes > 1 else ""
    line += f"; resuming at step {ev.step}" if ev.resumed else ""
    if ev.baseline:
        score = f"{ev.baseline_val_loss:.4f}" if ev.baseline_val_loss is not None else "not scored"
        line += f"; baseline {ev.baseline}: val {score}"
    return line + f"; the model goes to {ev.out}"


def done_line(ev: te.Done) -> str:
    return f"charterm: best val loss {ev.best_val_loss:.4f} at {ev.out} ({ev.step} steps, {ev.elapsed:.0f} s)"


class QuietTrainView:
    def __call__(self, event: te.Event) -> None:
        if isinstance(event, te.Start):
            print(start_line(event), file=sys.stderr, flush=True)
        elif isinstance(event, te.Data):
            print(f"charterm: {event.message}", file=sys.stderr, flush=True)
        elif isinstance(event, te.Done):
            print(done_line(event), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class RichTrainView:
    """A progress bar with epoch, step, losses, chars/s and ETA; evaluations print above it."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.epochs = 0
        self.val = float("nan")

    def __call__(self, event: te.Event) -> None:
        if isinstance(event, te.Start):
            print(start_line(event), file=sys.stderr, flush=True)
            self.epochs = event.epochs
            self.progress.start()
            self.task = self.progress.add_task("starting", total=1000, stats="")
        elif isinstance(event, te.Step):
            self.progress.update(
                self.task,
                completed=int(1000 * event.progress),
                description=f"epoch {event.epoch:.2f}/{self.epochs} step {event.step}",
                stats=f"loss {event.loss:.3f} val {self.val:.3f} {event.chars_per_sec:,.0f} chars/s",
            )
        elif isinstance(event, te.Data):
            self.progress.console.print(f"charterm: {event.message}", highlight=False)
        elif isinstance(event, te.Eval):
            self.val = event.val_loss
            mark = " (best)" if event.improved else ""
            self.progress.console.print(
                f"step {event.step}: train {event.train_loss:.4f}  val {event.val_loss:.4f}{mark}", highlight=False
            )
        elif isinstance(event, te.Done):
            self.close()
            print(done_line(event), file=sys.stderr)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None

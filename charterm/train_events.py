"""Every event of a training run, the one definition of its name and fields.

`charterm train --progress jsonl` writes one per line (`to_json`); the job runner reads them
back (`parse`), the CLI's renderers and the app's side pane draw them, the tests' fake trainer
writes them, and the table in docs/training-events.md is checked against `table()`. No torch, no Textual.
"""

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar


@dataclass(frozen=True)
class Event:
    KIND: ClassVar[str] = ""
    ABOUT: ClassVar[str] = ""

    def to_json(self) -> str:
        return json.dumps({"event": self.KIND, "time": round(time.time(), 3), **asdict(self)})


KINDS: dict[str, type[Event]] = {}


def event(cls):
    cls = dataclass(frozen=True)(cls)
    KINDS[cls.KIND] = cls
    return cls


@event
class Data(Event):
    KIND: ClassVar[str] = "data"
    ABOUT: ClassVar[str] = (
        "a text of 16 MB or more is being counted or encoded (before `start`); "
        "or what folding onto an `--init-from` vocabulary changed"
    )
    message: str


@event
class Start(Event):
    KIND: ClassVar[str] = "start"
    ABOUT: ClassVar[str] = (
        "`step` is non-zero when resumed, `processes` is 1 or torchrun's world size, `config` has every "
        "hyperparameter; `baseline_val_loss` is the `--baseline` model scored on 50,000 chars of the run's "
        "validation text, the first windows of its rows (null without one, or when too little of the text is "
        "left in its vocabulary)"
    )
    params: int
    chars: int
    train_chars: int
    val_chars: int
    vocab_size: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    step: int
    resumed: bool
    device: str
    processes: int
    out: str
    max_time: float
    config: dict
    baseline: str | None = None
    baseline_val_loss: float | None = None


@event
class Step(Event):
    KIND: ClassVar[str] = "step"
    ABOUT: ClassVar[str] = (
        "`epoch` is fractional, `elapsed` in seconds, `progress` 0..1 by steps or by `--max-time`, "
        "whichever is further; at most about 10 per second"
    )
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    chars_per_sec: float
    elapsed: float
    progress: float


@event
class Eval(Event):
    KIND: ClassVar[str] = "eval"
    ABOUT: ClassVar[str] = "`seconds` the pass took"
    step: int
    epoch: float
    val_loss: float
    train_loss: float
    best_val_loss: float
    improved: bool
    seconds: float


@event
class Checkpoint(Event):
    KIND: ClassVar[str] = "checkpoint"
    ABOUT: ClassVar[str] = (
        "a model with a better validation loss than the run's earlier ones was written to `path`; with "
        "`--baseline`, `compared_val_loss` is this model on the chars the baseline was scored on"
    )
    step: int
    val_loss: float
    path: str
    baseline_val_loss: float | None = None
    compared_val_loss: float | None = None


@event
class Done(Event):
    KIND: ClassVar[str] = "done"
    ABOUT: ClassVar[str] = (
        "`reason` is `finished`, `interrupted` or `terminated`; under torchrun `rank_fingerprints` "
        "has each rank's weights (all equal), else it is empty"
    )
    step: int
    epoch: float
    best_val_loss: float
    reason: str
    elapsed: float
    out: str
    resume: str
    rank_fingerprints: list = field(default_factory=list)


@event
class Error(Event):
    KIND: ClassVar[str] = "error"
    ABOUT: ClassVar[str] = "training could not start or go on; the same line goes to stderr"
    message: str


@event
class Log(Event):
    """Not written by training: a stdout line of the child that is not an event."""

    KIND: ClassVar[str] = "log"
    ABOUT: ClassVar[str] = ""
    message: str


@event
class Exit(Event):
    """Not written by training: the job runner's last event, when the child has ended."""

    KIND: ClassVar[str] = "exit"
    ABOUT: ClassVar[str] = ""
    returncode: int | None
    stderr: str
    cancelled: bool


WRITTEN_BY_TRAINING = (Data, Start, Step, Eval, Checkpoint, Done, Error)


def parse(line_or_obj) -> Event:
    """An event from a JSON line (or its dict); anything else is a `Log` of the line. Never raises."""
    obj = line_or_obj
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError:
            return Log(message=line_or_obj)
    cls = KINDS.get(obj.get("event")) if isinstance(obj, dict) and isinstance(obj.get("event"), str) else None
    if cls is None:
        return Log(message=line_or_obj if isinstance(line_or_obj, str) else json.dumps(line_or_obj, default=str))
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in obj.items() if k in names})
    except TypeError:
        return Log(message=str(line_or_obj))


def table() -> str:
    """The table (docs/training-events.md) of the events training writes."""
    rows = ["| event | fields | what it says |", "|---|---|---|"]
    for cls in WRITTEN_BY_TRAINING:
        names = ", ".join(f"`{f.name}`" for f in fields(cls))
        rows.append(f"| `{cls.KIND}` | {names} | {cls.ABOUT} |")
    return "\n".join(rows) + "\n"

"""How a run stops and goes on: `StopFlag` (a signal ends training at the next step) and
`ResumeState`, the one versioned resume format, written atomically and read with
`weights_only=True`."""

import signal
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from charterm.config import TrainConfig
from charterm.errors import CharTermError
from charterm.files import atomic_path

RESUME_FORMAT, RESUME_VERSION = "charterm-resume", 1  # saved as "charterm-resume/1"


def resume_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".resume.pt")


@dataclass
class ResumeState:
    """Everything a run needs to go on exactly where it stopped: the one resume format, written
    by `save` and read by `load`. Under torchrun, `hidden` and `rng` hold one entry per rank."""

    config: dict
    model: dict
    optimizer: dict
    step: int
    epoch: int
    window: int
    elapsed: float
    best_val: float
    vocab: list[str]
    data_sha256: str
    hidden: tuple | list | None = None
    rng: torch.Tensor | list | None = None
    cuda_rng: torch.Tensor | None = None
    world: int = 1
    unknown: str | None = None
    parent: dict | None = None

    def save(self, path: Path) -> None:
        payload = {"format": f"{RESUME_FORMAT}/{RESUME_VERSION}"}
        payload.update((f.name, getattr(self, f.name)) for f in fields(self))
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: Path) -> "ResumeState":
        if not path.exists():
            raise CharTermError(f"no resume state at {path}; train without --resume to start a new run")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CharTermError(f"{path}: unreadable resume state ({str(e).splitlines()[0][:200]})") from None
        name, _, version = str(payload.get("format", "") if isinstance(payload, dict) else "").rpartition("/")
        if name != RESUME_FORMAT or not version.isdigit():
            raise CharTermError(f"{path} is not a charterm resume state")
        if int(version) > RESUME_VERSION:
            raise CharTermError(f"{path} was saved by a newer charterm (resume format {version}); upgrade to resume it")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{"state_reset": 0.0, **self.config})  # runs saved before state_reset existed

    def for_rank(self, rank: int) -> tuple[tuple | None, torch.Tensor]:
        """This rank's carried state and CPU random state."""
        if self.world == 1:
            return self.hidden, self.rng
        return self.hidden[rank], self.rng[rank]


class StopFlag:
    """Set by a signal handler (or a front-end) to end training at the next step boundary."""

    def __init__(self):
        self.reason = ""

    def set(self, reason: str = "interrupted") -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return bool(self.reason)

    @classmethod
    def on_signals(cls, *signums: int) -> "StopFlag":
        """A flag the first of these signals sets ("interrupted" for SIGINT, else "terminated");
        a second signal acts as it would have without the flag (stops at once)."""
        flag, previous = cls(), {}

        def handle(signum, frame):
            flag.set("interrupted" if signum == signal.SIGINT else "terminated")
            for s, h in previous.items():
                signal.signal(s, h)

        for s in signums:
            previous[s] = signal.signal(s, handle)
        return flag

"""Every hyperparameter in one place: the defaults, and the notebook's settings as a preset.

The defaults are the settings that learned fastest per CPU-second on anna.txt (see docs/training.md's
recipe table); `--preset notebook` gives the teaching notebook's exact configuration.
"""

from dataclasses import asdict, dataclass, fields

from charterm.errors import UsageError


@dataclass(kw_only=True)
class Architecture:
    """The network's shape and regularisers: the fields a model file and a training run share."""

    cell: str = "lstm"  # lstm | gru
    embed: int = 0  # embedding width; 0 = the vocabulary size (the notebook's one-hot, as a lookup)
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.0
    weight_drop: float = 0.0  # DropConnect on the recurrent (hidden-to-hidden) weights, training only

    def architecture(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(Architecture)}


@dataclass
class ModelConfig(Architecture):
    vocab_size: int

    def __post_init__(self) -> None:
        if self.embed == 0:
            self.embed = self.vocab_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig(Architecture):
    data: str = ""  # a file, or a folder of .txt files; "" = the default text (charterm.paths.default_text)
    encoding: str = "utf-8"
    separator: str = "\n\n"  # between the files of a folder
    max_vocab: int = 0  # 0 = every char of the text; else the N most frequent plus an unknown-char token
    out: str = ""  # "" = a new file in the data dir's models/ (charterm.paths.training_out)
    init_from: str = ""  # a model file to start from (its architecture and vocabulary); "" = random weights
    # optimisation
    epochs: int = 20
    batch_size: int = 16
    seq_length: int = 100
    lr: float = 5e-3
    schedule: str = "cosine"  # cosine (warm-up, then cosine decay to min_lr_frac * lr) | constant
    warmup_steps: int = 100
    min_lr_frac: float = 0.01
    clip: float = 5.0
    # chance, per row and window, that the carried state is zeroed: the model also learns to start
    # from nothing, as a new story or `generate` does (without it the first chars after a short
    # prime can be noise: the zero state is otherwise seen once per row per epoch)
    state_reset: float = 0.02
    # bookkeeping
    val_frac: float = 0.1
    eval_every: int = 0  # steps between validation passes; 0 = automatic (about 5% of the time)
    eval_chars: int = 2_000_000  # validation chars scored per pass (all rows, first windows); 0 = all
    max_steps: int = 0  # 0 = no limit
    max_time: float = 0.0  # seconds of training; 0 = no limit. Shapes the schedule when set.
    seed: int = 1337
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Refuse values no run can use, in one line naming the option (wherever training starts)."""
        for name in ("epochs", "hidden", "layers", "batch_size", "seq_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"{_option(name)} must be at least 1 (got {getattr(self, name)})")
        for name, lo, hi, closed in (
            ("dropout", 0, 1, False), ("weight_drop", 0, 1, False), ("state_reset", 0, 1, True),
            ("min_lr_frac", 0, 1, True),
        ):  # fmt: skip
            v = getattr(self, name)
            if not (lo <= v <= hi if closed else lo <= v < hi):
                raise UsageError(f"{_option(name)} must be in [{lo}, {hi}{']' if closed else ')'} (got {v})")
        if not 0 < self.val_frac < 1:
            raise UsageError(f"--val-frac must be between 0 and 1, exclusive (got {self.val_frac})")
        if self.lr <= 0 or self.clip <= 0:
            raise UsageError("--lr and --clip must be positive")
        for name in ("eval_every", "max_steps", "max_time", "embed", "warmup_steps", "eval_chars"):
            if getattr(self, name) < 0:
                raise UsageError(f"{_option(name)} cannot be negative (got {getattr(self, name)})")
        choices = {"cell": ("lstm", "gru"), "schedule": ("cosine", "constant")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{_option(name)} must be {' or '.join(allowed)} (got {getattr(self, name)!r})")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu, cuda or mps (got {self.device!r})")
        if self.max_vocab < 0 or self.max_vocab == 1:
            raise UsageError(f"--max-vocab must be 0 (all chars) or at least 2 (got {self.max_vocab})")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


PRESETS: dict[str, dict] = {
    "notebook": dict(
        hidden=512,
        layers=2,
        dropout=0.5,
        lr=1e-3,
        batch_size=128,
        seq_length=100,
        schedule="constant",
        warmup_steps=0,
        clip=5.0,
        embed=0,
        state_reset=0.0,
    ),
}


def train_config(given: dict, preset: str | None = None) -> TrainConfig:
    """A run's settings: the defaults, then the named preset, then the options given; checked."""
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown --preset {preset!r}; choose from: {', '.join(PRESETS)}")
    cfg = TrainConfig(**{**PRESETS.get(preset, {}), **given})
    cfg.check()
    return cfg


# Dynamic evaluation (`charterm eval --adapt`): the text is read in segments of ADAPT_SEGMENT
# chars; each is scored, then the model takes one Adam step (beta1 = 0) of ADAPT_LR on it.
ADAPT_LR = 3e-4
ADAPT_SEGMENT = 50
# A story learns the person's turns (charterm.story.learning) faster: a story is short and has names of
# its own. benchmarks/adapt_story.py: on a simulated story of the book's text, which the model
# knows, 1e-3 still gains (+0.007 nats/char; 5e-4: +0.014, 2e-3: -0.037), and a renamed character
# is learned twice as fast as with 5e-4 (0.20 against 0.44 nats/char on the rest of the name).
STORY_ADAPT_LR = 1e-3

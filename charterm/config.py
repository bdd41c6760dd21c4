"""Every hyperparameter in one place: the defaults, and the notebook's settings as a preset.

The defaults are the settings that learned fastest per CPU-second on anna.txt (see the README's
recipe table); `--preset notebook` gives the teaching notebook's exact configuration.
"""

from dataclasses import asdict, dataclass, fields


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"  # lstm | gru
    embed: int = 0  # embedding width; 0 = the vocabulary size (the notebook's one-hot, as a lookup)
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.0
    weight_drop: float = 0.0  # DropConnect on the recurrent (hidden-to-hidden) weights, training only

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
class TrainConfig:
    data: str = "data/anna.txt"  # a file, or a folder of .txt files
    encoding: str = "utf-8"
    separator: str = "\n\n"  # between the files of a folder
    max_vocab: int = 0  # 0 = every char of the text; else the N most frequent plus an unknown-char token
    out: str = ""  # "" = models/<data stem>.safetensors
    init_from: str = ""  # a model file to start from (its architecture and vocabulary); "" = random weights
    # model
    cell: str = "lstm"
    embed: int = 0
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.0
    weight_drop: float = 0.0
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

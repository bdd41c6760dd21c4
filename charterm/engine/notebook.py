"""Importing the teaching notebook's checkpoints (`rnn_20_epoch.net` and the like).

The notebook saves `torch.save({'n_hidden', 'n_layers', 'state_dict', 'tokens'})`, where `tokens`
is its `tuple(set(text))` (a different char order in every run) and the state dict holds one
`nn.LSTM` (one-hot input) and the `fc` read-out. The file is read with `weights_only=True`, so a
pickle that would run code is refused unread; every key, shape, dtype and value is checked against
the notebook's CharRNN before anything is written. The weights are then permuted onto charterm's
sorted vocabulary, so the imported model computes exactly the notebook's function.
"""

import hashlib
import io
import math
import pickle
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from charterm import __version__
from charterm.config import ModelConfig
from charterm.engine.checkpoint import LoadedModel, load_model, save_model
from charterm.engine.model import CharModel
from charterm.engine.text import Vocabulary
from charterm.errors import CharTermError, UsageError

FORMAT_NOTE = "imported from the notebook's format"
REQUIRED = ("n_hidden", "n_layers", "state_dict", "tokens")
OPTIONAL = ("drop_prob", "lr")  # CharRNN's other constructor arguments, kept by some copies of the notebook
DEFAULT_DROPOUT = 0.5  # CharRNN's default drop_prob (the notebook's checkpoint does not save it)
MAX_BYTES = 4 << 30
MAX_VOCAB = 1 << 14  # what a charterm model file may hold (embedding as wide as the vocabulary)
MAX_HIDDEN, MAX_LAYERS = 1 << 14, 64
GATES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass
class NotebookCheckpoint:
    """A checked notebook checkpoint: the weights (float32) are those of its CharRNN."""

    tokens: tuple[str, ...]
    n_hidden: int
    n_layers: int
    dropout: float
    state: dict[str, torch.Tensor]


def import_notebook(path, out, force: bool = False, command: str = "") -> LoadedModel:
    """Check the notebook checkpoint at `path` and write it as a charterm model file at `out`
    (atomically; nothing is written on any error). Returns the written model, loaded back."""
    path, out = Path(path), Path(out)
    _check_out(path, out, force)
    data = _read_bytes(path)
    ckpt = parse_checkpoint(_torch_load(path, data), path)
    model, vocab = to_charmodel(ckpt)
    info = {
        "import": {"source": path.name, "source_sha256": hashlib.sha256(data).hexdigest(), "format": FORMAT_NOTE},
        "command": command,
        "charterm_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    save_model(out, model, vocab, info)
    return load_model(out)


def _check_out(path: Path, out: Path, force: bool) -> None:
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; pass a file name")
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise UsageError(f"--out {out} is the notebook checkpoint itself; pass another file name")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise CharTermError(f"{path}: no such file")
    if path.is_dir():
        raise CharTermError(f"{path} is a directory, not a notebook checkpoint")
    if path.stat().st_size > MAX_BYTES:
        raise CharTermError(f"{path} is larger than {MAX_BYTES >> 30} GiB; not a notebook checkpoint")
    return path.read_bytes()


def _torch_load(path: Path, data: bytes):
    """torch.load with weights_only=True on CPU: tensors, numbers, strings and containers only."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not worth a second line
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        pickled = data[:2] == b"PK" or data[:1] == b"\x80"  # a torch.save zip, or pickle protocol 2+
        if named or (pickled and "weights only" in str(e).lower()):
            what = f"it names {named.group(1)}" if named else "it holds more than tensors, numbers and strings"
            raise CharTermError(
                f"{path} is not a plain checkpoint ({what}, which could run code); it was not loaded"
            ) from None
        raise CharTermError(f"{path} is not a PyTorch checkpoint file (damaged or another format)") from None
    except Exception:
        raise CharTermError(f"{path} is not a PyTorch checkpoint file (damaged, truncated or another format)") from None


def parse_checkpoint(obj, path) -> NotebookCheckpoint:
    """Check what torch.load returned against the notebook's checkpoint and CharRNN."""
    if not isinstance(obj, dict):
        raise CharTermError(f"{path} holds a {type(obj).__name__}, not the notebook's checkpoint dict")
    keys = set(obj)
    missing = [k for k in REQUIRED if k not in keys]
    extra = sorted(map(repr, keys - set(REQUIRED) - set(OPTIONAL)))
    if missing or extra:
        raise CharTermError(
            f"{path} is not a notebook checkpoint: missing {missing}, unexpected {_few(extra)} "
            f"(expected {', '.join(REQUIRED)})"
        )
    n_hidden = _count(obj["n_hidden"], "n_hidden", MAX_HIDDEN, path)
    n_layers = _count(obj["n_layers"], "n_layers", MAX_LAYERS, path)
    tokens = _check_tokens(obj["tokens"], path)
    dropout = _check_dropout(obj.get("drop_prob", DEFAULT_DROPOUT), path)
    shapes = expected_shapes(len(tokens), n_hidden, n_layers)
    state = _check_state(obj["state_dict"], shapes, path, f"n_hidden={n_hidden}, n_layers={n_layers}")
    return NotebookCheckpoint(tokens, n_hidden, n_layers, dropout, state)


def _count(value, name: str, limit: int, path) -> int:
    if type(value) is not int or not 0 < value <= limit:
        raise CharTermError(f"{path}: {name} is {value!r}; expected a whole number from 1 to {limit}")
    return value


def _check_tokens(tokens, path) -> tuple[str, ...]:
    if not isinstance(tokens, tuple | list) or not tokens:
        raise CharTermError(f"{path}: tokens is a {type(tokens).__name__}; expected the notebook's tuple of chars")
    bad = [t for t in tokens if type(t) is not str or len(t) != 1]
    if bad:
        raise CharTermError(f"{path}: tokens must be single characters; found {_few([repr(t) for t in bad])}")
    if len(tokens) > MAX_VOCAB:
        raise CharTermError(f"{path}: {len(tokens):,} tokens; charterm models hold at most {MAX_VOCAB:,} chars")
    repeated = sorted(t for t, n in Counter(tokens).items() if n > 1)
    if repeated:
        raise CharTermError(f"{path}: tokens has repeated characters: {_few([repr(t) for t in repeated])}")
    return tuple(tokens)


def _check_dropout(value, path) -> float:
    if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value < 1):
        raise CharTermError(f"{path}: drop_prob is {value!r}; expected a number in [0, 1)")
    return float(value)


def expected_shapes(vocab_size: int, n_hidden: int, n_layers: int) -> dict[str, tuple[int, ...]]:
    """The state dict of the notebook's CharRNN(tokens, n_hidden, n_layers)."""
    shapes = {}
    for i in range(n_layers):
        shapes[f"lstm.weight_ih_l{i}"] = (4 * n_hidden, vocab_size if i == 0 else n_hidden)
        shapes[f"lstm.weight_hh_l{i}"] = (4 * n_hidden, n_hidden)
        shapes[f"lstm.bias_ih_l{i}"] = (4 * n_hidden,)
        shapes[f"lstm.bias_hh_l{i}"] = (4 * n_hidden,)
    shapes["fc.weight"] = (vocab_size, n_hidden)
    shapes["fc.bias"] = (vocab_size,)
    return shapes


def _check_state(state, shapes: dict, path, arch: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CharTermError(f"{path}: state_dict is a {type(state).__name__}, not a dict of tensors")
    missing = sorted(map(repr, set(shapes) - set(state)))
    extra = sorted(map(repr, set(state) - set(shapes)))
    if missing or extra:
        raise CharTermError(
            f"{path}: the weights are not the notebook's CharRNN ({arch}): missing {_few(missing)}, "
            f"unexpected {_few(extra)}"
        )
    checked = {}
    for name, shape in shapes.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or not t.is_floating_point():
            kind = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else f"a {type(t).__name__}"
            raise CharTermError(f"{path}: {name} is {kind}; expected floating-point weights")
        if tuple(t.shape) != shape:
            raise CharTermError(f"{path}: {name} has shape {list(t.shape)}, expected {list(shape)} for {arch}")
        t = t.detach().to(torch.float32).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise CharTermError(f"{path}: {name} holds NaN or infinite values; the model is broken")
        checked[name] = t
    return checked


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
    return f"[{shown}]"


def to_charmodel(ckpt: NotebookCheckpoint) -> tuple[CharModel, Vocabulary]:
    """The same function as a charterm CharModel over the sorted vocabulary: an identity embedding
    (the one-hot as a lookup), the notebook's LSTM layers one by one, and the input columns and
    read-out rows permuted from the notebook's char order to the sorted one."""
    vocab = Vocabulary(sorted(ckpt.tokens))
    position = {c: j for j, c in enumerate(ckpt.tokens)}
    perm = torch.tensor([position[c] for c in vocab.chars])  # sorted index -> notebook index
    V, s = len(vocab), ckpt.state
    config = ModelConfig(
        vocab_size=V, cell="lstm", embed=V, hidden=ckpt.n_hidden, layers=ckpt.n_layers, dropout=ckpt.dropout
    )
    weights = {"embed.weight": torch.eye(V), "fc.weight": s["fc.weight"][perm], "fc.bias": s["fc.bias"][perm]}
    for i in range(ckpt.n_layers):
        for gate in GATES:
            w = s[f"lstm.{gate}_l{i}"]
            weights[f"rnns.{i}.{gate}_l0"] = w[:, perm] if (i, gate) == (0, "weight_ih") else w
    model = CharModel(config)
    model.load_state_dict({k: v.contiguous() for k, v in weights.items()})
    return model.eval(), vocab

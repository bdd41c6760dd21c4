"""Mean cross-entropy over a split, with the training batching (rows, windows, carried state)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from charterm.engine.model import CharModel
from charterm.engine.sampling import Stepper
from charterm.engine.text import row_starts, window


@torch.no_grad()
def evaluate(
    model: CharModel,
    ids: np.ndarray,
    batch_size: int,
    seq_length: int,
    precision: str = "fp32",
    should_stop=lambda: False,
    part: tuple[int, int] = (0, 1),
    max_windows: int = 0,
) -> tuple[float, int]:
    """Returns (mean loss in nats/char, chars scored). precision "int8" scores the int8 weights
    that generation uses, one char at a time. `part` = (rank, world) scores this rank's rows of
    batch_size * world; `max_windows` > 0 scores only the first windows of every row."""
    rank, world = part
    was_training = model.training
    model.eval()
    device = model.fc.weight.device
    starts, n_windows = row_starts(len(ids), batch_size * world, seq_length)
    starts = starts[rank * batch_size : (rank + 1) * batch_size]
    if max_windows:
        n_windows = min(n_windows, max_windows)
    total, count = 0.0, 0
    stepper = Stepper(model, precision) if precision != "fp32" else None
    layers = stepper.from_state(model.init_state(batch_size, "cpu")) if stepper else None
    state = None
    for w in range(n_windows):
        if should_stop():
            break
        xs, ys = window(ids, starts, w * seq_length, seq_length)
        x, y = torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)
        if stepper is None:
            with autocast_for(device):
                logits, state = model(x, state)
        else:
            logits = torch.stack([stepper.step(x[:, t].cpu(), layers) for t in range(x.shape[1])], 1)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return (total / count if count else math.nan), count


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def evaluate_adapting(
    model: CharModel, ids: np.ndarray, segment: int, lr: float, part: str = "all", should_stop=lambda: False
) -> tuple[float, float, int]:
    """Dynamic evaluation (`charterm.engine.adapt`): the text is read in order at batch 1 and each
    `segment` chars are scored before a copy of the model learns from them, so later text is
    predicted by a model that has learned from the text before it. Dropout is off throughout;
    `model` itself is not changed. Returns (adapted loss, static loss, chars), in nats/char over
    the same chars (all but the first), both from a zero state."""
    from charterm.engine.adapt import Adapter

    was_training = model.training
    ids_t = torch.from_numpy(np.array(ids, dtype=np.int64))  # a copy: token files are read-only
    static = _static_loss_sum(model.eval(), ids_t[:-1].view(1, -1), ids_t[1:])
    model.train(was_training)
    if len(ids_t) < 2:
        return math.nan, math.nan, 0
    adapter = Adapter(model, lr, segment, part)
    with torch.no_grad():
        _, state = adapter.model(ids_t[:1].view(1, 1))
    total, count = 0.0, 0
    for start in range(1, len(ids_t), segment):
        if should_stop():
            break
        loss, n, state = adapter.read(ids_t[start : start + segment], state)
        total, count = total + loss, count + n
    if not count:
        return math.nan, math.nan, 0
    return total / count, static[:count].sum().item() / count, count


@torch.no_grad()
def _static_loss_sum(model: CharModel, x_all: torch.Tensor, y_all: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Each char's loss under the unchanged model, read in order with the state carried."""
    state, losses = None, []
    for start in range(0, x_all.shape[1], chunk):
        logits, state = model(x_all[:, start : start + chunk], state)
        losses.append(F.cross_entropy(logits[0].float(), y_all[start : start + chunk], reduction="none"))
    return torch.cat(losses)

"""Mean cross-entropy over a split, with the training batching (rows, windows, carried state)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from charterm.model import CharModel
from charterm.sampling import Stepper
from charterm.text import row_starts, window


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

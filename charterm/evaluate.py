"""Mean cross-entropy over a whole split, with the training batching (rows, windows, carried state)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from charterm.model import CharModel
from charterm.sampling import Stepper
from charterm.text import make_rows


@torch.no_grad()
def evaluate(
    model: CharModel,
    ids: np.ndarray,
    batch_size: int,
    seq_length: int,
    precision: str = "fp32",
    should_stop=lambda: False,
) -> tuple[float, int]:
    """Returns (mean loss in nats/char, chars scored). precision "int8" scores the int8 weights
    that generation uses, one char at a time."""
    was_training = model.training
    model.eval()
    device = model.fc.weight.device
    x_rows, y_rows = make_rows(ids, batch_size, seq_length)
    x_all = torch.from_numpy(x_rows.astype(np.int64)).to(device)
    y_all = torch.from_numpy(y_rows.astype(np.int64)).to(device)
    total, count = 0.0, 0
    stepper = Stepper(model, precision) if precision != "fp32" else None
    layers = stepper.from_state(model.init_state(batch_size, "cpu")) if stepper else None
    state = None
    for start in range(0, x_all.shape[1], seq_length):
        if should_stop():
            break
        x, y = x_all[:, start : start + seq_length], y_all[:, start : start + seq_length]
        if stepper is None:
            with _autocast(device):
                logits, state = model(x, state)
        else:
            logits = torch.stack([stepper.step(x[:, t].cpu(), layers) for t in range(x.shape[1])], 1)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return (total / count if count else math.nan), count


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)

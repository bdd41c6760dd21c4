"""Fast sampling: prime as one sequence, then one char at a time through packed weights.

`nn.LSTM` called for a single step goes through oneDNN and costs several times a plain
matmul per layer, so generation uses `Stepper`: per layer one matmul on [input, h] with the
weights pre-transposed and the gates reordered (i, f, o | g) so one sigmoid and one tanh cover
them. The first layer's input projection is a lookup table (embedding x W_ih + biases). With
`precision="int8"` the matmuls use per-channel int8 weights (about twice as fast at batch 1).
"""

import math
import random
import warnings
from collections.abc import Iterator

import torch

from charterm.engine.model import CharModel, State


def _int8_available() -> bool:
    try:
        torch.ops.quantized.linear_prepack  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False


class _Linear:
    """y = x @ W^T + b in fp32 or int8 (dynamic per-channel quantization)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, precision: str):
        self.int8 = precision == "int8"
        if self.int8:
            w = weight.float().contiguous()
            scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qw = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.float())
        else:
            self.wt = weight.detach().float().t().contiguous()
            self.b = None if bias is None else bias.detach().float().unsqueeze(0)  # logits never need a grad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8:
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)
        return torch.addmm(self.b, x, self.wt) if self.b is not None else x @ self.wt


class Stepper:
    """Advances a CharModel one char at a time, for any batch size. State: a list per layer of
    [h, c] (LSTM) or [h] (GRU), each (batch, hidden)."""

    def __init__(self, model: CharModel, precision: str = "int8"):
        if precision == "int8" and not _int8_available():
            precision = "fp32"
        try:
            self._pack(model, precision)
        except RuntimeError:  # no int8 engine on this platform: full precision still works
            if precision == "fp32":
                raise
            self._pack(model, "fp32")

    def _pack(self, model: CharModel, precision: str) -> None:
        self.precision = precision
        self.config = c = model.config
        self.lstm = c.cell == "lstm"
        H = c.hidden
        with torch.no_grad():
            emb = model.embed.weight.float()
            self.layers = []
            for i, rnn in enumerate(model.rnns):
                w_ih, w_hh = rnn.weight_ih_l0.float(), rnn.weight_hh_l0.float()
                b_ih, b_hh = rnn.bias_ih_l0.float(), rnn.bias_hh_l0.float()
                if self.lstm:
                    order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
                    w_ih, w_hh, b = w_ih[order], w_hh[order], (b_ih + b_hh)[order]
                    if i == 0:
                        table = emb @ w_ih.t() + b
                        self.layers.append((table, _Linear(w_hh, None, precision)))
                    else:
                        self.layers.append((None, _Linear(torch.cat([w_ih, w_hh], 1), b, precision)))
                else:
                    x_in = emb @ w_ih.t() + b_ih if i == 0 else None
                    lin_ih = None if i == 0 else _Linear(w_ih, b_ih, precision)
                    self.layers.append((x_in, lin_ih, _Linear(w_hh, b_hh, precision)))
            self.fc = _Linear(model.fc.weight, model.fc.bias, precision)

    def from_state(self, state: State) -> list[list[torch.Tensor]]:
        return [[s[i] for s in state] for i in range(self.config.layers)]

    def to_state(self, layers: list[list[torch.Tensor]]) -> State:
        return tuple(torch.stack([lay[k] for lay in layers]) for k in range(len(layers[0])))

    @torch.no_grad()
    def step(self, ids: torch.Tensor, layers: list[list[torch.Tensor]]) -> torch.Tensor:
        """Feed ids (batch,) and update `layers` in place; returns logits (batch, vocab)."""
        H = self.config.hidden
        x = None
        for i, packed in enumerate(self.layers):
            st = layers[i]
            if self.lstm:
                table, lin = packed
                g = lin(st[0]).add_(table[ids]) if i == 0 else lin(torch.cat([x, st[0]], 1))
                s = torch.sigmoid(g[:, : 3 * H])
                c = torch.addcmul(s[:, H : 2 * H] * st[1], s[:, :H], torch.tanh(g[:, 3 * H :]))
                h = s[:, 2 * H :] * torch.tanh(c)
                st[0], st[1] = h, c
            else:
                table, lin_ih, lin_hh = packed
                gi = table[ids] if i == 0 else lin_ih(x)
                gh = lin_hh(st[0])
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                h = n + z * (st[0] - n)
                st[0] = h
            x = h
        return self.fc(x)


class CharSampler:
    """Draws the next char id from logits: temperature, top-k, seeded; temperature 0 is greedy.
    `banned` (the unknown-char token) is never drawn."""

    def __init__(
        self, top_k: int | None = 5, temperature: float = 1.0, seed: int | None = None, banned: int | None = None
    ):
        self.top_k = top_k
        self.temperature = temperature
        self.rng = random.Random(seed)
        self.banned = banned

    def __call__(self, logits: torch.Tensor) -> int:
        logits = logits.reshape(-1)
        if self.banned is not None:
            logits = logits.clone()
            logits[self.banned] = -math.inf
        if self.temperature == 0:
            return int(logits.argmax())
        values, idx = logits.topk(self.k(logits.numel()))
        return self.draw(values.tolist(), idx.tolist())

    def k(self, vocab: int) -> int:
        """How many of the likeliest chars are drawn from."""
        return vocab if not self.top_k else min(self.top_k, vocab)

    def draw(self, values: list[float], idx: list[int]) -> int:
        """One of the ids `idx` (the top k, likeliest first) by their logits `values`, at the temperature."""
        top, t = values[0], self.temperature
        weights = [math.exp((v - top) / t) for v in values]
        return self.rng.choices(idx, weights=weights)[0]


@torch.no_grad()
def run_ids(model: CharModel, ids: list[int], state: State | None = None) -> tuple[torch.Tensor, State]:
    """Run ids through the model as one sequence; returns the last logits (vocab,) and the state."""
    device = model.fc.weight.device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    logits, state = model(x, state)
    return logits[0, -1].float().cpu(), tuple(s.cpu() for s in state)


class Generation:
    """Iterate to get sampled char ids, one at a time. At any point (also after stopping early),
    `state` and `logits` are those after the last char yielded, so a stopped generation keeps
    exactly what was shown; `p` is the model's probability of that char (temperature 1, all
    chars: how sure the model itself was, whatever the sampling settings)."""

    def __init__(self, stepper: Stepper, logits: torch.Tensor, state: State, sampler: CharSampler):
        self.stepper = stepper
        self.sampler = sampler
        self.logits = logits
        self.p = 1.0
        self._layers = stepper.from_state(state)

    @property
    def state(self) -> State:
        return self.stepper.to_state(self._layers)

    def __iter__(self) -> Iterator[int]:
        while True:
            nxt = self.sampler(self.logits)
            self.p = float(torch.softmax(self.logits, 0)[nxt])
            self.logits = self.stepper.step(torch.tensor([nxt]), self._layers).reshape(-1)
            yield nxt

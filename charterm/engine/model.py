"""The char model: an embedding, a stack of LSTM (or GRU) layers, dropout, a linear read-out.

Two regularisers, both off at evaluation and generation: dropout on the activations between
layers and before the read-out, and weight drop (AWD-LSTM's DropConnect: one mask over each
layer's hidden-to-hidden matrix per forward call, so the same dropped connections for every
time step of the window).

The notebook feeds one-hot vectors into the LSTM; an embedding as wide as the vocabulary is the
same function (a one-hot times a matrix selects a column) without building the one-hot tensor.
"""

import torch
from torch import nn

from charterm.config import ModelConfig

State = tuple[torch.Tensor, ...]  # LSTM: (h, c); GRU: (h,); each (layers, batch, hidden)


def cheap_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout with a mask made from random bytes (p rounded to 1/256).

    On CPU, drawing Bernoulli masks is a large share of a training step; random 32-bit ints seen
    as four bytes each cost a fifth as much.
    """
    if p <= 0:
        return x
    # the full int32 range: plain random_() leaves every fourth byte below 128
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int32, device=x.device).random_(-(2**31), 2**31 - 1)
    keep = words.view(torch.uint8)[: x.numel()].view(x.shape) >= round(p * 256)
    return x * keep * (1.0 / (1.0 - p))


class CharModel(nn.Module):
    def __init__(self, config: ModelConfig, device=None):
        """device="meta" gives the shapes without allocating (passed to each layer: the
        `torch.device` context manager would import torch._dynamo, 2 s here)."""
        super().__init__()
        self.config = config
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]
        # nn.Embedding's own N(0, 1) init goes through Tensor.normal_, which imports torch._dynamo
        # (2 s on first use); torch.randn draws the same numbers without it.
        self.embed = nn.Embedding(
            config.vocab_size, config.embed, _weight=torch.randn(config.vocab_size, config.embed, device=device)
        )
        self.rnns = nn.ModuleList(
            rnn(config.embed if i == 0 else config.hidden, config.hidden, batch_first=True, device=device)
            for i in range(config.layers)
        )
        self.fc = nn.Linear(config.hidden, config.vocab_size, device=device)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int = 1, device=None) -> State:
        c = self.config
        device = device or self.fc.weight.device
        zeros = torch.zeros(c.layers, batch_size, c.hidden, device=device)
        return (zeros, zeros.clone()) if c.cell == "lstm" else (zeros,)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (batch, time) -> logits (batch, time, vocab) and the state after the last char."""
        if state is None:
            state = self.init_state(ids.shape[0], ids.device)
        p = self.config.dropout if self.training else 0.0
        x = self.embed(ids)
        new = []
        for i, rnn in enumerate(self.rnns):
            layer_state = tuple(s[i : i + 1].contiguous() for s in state)
            if i > 0:
                x = cheap_dropout(x, p)
            hx = layer_state if self.config.cell == "lstm" else layer_state[0]
            if self.training and self.config.weight_drop > 0:
                x, out_state = self._weight_dropped(rnn, x, hx)
            else:
                x, out_state = rnn(x, hx)
            new.append(out_state if isinstance(out_state, tuple) else (out_state,))
        x = cheap_dropout(x, p)
        new_state = tuple(torch.cat([s[k] for s in new]) for k in range(len(state)))
        return self.fc(x), new_state

    def _weight_dropped(self, rnn: nn.LSTM | nn.GRU, x: torch.Tensor, hx):
        """One layer with a dropped copy of its recurrent weights (the parameters stay whole): the
        op nn.LSTM / nn.GRU itself runs, given the layer's weights by their public names."""
        weights = [
            rnn.weight_ih_l0,
            cheap_dropout(rnn.weight_hh_l0, self.config.weight_drop),
            rnn.bias_ih_l0,
            rnn.bias_hh_l0,
        ]
        fn = torch.lstm if self.config.cell == "lstm" else torch.gru
        out = fn(
            x,
            hx,
            weights,
            has_biases=True,
            num_layers=1,
            dropout=0.0,
            train=True,
            bidirectional=False,
            batch_first=True,
        )
        return out[0], (out[1:] if self.config.cell == "lstm" else out[1])

"""Dynamic evaluation (Krause et al. 2018): the model learns the text as it reads it.

The text is read in segments; each segment is scored first, then the adapted weights take one
step of Adam with beta1 = 0 on it (RMSprop with Adam's bias correction, written out here so
that its whole state is the weights, one second-moment tensor each and a step count). Which
weights adapt is a `part`: "all", or "readout" (the read-out layer only: the LSTM, and so
every LSTM state, stays exactly the base model's, and a step costs no backward pass through
time). `Adapter.snapshot()` / `restore()` give and take that whole state as bytes, so a story
can go back to the weights it had after any turn, bit for bit.
"""

import copy
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

from charterm.engine.model import CharModel, State

BETA2, EPS = 0.999, 1e-8
PARTS = {
    "all": lambda name: True,
    "readout": lambda name: name.startswith("fc."),
}
SNAPSHOT_FORMAT = "charterm-adapt/1"


class Adapter:
    """A copy of `base` whose `part` learns the text it is given; `base` is never changed."""

    def __init__(self, base: CharModel, lr: float, segment: int, part: str = "all"):
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}: {', '.join(PARTS)}")
        self.lr, self.segment, self.part = lr, segment, part
        self.model = copy.deepcopy(base).eval()
        self.params = {n: p for n, p in self.model.named_parameters() if PARTS[part](n)}
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.params)
        self.moments = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.steps = 0
        self.chars = 0  # chars learned from

    def read(self, ids: list[int] | np.ndarray, state: State | None, learn: bool = True) -> tuple[float, int, State]:
        """Score `ids` (each char predicted from the state before it), stepping after each
        segment if `learn`. Returns (summed loss in nats, chars scored, the state after the last id)."""
        x_all = torch.as_tensor(np.asarray(ids, dtype=np.int64)).view(1, -1)
        state = state if state is not None else self.model.init_state(1)
        total = 0.0
        for start in range(0, x_all.shape[1], self.segment):
            x = x_all[:, start : start + self.segment]
            loss, state = self._segment_loss(x, state)
            total += loss.item() * x.shape[1]
            if learn:
                self._step(loss)
        self.chars += x_all.shape[1] if learn else 0
        return total, x_all.shape[1], state

    def _segment_loss(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Mean loss of the segment's chars: the first from the state's top-layer h, the rest
        from the model's outputs along the segment."""
        first = self.model.fc(state[0][-1])  # (1, vocab)
        if self.part == "readout":
            with torch.no_grad():
                hs, new_state = self._top_outputs(x, state)
            logits = torch.cat([first, self.model.fc(hs[:-1])])
        else:
            logits, new_state = self.model(x, state)
            logits = torch.cat([first, logits[0, :-1]])
        return F.cross_entropy(logits.float(), x[0]), tuple(s.detach() for s in new_state)

    def _top_outputs(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The top layer's h after each char of x (time, hidden), and the state after x."""
        h = self.model.embed(x)
        new = []
        for i, rnn in enumerate(self.model.rnns):
            layer_state = tuple(s[i : i + 1].contiguous() for s in state)
            h, out = rnn(h, layer_state if len(layer_state) == 2 else layer_state[0])
            new.append(out if isinstance(out, tuple) else (out,))
        return h[0], tuple(torch.cat([s[k] for s in new]) for k in range(len(state)))

    @torch.no_grad()
    def _step(self, loss: torch.Tensor) -> None:
        grads = torch.autograd.grad(loss, list(self.params.values()))
        self.steps += 1
        correction = 1 - BETA2**self.steps
        for (name, p), g in zip(self.params.items(), grads, strict=True):
            v = self.moments[name].mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
            p.addcdiv_(g, (v / correction).sqrt_().add_(EPS), value=-self.lr)

    def weights(self) -> dict[str, torch.Tensor]:
        """The adapted part's weights, by parameter name."""
        return {n: p.detach() for n, p in self.params.items()}

    def snapshot(self, extra: dict[str, str] | None = None) -> "Snapshot":
        """A copy of everything that decides the next step (`extra`: the caller's own metadata,
        given back by `restore`)."""
        tensors = {f"w.{n}": p.detach().clone() for n, p in self.params.items()}
        tensors |= {f"v.{n}": v.clone() for n, v in self.moments.items()}
        meta = {"format": SNAPSHOT_FORMAT, "part": self.part, "lr": repr(self.lr), "segment": str(self.segment)}
        meta |= {"steps": str(self.steps), "chars": str(self.chars)}
        return Snapshot(tensors, {**(extra or {}), **meta})

    def restore(self, snap: "Snapshot | bytes") -> dict[str, str] | None:
        """Take the state of a snapshot (or its bytes) made with the same part, step size and
        segment, and return its metadata; None (and nothing changed) if it does not fit."""
        if isinstance(snap, bytes | bytearray | memoryview):
            snap = Snapshot.from_bytes(bytes(snap))
            if snap is None:
                return None
        tensors, meta = snap.tensors, snap.meta
        if meta.get("format") != SNAPSHOT_FORMAT or meta.get("part") != self.part:
            return None
        if meta.get("lr") != repr(self.lr) or meta.get("segment") != str(self.segment):
            return None
        want = {f"w.{n}": p for n, p in self.params.items()} | {f"v.{n}": v for n, v in self.moments.items()}
        if set(tensors) != set(want) or any(tensors[k].shape != t.shape for k, t in want.items()):
            return None
        with torch.no_grad():
            for k, t in want.items():
                t.copy_(tensors[k])
        self.steps, self.chars = int(meta["steps"]), int(meta["chars"])
        return meta


class Snapshot:
    """An adapter's weights and moments (tensors by name) and its metadata."""

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict[str, str]):
        self.tensors, self.meta = tensors, meta

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        return save(self.tensors, metadata=self.meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Snapshot | None":
        """None for bytes that are not a snapshot (a damaged cache is not an error: the story's
        text can be re-read)."""
        from safetensors.torch import load

        try:
            return cls(load(data), _metadata(data))
        except Exception:
            return None


@torch.no_grad()
def loss_sum(model: CharModel, ids: list[int] | np.ndarray, state: State) -> float:
    """Summed loss (nats) of `ids` under `model` from `state`, the first id predicted by the
    state itself: what `Adapter.read` scores, without learning."""
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64)).view(1, -1)
    if not x.numel():
        return 0.0
    logits, _ = model(x, state)
    logits = torch.cat([model.fc(state[0][-1]), logits[0, :-1]])
    return F.cross_entropy(logits.float(), x[0], reduction="sum").item()


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (an 8-byte length, then a JSON header)."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})


def mean_loss(total: float, count: int) -> float:
    return total / count if count else math.nan

"""Texts the model never writes, exactly (docs/writing.md#bans).

`Bans` matches a list of banned texts one char at a time (Aho-Corasick, built as it goes): its
state is the longest end of the text so far that begins a banned text. `BanFilter` is one row of
generation under bans. Each char it writes is held back (not shown) until the text since the last
place where no banned text could be starting is over, i.e. until the matcher is back at '' (held
chars are a strict start of a banned text, or chars after one whose start may still be needed).
When a char completes a banned text, the row goes back to where that text began: the LSTM state,
the logits and the matcher as they were before its first char (kept for every held char, so it is
exact), and that char is ruled out there; the sampler then draws among the rest (the next best,
with temperature 0). A ban also counts across the start of the turn (the text before it, the
person's or an earlier turn's); a match that began there, or before MAX_HELD chars were let out
unfinished, goes back to the first char that can still change. With nothing left to choose at a
place, or MAX_REWINDS rewinds in a row without the text growing past its longest, the row ends: `ended` says why.

Rewinds never reach a char that was let out, so what is shown is never taken back. The sampler
draws from its own seeded stream, rewinds included: the same seed and bans give the same text,
and bans that never match give exactly the text the model writes without them.
"""

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from charterm.engine.model import State
from charterm.engine.sampling import CharSampler, Generation, Stepper

MAX_HELD = 400  # chars held back at most; past this they are let out and rewinds stop at their end
MAX_REWINDS = 2_000  # rewinds in a row without the text growing past its longest: then the row ends
NOTHING_LEFT = "the bans leave the model nothing to write here"


class Bans:
    """Banned texts (case-sensitive, each at least one char), matched one char at a time."""

    def __init__(self, texts: Iterable[str] = ()):
        self.texts = tuple(dict.fromkeys(t for t in texts if t))
        self.longest = max(map(len, self.texts), default=0)
        self.last_chars = {t[-1] for t in self.texts}  # a char that completes a ban is one of these
        self._prefixes = {""} | {t[:i] for t in self.texts for i in range(len(t) + 1)}
        self._banned = set(self.texts)
        self._next: dict[tuple[str, str], str] = {}
        self._matched: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.texts)

    def step(self, state: str, ch: str) -> str:
        """The matcher's state after `ch`."""
        key = (state, ch)
        nxt = self._next.get(key)
        if nxt is None:
            nxt = state + ch
            while nxt not in self._prefixes:
                nxt = nxt[1:]
            self._next[key] = nxt
        return nxt

    def start(self, before: str) -> str:
        """The matcher's state after the text `before`."""
        state = ""
        for ch in before[len(before) - self.longest :] if self.longest else "":
            state = self.step(state, ch)
        return state

    def matched(self, state: str) -> int:
        """The length of the shortest banned text that the text so far ends with (0: none)."""
        n = self._matched.get(state)
        if n is None:
            n = next((k for k in range(1, len(state) + 1) if state[-k:] in self._banned), 0)
            self._matched[state] = n
        return n

    def found_in(self, text: str) -> list[str]:
        """The banned texts that occur in `text`."""
        return [t for t in self.texts if t in text]


Layers = list[list[torch.Tensor]]  # a Stepper state: per layer [h, c] (or [h])
LayersRef = Layers | tuple[Layers, int, torch.Tensor]  # a row's state, or row b of a batch's (and its logits)


def _layers(ref: LayersRef) -> Layers:
    if isinstance(ref, tuple):
        batch, b, _ = ref
        return [[t[b : b + 1] for t in layer] for layer in batch]
    return ref


@dataclass
class _Held:
    """A char written and not yet taken, with everything needed to write another one in its place."""

    id: int
    p: float  # the model's probability of it (temperature 1, all chars)
    layers: LayersRef  # the Stepper state before it
    logits: torch.Tensor  # the logits before it
    match: str  # the matcher's state before it
    ruled_out: frozenset[int]  # chars ruled out at its place


class BanFilter:
    """One row of generation that never writes a banned text. Step it with `step_rows`; `take()`
    the chars that may be shown, in order; `layers_taken` is the state after the chars taken."""

    def __init__(
        self,
        bans: Bans,
        chars: list[str],
        sampler: CharSampler,
        logits: torch.Tensor,
        layers: LayersRef,
        before: str = "",
    ):
        self.bans, self.chars, self.sampler = bans, chars, sampler
        self.logits, self.layers = logits.reshape(-1), layers
        self.match = bans.start(before)
        self.ruled_out: frozenset[int] = frozenset()  # at the place the next char goes
        self.held: list[_Held] = []  # chars written and not yet taken, oldest first
        self.ready = 0  # how many of `held`, from the first, may be shown
        self.rewinds = 0
        self.written = 0  # chars written, those taken back by a rewind included
        self.ended: str | None = None  # why the row ended before it was told to (None: it goes on)
        self.taken = 0
        self._frontier = 0  # the most chars the text has had (taken and held)
        self._stuck = 0  # rewinds since the text last grew past the frontier
        never = {sampler.banned} if sampler.banned is not None else set()
        self._choosable = len(chars) - len(never)
        self._never = never

    def choose(self) -> int | None:
        """The next char to write (the model's, among those not ruled out here); None once the row
        has ended (then every held char may be shown: none completes a banned text)."""
        if not self.can_write():
            return None
        logits = self.logits
        if self.ruled_out:
            logits = logits.clone()
            logits[list(self.ruled_out)] = -math.inf
        nxt = self.sampler(logits)
        self.wrote(nxt, float(torch.softmax(self.logits, 0)[nxt]))
        return nxt

    def can_write(self) -> bool:
        """Whether the row goes on: something is left to choose here (else it ends)."""
        if self.ended is None and len(self.ruled_out - self._never) >= self._choosable:
            self._end(NOTHING_LEFT)
        return self.ended is None

    def wrote(self, nxt: int, p: float) -> None:
        """The char chosen to write next (`p`: the model's probability of it), held until it is let out."""
        self.held.append(_Held(nxt, p, self.layers, self.logits, self.match, self.ruled_out))
        self.ruled_out = frozenset()
        self.written += 1

    def accept(self, logits: torch.Tensor, layers: LayersRef) -> None:
        """The state after the char `choose` gave: keep it, or go back if it completes a banned text."""
        last = self.held[-1]
        self.logits, self.layers = logits.reshape(-1), layers
        self.match = self.bans.step(last.match, self.chars[last.id])
        n = self.bans.matched(self.match)
        if n:
            self._rewind(max(len(self.held) - n, self.ready))
            return
        if self.taken + len(self.held) > self._frontier:
            self._frontier, self._stuck = self.taken + len(self.held), 0
        if not self.match or len(self.held) - self.ready >= MAX_HELD:
            self.ready = len(self.held)

    def _rewind(self, at: int) -> None:
        """Back to before held char `at`, which is ruled out there."""
        h = self.held[at]
        self.layers, self.logits, self.match = h.layers, h.logits, h.match
        self.ruled_out = h.ruled_out | {h.id}
        del self.held[at:]
        self.rewinds += 1
        self._stuck += 1
        if self._stuck > MAX_REWINDS:
            self._end(NOTHING_LEFT)

    def _end(self, why: str) -> None:
        self.ended, self.ready = why, len(self.held)

    def take(self) -> tuple[int, float] | None:
        """The next char that may be shown, with its probability (None: none yet)."""
        if not self.ready:
            return None
        h = self.held.pop(0)
        self.ready -= 1
        self.taken += 1
        return h.id, h.p

    @property
    def layers_taken(self) -> Layers:
        """The Stepper state after the chars taken (those held are not in it)."""
        return _layers(self.held[0].layers if self.held else self.layers)


def step_rows(stepper: Stepper, rows: list[BanFilter]) -> None:
    """One char for each row that goes on, all in one batched Stepper step. Rows that stepped together
    last time and did not go back keep their batch as it is (no copying)."""
    if len(rows) == 1:
        row = rows[0]
        if row.choose() is not None:
            layers = [list(layer) for layer in _layers(row.layers)]  # the step replaces them: the held keep the old
            row.accept(stepper.step(torch.tensor([row.held[-1].id]), layers)[0], layers)
        return
    going = [row for row in rows if row.can_write()]
    if not going:
        return
    last = going[0].layers
    if isinstance(last, tuple) and last[0][0][0].shape[0] == len(going) and all(
        isinstance(r.layers, tuple) and r.layers[0] is last[0] and r.layers[1] == b for b, r in enumerate(going)
    ):
        layers, logits = [list(layer) for layer in last[0]], last[2]
    else:
        each = [_layers(row.layers) for row in going]
        layers = [[torch.cat([e[k][j] for e in each]) for j in range(len(each[0][k]))] for k in range(len(each[0]))]
        logits = torch.stack([row.logits for row in going])
    ids = _choose_rows(going, logits)
    logits = stepper.step(torch.tensor(ids), layers)
    for b, row in enumerate(going):
        row.accept(logits[b], (layers, b, logits))


def _choose_rows(rows: list[BanFilter], logits: torch.Tensor) -> list[int]:
    """Each row's next char, drawn by its own sampler as `choose` would (`logits`: the rows' own, stacked),
    with the tensor work done once."""
    masked = logits
    if any(row.ruled_out or row.sampler.banned is not None for row in rows):
        masked = logits.clone()
        for b, row in enumerate(rows):
            if row.ruled_out:
                masked[b, list(row.ruled_out)] = -math.inf
            if row.sampler.banned is not None:
                masked[b, row.sampler.banned] = -math.inf
    first = rows[0].sampler
    if first.temperature == 0 or any(r.sampler.top_k != first.top_k for r in rows):
        ids = [row.sampler(masked[b]) for b, row in enumerate(rows)]
    else:
        values, idx = masked.topk(first.k(masked.shape[1]), 1)
        ids = [row.sampler.draw(v, i) for row, v, i in zip(rows, values.tolist(), idx.tolist(), strict=True)]
    probs = torch.softmax(logits, 1).tolist()  # the model's own (temperature 1, all chars)
    for row, nxt, p in zip(rows, ids, probs, strict=True):
        row.wrote(nxt, p[nxt])
    return ids


class BannedGeneration:
    """`Generation` under bans: iterate for the ids of the chars that may be shown; `state` is
    the state after the last one, `p` its probability; the iteration ends only if the row does
    (`ended` says why)."""

    def __init__(
        self, stepper: Stepper, logits: torch.Tensor, state: State, sampler: CharSampler, bans: Bans,
        chars: list[str], before: str = "",
    ):
        self.stepper = stepper
        self.row = BanFilter(bans, chars, sampler, logits, stepper.from_state(state), before)
        self.p = 1.0

    @property
    def state(self) -> State:
        return self.stepper.to_state(self.row.layers_taken)

    @property
    def ended(self) -> str | None:
        return self.row.ended

    def __iter__(self) -> Iterator[int]:
        row = self.row
        while True:
            while not row.ready and row.ended is None:
                step_rows(self.stepper, [row])
            got = row.take()
            if got is None:
                return
            nxt, self.p = got
            yield nxt


def generation(
    stepper: Stepper, logits: torch.Tensor, state: State, sampler: CharSampler, bans: Bans, chars: list[str],
    before: str = "",
) -> Generation | BannedGeneration:
    """A `Generation`, under `bans` if there are any."""
    if not bans:
        return Generation(stepper, logits, state, sampler)
    return BannedGeneration(stepper, logits, state, sampler, bans, chars, before)

"""What the model would write next: its most likely next words, and how sure it was of each char.

`next_words` runs a small beam search over chars from an LSTM state until a word ends, with the
`Stepper` at batch = beam width. A word is what the model puts before the next word: leading
whitespace if it writes some (at most MAX_LEAD chars: " the", "\\nLevin"), then non-space chars.
It ends at a space or newline (not part of the word: that belongs to the next one) or at a
punctuation mark of ENDS (part of it: " Levin,"). A word's probability is the product of its
chars' probabilities times that of what ends it, so it is the chance that the model's next word
is exactly this one: " the" does not count " then", the words are disjoint events and their
probabilities sum to at most 1. Probabilities are the model's own (temperature 1, all chars),
not the sampling settings'; the unknown-char token never appears, nor a word that would complete a
banned text (`charterm.engine.bans`, with the story's end before it). Give `next_words` an fp32
`Stepper`: int8 quantizes a batch's activations together, so a word's probability would shift
with the other rows of the beam (and with `n`).
"""

import math
from dataclasses import dataclass

import torch

from charterm.engine.bans import Bans
from charterm.engine.model import CharModel, State
from charterm.engine.sampling import Stepper
from charterm.engine.text import Vocabulary

ENDS = ",.;:!?"  # punctuation that ends a word and is part of it
MAX_LEAD = 2  # whitespace chars a word may start with
WORDS = 5
BEAM = 16
MAX_CHARS = 20


@dataclass(frozen=True)
class Candidate:
    text: str
    p: float


def check_words(n: int, what: str = "words") -> int:
    from charterm.errors import UsageError

    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 9:
        raise UsageError(f"{what} must be a whole number from 1 to 9 (got {n!r})")
    return n


class _Kinds:
    """Which vocabulary ids are whitespace, which end a word, which may never be written."""

    def __init__(self, vocab: Vocabulary):
        self.space = torch.tensor([c.isspace() for c in vocab.chars])
        self.ends = torch.tensor([c in ENDS for c in vocab.chars])
        self.space_ids = self.space.nonzero().reshape(-1)
        self.end_ids = self.ends.nonzero().reshape(-1)
        self.banned = vocab.unknown_id


@torch.no_grad()
def next_words(
    stepper: Stepper,
    vocab: Vocabulary,
    state: State,
    n: int = WORDS,
    beam: int = BEAM,
    max_chars: int = MAX_CHARS,
    bans: Bans | None = None,
    before: str = "",
) -> list[Candidate]:
    """The `n` most likely next words after `state`, most likely first. A word longer than
    `max_chars` is not offered, nor one that completes one of `bans` after the text `before`."""
    kinds = _Kinds(vocab)
    layers = stepper.from_state(state)
    texts: list[str] = [""]
    bans = bans or Bans()
    matches = [bans.start(before)]  # each beam's matcher state
    score = torch.zeros(1)
    lead = torch.zeros(1, dtype=torch.long)  # whitespace chars so far; -1 once the word has begun
    logits = stepper.fc(layers[-1][0]).float()
    found: dict[str, float] = {}
    for length in range(max_chars):
        lp = torch.log_softmax(logits, 1) + score[:, None]
        if kinds.banned is not None:
            lp[:, kinds.banned] = -math.inf
        _rule_out_bans(lp, matches, bans, vocab)
        _collect(found, texts, lp, lead, kinds, vocab, n)
        if length + 1 == max_chars:
            break
        live = lp.masked_fill(kinds.ends[None, :], -math.inf)
        live[(lead < 0)[:, None] & kinds.space[None, :]] = -math.inf  # a space after the word ends it
        live[(lead >= MAX_LEAD)[:, None] & kinds.space[None, :]] = -math.inf
        floor = sorted(found.values(), reverse=True)[n - 1] if len(found) >= n else -math.inf
        top, flat = live.reshape(-1).topk(min(beam, live.numel()))
        keep = top > floor  # a word only gets less likely as it grows
        if not keep.any():
            break
        top, flat = top[keep], flat[keep]
        rows, ids = flat // lp.shape[1], flat % lp.shape[1]
        grown = list(zip(rows.tolist(), ids.tolist(), strict=True))
        texts = [texts[r] + vocab.chars[i] for r, i in grown]
        matches = [bans.step(matches[r], vocab.chars[i]) for r, i in grown] if bans else [""] * len(grown)
        lead = torch.where(kinds.space[ids] & (lead[rows] >= 0), lead[rows] + 1, -1)
        score = top
        layers = [[s[rows] for s in layer] for layer in layers]
        logits = stepper.step(ids, layers)
    best = sorted(((t, lp) for t, lp in found.items() if lp > -math.inf), key=lambda kv: -kv[1])[:n]
    return [Candidate(text, math.exp(lp)) for text, lp in best]


def _rule_out_bans(lp: torch.Tensor, matches: list[str], bans: Bans, vocab: Vocabulary) -> None:
    """No beam goes on with a char that completes a banned text."""
    for ch in bans.last_chars:
        i = vocab.index.get(ch)
        if i is None:
            continue
        for r, m in enumerate(matches):
            if bans.matched(bans.step(m, ch)):
                lp[r, i] = -math.inf


def _collect(found, texts, lp, lead, kinds, vocab, n) -> None:
    """Add the words these beams can end now: at whitespace (once begun), or with an ENDS mark."""
    begun = lead < 0
    if begun.any():
        at_space = torch.logsumexp(lp[:, kinds.space_ids], 1)
        for r in begun.nonzero().reshape(-1).tolist():
            found[texts[r]] = float(at_space[r])
    if len(kinds.end_ids):
        marks = lp[:, kinds.end_ids]
        values, flat = marks.reshape(-1).topk(min(n, marks.numel()))
        for v, f in zip(values.tolist(), flat.tolist(), strict=True):
            r, i = divmod(f, len(kinds.end_ids))
            found[texts[r] + vocab.chars[int(kinds.end_ids[i])]] = v


@torch.no_grad()
def char_probs(model: CharModel, ids: list[int], state: State) -> tuple[list[float], State]:
    """The probability the model gives each of `ids` after `state`, and the state after them: one
    pass over the sequence."""
    if not ids:
        return [], state
    device = model.fc.weight.device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    first = model.fc(state[0][-1].to(device))
    out, new_state = model(x, tuple(s.to(device) for s in state))
    every = torch.cat([first.float(), out[0, :-1].float()]).cpu()
    probs = torch.softmax(every, 1).gather(1, torch.tensor(ids).reshape(-1, 1)).reshape(-1)
    return probs.tolist(), tuple(s.cpu() for s in new_state)

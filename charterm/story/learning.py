"""A story's model learns the person's text as the story grows (dynamic evaluation), exactly
undoably.

The rule: with adaptation on, the weights after a turn are the base model's after learning,
in order, every turn of the person's after the story's `since` turn (`charterm.engine.adapt`, all
weights, STORY_ADAPT_LR, ADAPT_SEGMENT), each read from the base model's LSTM state before it.
The story's states stay the base model's, so they are cached and rebuilt as before; only the
weights carry what was learned, and they can always be re-learned, bit for bit, from the text.
The weights before each of the last KEEP learned turns are kept in memory (an undo is instant)
and the latest in the store (reopening is instant).

Only the person's text: benchmarks/adapt_story.py measured that learning the model's own turns
as well takes away the whole gain on the person's text.
"""

import contextlib
from collections import OrderedDict

import torch

from charterm.config import ADAPT_SEGMENT, STORY_ADAPT_LR
from charterm.engine.adapt import Adapter, Snapshot, loss_sum
from charterm.engine.checkpoint import LoadedModel
from charterm.engine.model import State
from charterm.engine.sampling import Stepper
from charterm.story.store import PERSON, Turn

KEEP = 2  # snapshots in memory: 27 MB each for the shipped model
READ_CHARS = 1_000  # the adapted weights write from the state they reach reading this much of the end
SAVE_CHARS = 3_000  # below this much learned text, reopening learns it again (under 3 s) rather than keep 27 MB
RELEARN_CHARS = 10_000  # a story met by a new base model re-learns at most this much of the person's text


@contextlib.contextmanager
def one_thread():
    """Learning runs on one thread wherever it runs, so re-learning gives the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Learner:
    """The adapted weights of one story, the turn they belong after, and what they gained."""

    def __init__(self, base: LoadedModel, since: int = 0, lr: float = STORY_ADAPT_LR, segment: int = ADAPT_SEGMENT):
        self.base = base
        self.since = since  # learning covers the person's turns after this turn id (0: all)
        self.adapter = Adapter(base.model, lr, segment)
        self.after = 0  # the last turn id learned (0: none)
        self.base_loss = self.adapted_loss = 0.0  # summed over the learned turns, each scored before learning it
        self.last: tuple[float, float] | None = None  # (base, adapted) nats/char of the last learned turn
        self.before: OrderedDict[int, Snapshot] = OrderedDict()  # turn id -> the state before learning it
        self.saved = True
        self._stepper: Stepper | None = None

    @property
    def chars(self) -> int:
        return self.adapter.chars

    def learn(self, turn: Turn, state_before: State) -> None:
        """Score the person's turn under the base and the adapted weights, then learn it."""
        ids = self.ids(turn.text)
        self.before[turn.id] = self.snapshot()
        while len(self.before) > KEEP:
            self.before.popitem(last=False)
        with one_thread():
            base = loss_sum(self.base.model, ids, state_before)
            adapted, n, _ = self.adapter.read(ids, state_before)
        if n:
            self.base_loss, self.adapted_loss = self.base_loss + base, self.adapted_loss + adapted
            self.last = (base / n, adapted / n)
        self.after, self.saved, self._stepper = turn.id, False, None

    def forget(self, turn: Turn) -> bool:
        """Go back to the weights before `turn`, the last one learned, if they are in memory."""
        snap = self.before.pop(turn.id, None)
        if snap is None or not self.restore(snap):
            return False
        self.saved = False
        return True

    def matches(self, turns: list[Turn]) -> bool:
        """Whether the weights are those the rule gives after the last of `turns`."""
        return self.after == self.last_learnable(turns)

    def last_learnable(self, turns: list[Turn]) -> int:
        """The id of the last of `turns` that the rule learns (0: none)."""
        for t in reversed(turns):
            if t.id is not None and t.id <= self.since:
                return 0
            if t.author == PERSON and t.text:
                return t.id
        return 0

    def relearn(self, turns: list[Turn], state_before) -> None:
        """Learn each of `turns` that the rule covers, in order, from the latest kept snapshot
        taken before one of them (else from the base weights); `state_before(i)` is the base
        model's state before turns[i]."""
        ids = [t.id for t in turns]
        start = next((ids.index(k) for k in reversed(self.before) if k in ids), None)
        kept = self.before
        if start is None or not self.restore(kept[ids[start]]):
            self.__init__(self.base, self.since, self.adapter.lr, self.adapter.segment)
            start = 0
        self.before = OrderedDict((k, v) for k, v in kept.items() if k in ids[:start])
        for i in range(start, len(turns)):
            t = turns[i]
            if t.id is not None and t.id > self.since and t.author == PERSON and t.text:
                self.learn(t, state_before(i))

    def stepper(self, precision: str) -> Stepper:
        """The adapted weights, packed for generation (made again after each learned turn)."""
        if self._stepper is None or self._stepper.precision != precision:
            self._stepper = Stepper(self.adapter.model, precision)
        return self._stepper

    def ids(self, text: str) -> list[int]:
        folded, _ = self.base.vocab.fold(text)
        return [self.base.vocab.index[c] for c in folded]

    def figures(self) -> dict:
        """What the side pane shows: chars learned, and how much better the adapted weights
        predicted the learned turns than the base model did (each scored before learning it)."""
        gain = 1 - self.adapted_loss / self.base_loss if self.base_loss else 0.0
        out = {"chars": self.chars, "gain": round(gain, 5)}
        if self.last:
            out["last_base"], out["last_adapted"] = round(self.last[0], 4), round(self.last[1], 4)
        return out

    def snapshot(self) -> Snapshot:
        extra = {"after": str(self.after), "since": str(self.since), "base_loss": repr(self.base_loss)}
        extra |= {"adapted_loss": repr(self.adapted_loss), "last": repr(list(self.last or ()))}
        return self.adapter.snapshot(extra)

    def restore(self, snap: Snapshot | bytes) -> bool:
        meta = self.adapter.restore(snap)
        if meta is None:
            return False
        try:
            self.after, self.since = int(meta["after"]), int(meta["since"])
            self.base_loss, self.adapted_loss = float(meta["base_loss"]), float(meta["adapted_loss"])
            last = [float(x) for x in meta["last"].strip("[]").split(",") if x.strip()]
        except (KeyError, ValueError):
            return False
        self.last = (last[0], last[1]) if len(last) == 2 else None
        self._stepper = None
        return True


def relearn_since(turns: list[Turn], chars: int | None = None) -> int:
    """The `since` for a story that starts learning afresh: the turn before which the person's
    last `chars` (RELEARN_CHARS) chars begin (0: learn them all)."""
    chars, total = RELEARN_CHARS if chars is None else chars, 0
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].author == PERSON:
            total += len(turns[i].text)
            if total > chars:
                return turns[i].id or 0
    return 0

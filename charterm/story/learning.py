"""A story's model learns the person's text as the story grows (dynamic evaluation), exactly
undoably.

The rule: with adaptation on, the weights after a turn are the base model's after learning,
in order, every turn of the person's after the story's `since` turn (`charterm.engine.adapt`, all
weights, STORY_ADAPT_LR, ADAPT_SEGMENT), each read from the base model's LSTM state before it.
The story's states stay the base model's, so they are cached and rebuilt as before; only the
weights carry what was learned, and they can always be re-learned, bit for bit, from the text.
The weights before each of the last KEEP learned turns are kept in memory (an undo is instant)
and the latest in the store (reopening is instant).

A turn is learned ADAPT_SEGMENT chars at a time: each segment scored by the base and the adapted
weights, then one step, then read by the stepped weights from the state they write from (so the
model's answer starts from a state that has read the turn). The segments of a turn being typed
are learned as they are typed (`Learner.prepare`, on a copy of the weights), so Enter leaves
only its last few chars; the bits are the same either way.

Only the person's text: benchmarks/adapt_story.py measured that learning the model's own turns
as well takes away the whole gain on the person's text.
"""

import contextlib
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F

from charterm.config import ADAPT_SEGMENT, STORY_ADAPT_LR
from charterm.engine.adapt import Adapter, Snapshot
from charterm.engine.checkpoint import LoadedModel
from charterm.engine.model import CharModel, State
from charterm.engine.sampling import Stepper, run_ids
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


@torch.no_grad()
def score(model: CharModel, ids: list[int], state: State) -> tuple[float, State]:
    """Summed loss (nats) of `ids` under `model` from `state` (the first id predicted by the state
    itself), and the state after them."""
    x = torch.tensor([ids], dtype=torch.long)
    logits, after = model(x, state)
    logits = torch.cat([model.fc(state[0][-1]), logits[0, :-1]])
    return F.cross_entropy(logits.float(), x[0], reduction="sum").item(), after


class Ahead:
    """A person's turn being learned: the chars learned so far, the base and adapted weights'
    states after them, the state the adapted weights write from (None: not at hand), the losses,
    and the weights before it (`snap`). `key` names the weights and the story it follows;
    `adapter` is a copy of the story's weights while the turn is only typed."""

    def __init__(self, key, snap: Snapshot, adapter: Adapter, state_before: State, written: State | None):
        self.key, self.snap, self.adapter, self.written = key, snap, adapter, written
        self.ids: list[int] = []
        self.base_state = self.adapt_state = state_before
        self.base = self.adapted = 0.0


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
        self.ahead: Ahead | None = None  # the turn being typed, learned so far (`prepare`)
        self._spare: Adapter | None = None  # a copy of the weights to learn it on

    @property
    def chars(self) -> int:
        return self.adapter.chars

    def learn(self, turn: Turn, state_before: State, written: State | None = None, key=None) -> State | None:
        """Score the person's turn under the base and the adapted weights, then learn it, a segment
        at a time, each read after its step from `written`, the state the adapted weights write
        from; what `prepare` learned of it under `key` is not done again. Returns that state after
        the turn (None if `written` was)."""
        ids, a = self.ids(turn.text), self.ahead
        if a is None or a.key != key or key is None or ids[: len(a.ids)] != a.ids:
            a = Ahead(key, self.snapshot(), self.adapter, state_before, written)
        self._advance(a, ids, len(ids))
        if a.adapter is not self.adapter:
            self.adapter, self._spare = a.adapter, self.adapter
        self.ahead = None
        self.before[turn.id] = a.snap
        while len(self.before) > KEEP:
            self.before.popitem(last=False)
        if ids:
            self.base_loss, self.adapted_loss = self.base_loss + a.base, self.adapted_loss + a.adapted
            self.last = (a.base / len(ids), a.adapted / len(ids))
        self.after, self.saved, self._stepper = turn.id, False, None
        return a.written

    def prepare(self, key, ids: list[int], state_before: State, written, interrupted: Callable[[], bool]) -> None:
        """Learn the whole segments of a turn still being typed (`ids`, under `key`), on a copy of
        the weights, until `interrupted()`; a turn that no longer starts with what was learned
        starts again."""
        a = self.ahead
        if a is None or a.key != key or ids[: len(a.ids)] != a.ids:
            adapter = a.adapter if a is not None else self._spare
            adapter = adapter or Adapter(self.base.model, self.adapter.lr, self.adapter.segment, self.adapter.part)
            snap = self.snapshot()
            adapter.restore(snap)
            self._spare, a = None, Ahead(key, snap, adapter, state_before, written)
            self.ahead = a
        segment = self.adapter.segment
        while len(ids) - len(a.ids) >= segment and not interrupted():
            self._advance(a, ids, len(a.ids) + segment)

    def _advance(self, a: Ahead, ids: list[int], end: int) -> None:
        """Learn ids[len(a.ids):end], a segment at a time."""
        segment = self.adapter.segment
        with one_thread():
            for start in range(len(a.ids), end, segment):
                part = ids[start : min(start + segment, end)]
                base, a.base_state = score(self.base.model, part, a.base_state)
                adapted, _, a.adapt_state = a.adapter.read(part, a.adapt_state)
                if a.written is not None:
                    _, a.written = run_ids(a.adapter.model, part, a.written)
                a.ids += part
                a.base, a.adapted = a.base + base, a.adapted + adapted

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

"""The model writing several continuations of the story at once, to pick from (docs/writing.md#choices).

`Choices` writes K rows together, one batched `Stepper` step per char: a char LSTM barely notices a few
more rows, so three choices cost little more than one (docs/speed.md). Each row has its own sampler
stream, seeded from the turn's seed and the row's index (`row_seed`), and its own `BanFilter`, so the
choices are reproducible with a seed and honour the story's bans. With int8 weights the rows share one
quantized step (the scale of a batch's activations is the batch's): a choice depends a little on the
others, so for one seed and K the choices are always the same, but choice 1 is not what a single
continuation with that seed writes. `close()` keeps every row that wrote something as a version of one
turn, in one transaction; the first is the one the story shows (`pick` shows another).
"""

import random
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from charterm.engine.bans import BanFilter, Bans, step_rows
from charterm.engine.checkpoint import pack_state
from charterm.engine.model import State
from charterm.engine.sampling import CharSampler
from charterm.errors import UsageError
from charterm.story.continuation import DRAFT_EVERY, at_limit, at_stop
from charterm.story.store import LIVE_WRITERS, MODEL, StoryChanged, Turn, new_owner

if TYPE_CHECKING:
    from charterm.story.session import Session

MIN_CHOICES, MAX_CHOICES = 2, 9


def check_choices(k: object, what: str = "choices") -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not MIN_CHOICES <= k <= MAX_CHOICES:
        raise UsageError(f"{what} must be a whole number from {MIN_CHOICES} to {MAX_CHOICES} (got {k!r})")
    return k


def row_seed(seed: int, row: int) -> int:
    """The sampler seed of choice `row` (0-based) of a turn whose seed is `seed`."""
    return random.Random(f"charterm choice {seed} {row}").getrandbits(32)


class Choices:
    """K continuations of the story, written together. Iterate for (row, char) as the chars may be
    shown; `stop()` (from any thread) ends every row before its next char; `close()` commits each
    row's text (what was shown of it, with the state after it) as a version of the same turn. Row 0's
    text is saved as the draft while they run, so a kill -9 keeps at least the first choice."""

    def __init__(self, session: "Session", k: int, limit: int, seed: int, whole_words: bool = False):
        self.session, self.k, self.limit, self.whole_words = session, check_choices(k), limit, whole_words
        self.seed = seed
        self.chars: list[list[str]] = [[] for _ in range(k)]
        self.probs: list[list[float]] = [[] for _ in range(k)]
        self.done = [limit <= 0] * k
        self.turns: list[Turn] = []  # committed, in row order (rows that wrote nothing left out)
        self.rows_kept: list[int] = []  # the row of each of `turns`
        self._stop = threading.Event()
        self._closed = False
        self.owner = new_owner()
        LIVE_WRITERS.add(self.owner)
        s, vocab = session.settings, session.loaded.vocab
        self._start_state = state = session.state
        self.stepper = stepper = session.generation_stepper()
        self._adapted = stepper is not session.stepper
        if self._adapted:
            state = session.adapted_state()  # every row writes with the adapted weights and state
        logits, bans, before = session.logits(state, stepper), Bans(s.bans), session.text_before(s.bans)
        self.rows = [
            BanFilter(
                bans, vocab.chars, CharSampler(s.top_k or None, s.temperature, row_seed(seed, r), vocab.unknown_id),
                logits, stepper.from_state(state), before,
            )
            for r in range(k)
        ]

    def text(self, row: int) -> str:
        return "".join(self.chars[row])

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        session, vocab = self.session, self.session.loaded.vocab
        stop_at, last_save = session.settings.stop_at, time.monotonic()
        while not self._stop.is_set() and not all(self.done):
            live = [r for r in range(self.k) if not self.done[r]]
            step_rows(self.stepper, [self.rows[r] for r in live])
            for r in live:
                row = self.rows[r]
                while not self.done[r] and (got := row.take()) is not None:
                    ch = vocab.chars[got[0]]
                    self.chars[r].append(ch)
                    self.probs[r].append(got[1])
                    yield r, ch
                    if self._stop.is_set():
                        return
                    chars = self.chars[r]
                    self.done[r] = at_stop(chars, stop_at) or at_limit(chars, self.limit, self.whole_words)
                if not self.done[r] and row.ended is not None and not row.ready:
                    self.done[r] = True
                    session.notices.append(f"choice {r + 1}: {row.ended}; it ends after {len(self.chars[r]):,} chars")
            if session.store and session.story and time.monotonic() - last_save > DRAFT_EVERY:
                session.store.save_draft(session.story.id, MODEL, self.text(0), self.owner)
                last_save = time.monotonic()

    def state(self, row: int) -> State:
        """The base model's state after what row `row` wrote (the story's states are the base model's)."""
        if self._adapted:
            return self.session._run_text(self.text(row), self._start_state)
        return self.stepper.to_state(self.rows[row].layers_taken)

    def close(self) -> list[Turn]:
        """Keep what each row wrote as versions of one turn (the first shown); nothing if none wrote."""
        if self._closed:
            return self.turns
        self._closed = True
        LIVE_WRITERS.discard(self.owner)
        s = self.session
        kept = [r for r in range(self.k) if self.chars[r]]
        if not kept:
            if s.store and s.story:
                s.store.drop_draft(s.story.id)
            return []
        versions = []
        for r in kept:
            state = self.state(r)
            versions.append((Turn(MODEL, self.text(r), pack_state(state), s.loaded.fingerprint), state))
        commit_versions(s, versions)
        self.turns, self.rows_kept = [t for t, _ in versions], kept
        return self.turns

    def run(self) -> list[Turn]:
        for _ in self:
            pass
        return self.close()

    def __enter__(self) -> "Choices":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def commit_versions(session: "Session", versions: list[tuple[Turn, State | None]]) -> None:
    """Add turns as versions of one place at the end of the story, the first shown, in one transaction.
    If another writer got there first, reload and put them after its turn (as `Session._commit` does)."""
    with session._lock:
        for _ in range(5):
            store, story = session.store, session.story
            if store and story:
                try:
                    story.revision = store.append_versions(story.id, story.revision, [t for t, _ in versions])
                except StoryChanged:
                    session.sync()
                    for turn, _ in versions:
                        turn.state = turn.fingerprint = None
                    versions = [(turn, None) for turn, _ in versions]
                    continue
                story.children.setdefault(versions[0][0].parent, []).extend(t.id for t, _ in versions)
                story.tip = versions[0][0].id
            turn, state = versions[0]
            session.turns.append(turn)
            session._states.append(state)
            if state is None:
                session.ensure_state(len(session.turns) - 1)
            return
        raise StoryChanged("the story keeps changing in another window; try again")

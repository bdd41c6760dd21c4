"""The model writing one turn of a story: `Continuation` streams its chars, saves a draft as it
goes, and commits exactly what was shown when it closes."""

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from charterm.engine.bans import Bans, generation
from charterm.engine.checkpoint import pack_state
from charterm.engine.sampling import CharSampler
from charterm.story.store import LIVE_WRITERS, MODEL, Turn, new_owner

if TYPE_CHECKING:
    from charterm.story.session import Session

DRAFT_EVERY = 0.5  # seconds between saves of the text a running generation has shown
WORD_SLACK = 30  # with whole_words, at most this many chars past the limit to finish a word
SENTENCE_END = ".!?"
CLOSERS = "\"')]"


class Continuation:
    """The model writing one turn. Iterate for chars (one str each); `stop()` (from any thread)
    ends it before the next char; `close()` commits exactly the chars that were yielded, with the
    state after the last of them. While it runs, the shown text is saved as a draft every
    DRAFT_EVERY seconds, so a kill -9 loses at most that much."""

    def __init__(self, session: "Session", limit: int, seed: int, whole_words: bool = False):
        self.session = session
        self.limit = limit
        self.whole_words = whole_words
        self.seed = seed
        self.chars: list[str] = []
        self.probs: list[float] = []  # the model's probability of each char (Generation.p)
        self._stop = threading.Event()
        self._closed = False
        self.turn: Turn | None = None
        self.owner = new_owner()
        LIVE_WRITERS.add(self.owner)
        s = session.settings
        stepper, state = session.writer()
        self._adapted = stepper is not session.stepper
        sampler = CharSampler(s.top_k or None, s.temperature, seed, session.loaded.vocab.unknown_id)
        bans, chars, before = Bans(s.bans), session.loaded.vocab.chars, session.text_before(s.bans)
        self._gen = generation(stepper, session.logits(state, stepper), state, sampler, bans, chars, before)

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator[str]:
        session, vocab = self.session, self.session.loaded.vocab
        store, story = session.store, session.story
        stop_at = session.settings.stop_at
        last_save = time.monotonic()
        chars = iter(self._gen)
        while self.limit > 0 and not self._stop.is_set():
            nxt = next(chars, None)
            if nxt is None:  # the bans left nothing to write (charterm.engine.bans)
                session.notices.append(f"{self._gen.ended}: the turn ends after {len(self.chars):,} chars")
                return
            ch = vocab.chars[nxt]
            self.chars.append(ch)
            self.probs.append(self._gen.p)
            yield ch
            if self._at_stop(stop_at) or self._at_limit():
                return
            if store and story and time.monotonic() - last_save > DRAFT_EVERY:
                store.save_draft(story.id, MODEL, self.text, self.owner)
                last_save = time.monotonic()

    def _at_limit(self) -> bool:
        return at_limit(self.chars, self.limit, self.whole_words)

    def _at_stop(self, stop_at: str) -> bool:
        return at_stop(self.chars, stop_at)

    def close(self) -> Turn | None:
        """Save what was generated as the model's turn (nothing if no char was)."""
        if self._closed:
            return self.turn
        self._closed = True
        LIVE_WRITERS.discard(self.owner)
        s = self.session
        if not self.chars:
            if s.store and s.story:
                s.store.drop_draft(s.story.id)
            return None
        written = self._gen.state
        if self._adapted:  # the story's states are the base model's: it reads this turn after it (catch_up)
            self.turn = Turn(MODEL, self.text)
            s._commit(self.turn, written=written, lazy=True)
        else:
            self.turn = Turn(MODEL, self.text, pack_state(written), s.loaded.fingerprint)
            s._commit(self.turn, written, written)
        return self.turn

    def run(self) -> Turn | None:
        """Generate to the end (no streaming) and save."""
        for _ in self:
            pass
        return self.close()

    def __enter__(self) -> "Continuation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def at_limit(c: list[str], limit: int, whole_words: bool) -> bool:
    """Whether a turn of chars `c` has reached its limit (with `whole_words`, the end of a word past it)."""
    n = len(c)
    if not whole_words:
        return n >= limit
    return n >= limit + WORD_SLACK or (n >= limit and c[-1].isspace())


def at_stop(c: list[str], stop_at: str) -> bool:
    """Whether a turn of chars `c` ends at a sentence's or a paragraph's end, as `stop_at` asks."""
    if stop_at == "paragraph":
        return len(c) >= 2 and c[-1] == "\n" and c[-2] == "\n"
    if stop_at == "sentence" and c[-1].isspace():
        i = len(c) - 2
        while i >= 0 and c[i] in CLOSERS:
            i -= 1
        return i >= 0 and c[i] in SENTENCE_END
    return False

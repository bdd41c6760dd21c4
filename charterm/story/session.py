"""A story written by a person and the model together.

The session holds the model, the story's turns (who wrote what), the LSTM state after every
turn (so undo is exact and instant), and the sampling settings. The story text is the source
of truth: a state that is missing, or belongs to another model, is rebuilt by feeding the text
(its last `context_chars` chars). With a `Store`, each turn is committed as it ends.

No UI code: the app and the CLI both drive this.
"""

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from charterm.engine import candidates
from charterm.engine.bans import Bans
from charterm.engine.checkpoint import LoadedModel, pack_state, unpack_state
from charterm.engine.model import State
from charterm.engine.sampling import Stepper, run_ids
from charterm.engine.text import FoldReport
from charterm.errors import UsageError
from charterm.settings import STOP_AT, Settings  # noqa: F401 (re-exported)
from charterm.story import learning
from charterm.story.choices import Choices
from charterm.story.continuation import DRAFT_EVERY, WORD_SLACK, Continuation  # noqa: F401 (re-exported)
from charterm.story.learning import READ_CHARS, Learner, one_thread, relearn_since
from charterm.story.store import MODEL, PERSON, Store, Story, StoryChanged, Turn, owner_alive


def model_path_for(story: Story | None, given=None, fallback=None) -> tuple[Path, str | None]:
    """The model a story opens with: `given`, else the story's own if the file is still there,
    else `fallback` (default: the shipped model). Also returns a notice if the story's is gone."""
    if given:
        return Path(given), None
    if fallback is None:
        from charterm.paths import default_model_path

        fallback = default_model_path()
    if story is not None and story.model_path:
        if Path(story.model_path).is_file():
            return Path(story.model_path), None
        return Path(fallback), f"the story's model {story.model_path} is gone; using {Path(fallback).name}"
    return Path(fallback), None


class Session:
    def __init__(
        self,
        loaded: LoadedModel,
        store: Store | None = None,
        story: Story | None = None,
        settings: Settings | None = None,
        precision: str = "int8",
        context_chars: int = 20_000,
    ):
        self.store = store
        self.story = story
        self.context_chars = context_chars
        self.precision = precision
        self.notices: list[str] = []  # things the person should be told (reloads, recoveries)
        self.reloads = 0  # times `sync` found the story changed elsewhere and reloaded it
        self.turns: list[Turn] = list(story.turns) if story else []
        self.settings = settings or Settings.from_dict(story.settings if story else {})
        self._rng = random.Random(self.settings.seed)
        self._lock = threading.RLock()
        self.learner = None  # the story's adapted weights (charterm.story.learning), when adaptation is on
        self._set_model(loaded)
        if store and story and loaded.path and story.model_path != str(Path(loaded.path).resolve()):
            story.model_path = str(Path(loaded.path).resolve())  # the story reopens with the model last used
            store.set_model(story.id, story.model_path)
        if store and story and story.draft is not None and not owner_alive(story.draft_owner):
            recovered = store.recover_draft(story.id)
            if recovered is not None:
                self.sync(quiet=True)
                self.notices.append(f"recovered {len(recovered.text):,} chars the model wrote before charterm stopped")
        self.ensure_state(len(self.turns) - 1)
        self._start_learning()

    @classmethod
    def open(cls, store: Store, name: str, loaded: LoadedModel, **kw) -> "Session":
        story = store.open(name, str(Path(loaded.path).resolve()) if loaded.path else None)
        return cls(loaded, store, story, **kw)

    # --- what the story is --------------------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.turns)

    def text_before(self, bans) -> str:
        """The end of the story a banned text could begin in: as long as the longest of `bans`."""
        longest, out = max(map(len, bans), default=0), ""
        for t in reversed(self.turns):
            if len(out) >= longest:
                break
            out = t.text + out
        return out[len(out) - longest :] if longest else ""

    @property
    def name(self) -> str | None:
        return self.story.name if self.story else None

    @property
    def state(self) -> State:
        return self.ensure_state(len(self.turns) - 1)

    def runs(self) -> list[tuple[str, str]]:
        """(author, text) per turn, for display."""
        return [(t.author, t.text) for t in self.turns]

    def ensure_state(self, i: int) -> State:
        """The LSTM state after turn i (-1: before the story): from memory, else from the store's
        cache if this model made it, else rebuilt from the text, then kept in memory and written
        to the store's cache."""
        with self._lock:
            if i < 0:
                return self._start
            if self._known(i):
                return self._states[i]
            turn = self.turns[i]
            # walk back to a known state within the context window, else start fresh
            j, chars = i - 1, len(turn.text)
            while j >= 0 and chars < self.context_chars and not self._known(j):
                chars += len(self.turns[j].text)
                j -= 1
            if j >= 0 and chars < self.context_chars:
                text, state = "".join(t.text for t in self.turns[j + 1 : i + 1]), self._states[j]
            else:
                text = "".join(t.text for t in self.turns[: i + 1])[-self.context_chars :]
                state = self._start
            state = self._run_text(text, state)
            self._states[i] = state
            if self.store and turn.id is not None:
                turn.state, turn.fingerprint = pack_state(state), self.loaded.fingerprint
                self.store.save_state(turn.id, turn.state, turn.fingerprint)
            return state

    def _known(self, j: int) -> bool:
        """Whether the state after turn j is at hand (in memory, or a readable cache made by this
        model, which is then loaded into memory)."""
        if self._states[j] is None and self.turns[j].fingerprint == self.loaded.fingerprint:
            self._states[j] = unpack_state(self.turns[j].state, self.loaded)
        return self._states[j] is not None

    # --- writing ------------------------------------------------------------------------------

    def append_person_turn(self, text: str) -> FoldReport:
        """The person's turn: save it, and run their text through the LSTM as one sequence (with
        adaptation on: learn it, what `prepare` has not learned yet, and the base model reads it
        after the model's turn: `catch_up`). Chars outside the model's vocabulary are folded or
        dropped for the model (the story keeps them as typed); the report says which."""
        if not text:
            return FoldReport()
        with self._lock:
            self.sync()
            folded, report = self.loaded.vocab.fold(text)
            if self.learner is not None:
                self._learn_person_turn(Turn(PERSON, text))
                return report
            state = self._run_text(folded, self.state)
            self._commit(Turn(PERSON, text, pack_state(state), self.loaded.fingerprint), state, state)
            return report

    def prepare(self, text: str, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Learn the person's next turn while it is typed (`text`: the prompt as it is now, which
        the app sends the worker): its whole segments, on a copy of the weights, until
        `interrupted()`. The story changes only when `append_person_turn` gets a text that
        starts with it: then Enter leaves only its last few chars to learn."""
        with self._lock:
            if self.learner is None or not text:
                return
            self._learn_to_end()
            key, state_before, written = self._next_turn()
            self.learner.prepare(key, self.learner.ids(text), state_before, written, interrupted)

    def _next_turn(self) -> tuple[tuple, State, State | None]:
        """What learning the next turn starts from: a key for the weights and the turn it follows,
        the base model's state after the story, and the state the adapted weights write from."""
        learner = self.learner
        key = (self.turns[-1].id if self.turns else 0, learner.since, learner.after, learner.adapter.steps)
        written = self.adapted_state() if learner.chars else self.state
        return key, self.ensure_state(len(self.turns) - 1), written

    def _learn_person_turn(self, turn: Turn) -> None:
        """Commit the person's turn and learn it (its base state waits for `catch_up`)."""
        self._learn_to_end()
        key, state_before, written = self._next_turn()
        head = key[0]
        self._commit(turn, lazy=True)
        if (self.turns[-2].id if len(self.turns) > 1 else 0) != head:  # another window's turns came first
            self._learn_to_end()
            return
        self._written[-1] = self.learner.learn(turn, state_before, written, key)

    def continue_(self, chars: int | None = None, whole_words: bool = False) -> "Continuation":
        """The model's turn: iterate the returned Continuation for chars; `close()` saves them.
        With `whole_words`, the turn goes on past the limit to the end of the word (and the space
        after it), so the person's next words don't land in the middle of one."""
        with self._lock:
            self.sync()
            seed = self._rng.getrandbits(32) if self.settings.seed is not None else int.from_bytes(os.urandom(4))
            return Continuation(self, self.settings.chars if chars is None else chars, seed, whole_words)

    def choices(self, k: int, chars: int | None = None, whole_words: bool = False) -> "Choices":
        """K (2-9) continuations of the model's turn at once (charterm.story.choices); `close()` keeps them as
        versions of one turn, the first shown."""
        with self._lock:
            self.sync()
            seed = self._rng.getrandbits(32) if self.settings.seed is not None else int.from_bytes(os.urandom(4))
            return Choices(self, k, self.settings.chars if chars is None else chars, seed, whole_words)

    def undo(self) -> Turn | None:
        """Go back one turn: the story is the path to the turn before, with exactly the state (and
        the learned weights) it had there. The turn is kept: redo goes forward to it again."""
        with self._lock:
            self.sync()
            if not self.turns:
                return None
            turn = self.turns[-1]
            if self.learner is not None and turn.id == self.learner.after:
                self.learner.forget(turn)  # from memory if it can; _adopt learns again if not
            if not (self.store and self.story):
                self._states.pop()
                self._written.pop()
                return self.turns.pop()
            self._move(turn.parent, self.story.tip)
            return turn

    def redo(self) -> Turn | None:
        """Go forward one turn towards where undo came back from (None: nothing to redo)."""
        with self._lock:
            self.sync()
            story = self._need_story("redo")
            head = self.turns[-1].id if self.turns else None
            step, at = None, story.tip
            while at is not None and at != head:
                step, at = at, self._parent_of(at)
            if step is None or at != head:
                return None
            self._move(step, story.tip)
            return self.turns[-1]

    def retry(self, chars: int | None = None, whole_words: bool = False) -> "Continuation":
        """Write the model's last turn again, as a new version beside it (the old one is kept)."""
        with self._lock:
            self.sync()
            if self.turns and self.turns[-1].author == MODEL:
                self.undo()
            return self.continue_(chars, whole_words)

    def catch_up(self, interrupted: Callable[[], bool] = lambda: False) -> bool:
        """The work a turn leaves for after it, which the worker does when idle (whatever needs a
        part of it sooner does that part itself): the base model's state after each last turn
        that has none, and the weights after the story learned (another window's turns) and
        packed for writing. Stops between turns once `interrupted()`; returns whether the learned
        weights changed."""
        with self._lock:
            learner, changed = self.learner, False
            if learner is not None:
                before = (learner.after, learner.chars)
                self._learn_to_end()
                changed = (learner.after, learner.chars) != before
                if learner.chars:
                    learner.stepper(self.stepper.precision)
            j = len(self.turns)
            while j > 0 and self._states[j - 1] is None and self.turns[j - 1].state is None:
                j -= 1
            for i in range(j, len(self.turns)):
                if interrupted():
                    break
                self.ensure_state(i)
            return changed

    # --- the tree of turns ---------------------------------------------------------------------

    def versions(self, i: int = -1) -> tuple[int, int]:
        """(k, n): turn i of the path is version k of the n at its place in the story."""
        if not self.turns or not self.story:
            return 1, 1
        turn = self.turns[i]
        siblings = self.story.versions(turn)
        return siblings.index(turn.id) + 1 if turn.id in siblings else 1, len(siblings)

    def switch_version(self, step: int) -> tuple[int, int]:
        """Show another version of the last turn (`step` -1: the one before, +1: the one after),
        with the branch under it; returns the new (k, n)."""
        with self._lock:
            self.sync()
            story = self._need_story("versions")
            if not self.turns:
                raise UsageError("the story has no turn yet")
            siblings = story.versions(self.turns[-1])
            k = siblings.index(self.turns[-1].id) + step
            if not 0 <= k < len(siblings):
                raise UsageError(f"no version {k + 1}: this turn has {len(siblings)}")
            end = story.branch_end(siblings[k])
            self._move(end, end)
            return self.versions()

    def checkout(self, turn_id: int | None) -> None:
        """Make the path to a turn the story (None: before the first); what came after it stays
        as a branch, and what is written next starts a new one."""
        with self._lock:
            self.sync()
            story = self._need_story("checkout")
            self._move(turn_id, story.branch_end(turn_id))

    def edit(self, i: int, text: str) -> Turn:
        """A new version of turn i of the path with `text`, by the same author, as a branch from the
        turn before it; the story continues from it (the old version is kept)."""
        with self._lock:
            self.sync()
            self._need_story("edit")
            if not text:
                raise UsageError("an edited turn needs some text")
            old = self.turns[i]
            self._move(old.parent, old.parent)
            if old.author == PERSON:
                self.append_person_turn(text)
            else:
                self.append_model_text(text)
            return self.turns[-1]

    def tree(self) -> list[dict]:
        """Every turn of the story, oldest first (see protocol.Turns)."""
        story = self._need_story("the tree of turns")
        path = {t.id for t in self.turns}
        return [
            {"id": tid, "parent": parent or 0, "author": author, "start": start, "chars": n, "current": tid in path}
            for tid, parent, author, start, n in self.store.tree(story.id)
        ]

    def _need_story(self, what: str) -> Story:
        if not (self.store and self.story):
            raise UsageError(f"{what} needs a saved story (--story NAME)")
        return self.story

    def _parent_of(self, turn_id: int) -> int | None:
        for parent, kids in self.story.children.items():
            if turn_id in kids:
                return parent
        return None

    def _move(self, head: int | None, tip: int | None) -> None:
        """Move the story's head (one transaction) and take the path to it."""
        self.story.revision = self.store.move_head(self.story.id, self.story.revision, head, tip)
        fresh = self.store.load(self.story.name)
        if fresh is None:
            raise StoryChanged(f"the story {self.story.name!r} was deleted in another window")
        self._adopt(fresh)

    def update_settings(self, **changes) -> Settings:
        """Change sampling settings (validated) and save them with the story."""
        with self._lock:
            new = self.settings.replace(**changes)
            if new.seed != self.settings.seed:
                self._rng = random.Random(new.seed)
            old, self.settings = self.settings, new
            if self.store and self.story:
                self.store.set_settings(self.story.id, new.to_dict())
            if new.adapt != old.adapt:
                self.save_adaptation()
                self.learner = None
                self._written = [None] * len(self.turns)
                self._start_learning()
            return new

    def switch_model(self, loaded: LoadedModel) -> None:
        """Use another model: the text stays, the state is rebuilt by feeding it to the new model."""
        with self._lock:
            self.save_adaptation()
            self._set_model(loaded)
            self.ensure_state(len(self.turns) - 1)
            self.learner = None
            self._start_learning()
            if self.store and self.story:
                self.story.model_path = str(Path(loaded.path).resolve()) if loaded.path else None
                self.store.set_model(self.story.id, self.story.model_path)

    def sync(self, quiet: bool = False) -> bool:
        """If another writer changed the story since we read it, reload it (keeping the states
        of the turns we share) and say so in `notices`. Returns whether it reloaded."""
        if not (self.store and self.story):
            return False
        with self._lock:
            if self.store.revision(self.story.id) == self.story.revision:
                return False
            fresh = self.store.load(self.story.name)
            if fresh is None:
                raise StoryChanged(f"the story {self.story.name!r} was deleted in another window")
            before = len(self.turns)
            self._adopt(fresh)
            self.reloads += 1
            if not quiet:
                self.notices.append(
                    f"the story was changed in another window; reloaded it ({before} -> {len(self.turns)} turns)"
                )
            return True

    def _adopt(self, fresh: Story) -> None:
        """Take the story as the store has it now, keeping the states of the turns the paths share
        (a state depends on every turn before it), and the learned weights the rule gives."""
        states: list[State | None] = [None] * len(fresh.turns)
        written = list(states)
        for k, (old, new) in enumerate(zip(self.turns, fresh.turns, strict=False)):
            if (old.id, old.author, old.text) != (new.id, new.author, new.text):
                break
            states[k], written[k] = self._states[k], self._written[k]
        self.story, self.turns, self._states, self._written = fresh, list(fresh.turns), states, written
        if self.learner is not None and not self.learner.matches(self.turns):
            self._learn_to_end()

    # --- adaptation (charterm.story.learning) --------------------------------------------------------

    def generation_stepper(self) -> Stepper:
        """The weights the model writes with: adapted once it has learned something."""
        if self.learner is not None and self.learner.chars:
            return self.learner.stepper(self.stepper.precision)
        return self.stepper

    def writer(self) -> tuple[Stepper, State]:
        """The weights the model's next turn is written with, and the state it starts from."""
        with self._lock:
            stepper = self.generation_stepper()
            return stepper, (self.state if stepper is self.stepper else self.adapted_state())

    def adapted_state(self) -> State:
        """The state the adapted weights write from at the end of the story: the state the model
        ended its turn in, or the turns after it read by the writing weights; where no such state
        is at hand (a story just opened), they read the story's last READ_CHARS chars or more
        (whole turns) from the base model's state before them."""
        with self._lock:
            j, chars = len(self.turns) - 1, 0
            while j >= 0 and self._written[j] is None and chars < READ_CHARS:
                chars += len(self.turns[j].text)
                j -= 1
            state = self._written[j] if j >= 0 and self._written[j] is not None else self.ensure_state(j)
            folded, _ = self.loaded.vocab.fold("".join(t.text for t in self.turns[j + 1 :]))
            if folded:
                with one_thread():
                    ids = [self.loaded.vocab.index[c] for c in folded]
                    _, state = run_ids(self.learner.adapter.model, ids, state)
            if self.turns:
                self._written[-1] = state
            return state

    def adaptation(self) -> dict:
        """Whether the story adapts, and the learner's figures."""
        return {"on": self.learner is not None, **(self.learner.figures() if self.learner else {})}

    def reset_adaptation(self) -> None:
        """Forget what was learned: the base weights again, learning only the turns from now on."""
        with self._lock:
            if self.learner is None:
                raise UsageError("adaptation is off for this story; /adapt on turns it on")
            self.learner = Learner(self.loaded, since=self.turns[-1].id if self.turns else 0)
            self.learner.saved = False
            self._written = [None] * len(self.turns)
            self.save_adaptation()

    def save_adaptation(self) -> None:
        """Keep where learning starts, and the adapted weights once there are SAVE_CHARS learned
        (they are a cache: the rule can always learn them again)."""
        learner = self.learner
        if learner is None or learner.saved or not (self.store and self.story):
            return
        data = learner.snapshot().to_bytes() if learner.chars >= learning.SAVE_CHARS else b""
        self.store.save_adaptation(self.story.id, self.loaded.fingerprint, learner.since, learner.after, data)
        learner.saved = True

    def _start_learning(self) -> None:
        """With adaptation on: the weights the story had, from the store if they were saved for
        this model and this story's text, else learned again (a new model: the last
        RELEARN_CHARS of the person's text)."""
        if not (self.settings.adapt and self.store and self.story):
            return
        saved = self.store.load_adaptation(self.story.id)
        if saved is not None and saved[0] == self.loaded.fingerprint:
            self.learner = Learner(self.loaded, since=saved[1])
            if self.learner.restore(saved[3]) and self.learner.matches(self.turns):
                self.learner.saved = True
                return
        else:
            self.learner = Learner(self.loaded, since=relearn_since(self.turns))
        self._learn_to_end()

    def _learn_to_end(self) -> None:
        """Bring the weights to those the rule gives after the last turn: learn the turns after
        the ones already learned, or (after an undo or another window's change) learn again."""
        learner, turns = self.learner, self.turns
        if learner.after == learner.last_learnable(turns):
            return
        done = next((i for i, t in enumerate(turns) if t.id == learner.after), None) if learner.after else -1
        if done is None or learner.last_learnable(turns[: done + 1]) != learner.after:
            learner.relearn(turns, lambda i: self.ensure_state(i - 1))
        else:
            for i in range(done + 1, len(turns)):
                if learner.last_learnable(turns[: i + 1]) == turns[i].id:
                    learner.learn(turns[i], self.ensure_state(i - 1))

    # --- what the model would write next (charterm/engine/candidates.py) ------------------------------

    def next_words(self, n: int = candidates.WORDS) -> list[candidates.Candidate]:
        """The model's `n` (1-9) most likely next words at the end of the story, most likely first."""
        n = candidates.check_words(n)
        with self._lock:
            writer = self.generation_stepper()  # the weights and state the model writes from, as Continuation's
            adapted = writer is not self.stepper
            model = self.learner.adapter.model if adapted else self.loaded.model
            stepper = writer if writer.precision == "fp32" else Stepper(model, "fp32")
            state = self.adapted_state() if adapted else self.state
            bans = Bans(self.settings.bans)
            before = self.text_before(self.settings.bans)
            return candidates.next_words(stepper, self.loaded.vocab, state, n, bans=bans, before=before)

    def append_model_text(self, text: str) -> list[float]:
        """A model's turn of given text (a word the person picked from `next_words`): run it
        through the LSTM and save it. Returns the probability the base model (whose states the
        story keeps) gave each char; empty if folding onto the vocabulary changed the text."""
        if not text:
            return []
        with self._lock:
            self.sync()
            folded, _ = self.loaded.vocab.fold(text)
            state = self.state
            ids = [self.loaded.vocab.index[c] for c in folded]
            probs, state = candidates.char_probs(self.loaded.model, ids, state)
            self._commit(Turn(MODEL, text, pack_state(state), self.loaded.fingerprint), state)
            return probs if folded == text else []

    # --- internals ----------------------------------------------------------------------------

    def _set_model(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.loaded.model.eval()
        self.stepper = Stepper(loaded.model, self.precision)
        vocab = loaded.vocab
        start = "\n" if "\n" in vocab.index else vocab.chars[0]
        self._start = self._run_text(start, None)
        self._states: list[State | None] = [None] * len(self.turns)
        self._written: list[State | None] = [None] * len(self.turns)  # the writing state after each turn

    def _run_text(self, text: str, state: State | None) -> State:
        folded, _ = self.loaded.vocab.fold(text)
        if not folded:
            return state if state is not None else self.loaded.model.init_state(1, "cpu")
        ids = [self.loaded.vocab.index[c] for c in folded]
        _, state = run_ids(self.loaded.model, ids, state)
        return state

    def logits(self, state: State, stepper: Stepper | None = None) -> torch.Tensor:
        """The next-char logits implied by a state (the read-out of the top layer's h)."""
        return (stepper or self.stepper).fc(state[0][-1].reshape(1, -1)).reshape(-1)

    def _commit(self, turn: Turn, state: State | None = None, written: State | None = None, lazy=False) -> None:
        """Append a turn to the story (one transaction). If another writer got there first, reload
        and put this turn after theirs: nothing is lost, nothing is doubled. `state`: the base
        model's after it (None: read now, or with `lazy` when needed); `written`: the state the
        model's writing weights ended in, if they wrote it."""
        with self._lock:
            for _ in range(5):
                if self.store and self.story:
                    try:
                        self.story.revision = self.store.append_turn(self.story.id, self.story.revision, turn)
                    except StoryChanged:
                        self.sync()
                        state = written = None
                        turn.state = turn.fingerprint = None
                        continue
                self.turns.append(turn)
                self._states.append(state)
                self._written.append(written)
                if self.story:
                    self.story.children.setdefault(turn.parent, []).append(turn.id)
                    self.story.tip = turn.id
                if state is None and not lazy:
                    self.ensure_state(len(self.turns) - 1)
                return
            raise StoryChanged("the story keeps changing in another window; try again")

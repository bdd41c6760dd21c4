"""Adaptation at the scale of a story: what to adapt, on whose text, and a name it learns.

    python benchmarks/adapt_story.py [--data ../shared/data/anna.txt] [--turns 40] [--seed 1]

A story is simulated from the validation split (text the model was not trained on): the
person's turns are consecutive 150-250-char pieces of the book, and between them the shipped
model writes 300 chars (top-k 5, temperature 1, from the base model, once, so every variant
reads the same story). Each variant reads the story turn by turn; every person turn is scored
before the model learns from it. Variants: the base model; `part` all or readout; learning
from the person's turns only or from every turn. Then the default a turn behind: each person's
turn scored by the weights that learned the person's turns up to the one before the last, as if
a turn were learned only after the model's answer to it (it is not: this is why).
Then what adapting costs in a session, and a name test: a passage from the first 30,000 chars
of the split with a character renamed, written as the person's turns; the story's model writes
on from a late mention's first letters.
"""

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charterm.engine.adapt import Adapter  # noqa: E402
from charterm.engine.checkpoint import load_model  # noqa: E402
from charterm.engine.corpus import open_corpus  # noqa: E402
from charterm.engine.sampling import CharSampler, Generation, Stepper  # noqa: E402
from charterm.engine.text import split_train_val  # noqa: E402
from charterm.story.learning import KEEP  # noqa: E402

VARIANTS = [  # (label, part, lr, learn from the model's turns too, each turn read from the base model's state)
    ("all weights, person's text, lr 3e-4, states carried", "all", 3e-4, False, False),
    ("all weights, every turn, lr 3e-4, states carried", "all", 3e-4, True, False),
    ("all weights, person's text, lr 5e-4", "all", 5e-4, False, True),
    ("all weights, every turn, lr 5e-4", "all", 5e-4, True, True),
    ("all weights, person's text, lr 1e-3 (the default)", "all", 1e-3, False, True),
    ("all weights, every turn, lr 1e-3", "all", 1e-3, True, True),
    ("all weights, person's text, lr 2e-3", "all", 2e-3, False, True),
    ("read-out only, person's text, lr 1e-3", "readout", 1e-3, False, True),
    ("read-out only, every turn, lr 1e-3", "readout", 1e-3, True, True),
]


def simulate_story(loaded, text: str, turns: int, rng: random.Random) -> list[tuple[str, list[int]]]:
    """(author, ids) per turn: the book's text for the person, base-model samples between."""
    vocab, stepper = loaded.vocab, Stepper(loaded.model, "fp32")
    story, pos = [], 0
    state = loaded.model.init_state(1)
    with torch.no_grad():
        for _ in range(turns):
            n = rng.randint(150, 250)
            person = [int(i) for i in vocab.encode(text[pos : pos + n])]
            pos += n
            logits, state = loaded.model(torch.tensor([person]), state)
            gen = Generation(stepper, logits[0, -1], state, CharSampler(5, 1.0, rng.getrandbits(32)))
            it = iter(gen)
            model_ids = [next(it) for _ in range(300)]
            state = gen.state
            story += [("person", person), ("model", model_ids)]
    return story


def base_states(loaded, story) -> list:
    """The base model's state before each turn."""
    reader, state, out = Adapter(loaded.model, 0.0, 50), None, []
    for _, ids in story:
        out.append(state)
        _, _, state = reader.read(ids, state, learn=False)
    return out


def read_story(loaded, story, part: str, lr: float, learn_all: bool, resync=None) -> tuple[float, int, float]:
    """(summed loss on the person's turns, their chars, seconds spent learning). With `resync`
    (the base model's states), every turn is read from the base model's state before it, as the
    session does: only the weights carry the adaptation from turn to turn."""
    adapter = Adapter(loaded.model, lr, 50, part)
    state, total, count, learning = None, 0.0, 0, 0.0
    for k, (author, ids) in enumerate(story):
        state = resync[k] if resync else state
        learn = lr > 0 and (author == "person" or learn_all)
        t0 = time.perf_counter()
        loss, n, state = adapter.read(ids, state, learn=learn)
        learning += time.perf_counter() - t0 if learn else 0.0
        if author == "person":
            total, count = total + loss, count + n
    return total, count, learning


def read_lagged(loaded, story, lr: float, resync) -> float:
    """Summed loss on the person's turns, each scored by weights a person's turn behind: all
    weights, the person's text, each turn learned only once the next one is scored."""
    adapter = Adapter(loaded.model, lr, 50, "all")
    total, pending = 0.0, None  # pending: the person's last turn, not learned yet
    for k, (author, ids) in enumerate(story):
        if author != "person":
            continue
        loss, _, _ = adapter.read(ids, resync[k], learn=False)
        total += loss
        if pending is not None:
            adapter.read(story[pending][1], resync[pending])
        pending = k
    return total


def name_test(loaded, text: str, old: str, new: str, mentions: int = 12) -> None:
    """A passage with a character renamed, written into a story as the person's 300-char turns up
    to a late mention's first two letters; then the model writes on greedily (temperature 0),
    with adaptation off and on, as `charterm generate --story` would."""
    import tempfile

    from charterm.engine.adapt import loss_sum
    from charterm.story.session import Session
    from charterm.story.store import Store

    passage, last = text.replace(old, new), -1
    for _ in range(mentions + 1):
        last = passage.index(new, last + 1)
    context = passage[: last + 2]
    turns = [context[i : i + 300] for i in range(0, len(context), 300)]
    print(
        f"\nname test: {old!r} renamed {new!r}; {mentions} mentions in {len(context):,} chars written as "
        f"{len(turns)} turns of the person's; the last ends {context[-40:]!r}"
    )
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "stories.db")
        for adapt in (False, True):
            session = Session.open(store, f"adapt {adapt}", loaded, precision="int8")
            session.update_settings(adapt=adapt, temperature=0.0)
            for turn in turns:
                session.append_person_turn(turn)
            model, state = (
                (session.learner.adapter.model, session.adapted_state()) if adapt else (loaded.model, session.state)
            )
            rest = loss_sum(model, [loaded.vocab.index[c] for c in new[2:]], state) / len(new[2:])
            written = session.continue_(12).run().text
            label = "adapted" if adapt else "base"
            print(f"  {label:8} {rest:.3f} nats/char on {new[2:]!r}; writes {context[-16:] + written!r}")
        store.close()


def cost(loaded, text: str) -> None:
    """What adapting costs in a session: a 300-char person turn learned (scored, stepped, read by
    the stepped weights, the weights packed again for writing), all at Enter and with the turn
    learned as it was typed but for its last 10 chars (`Session.prepare`); and the memory it adds
    (ru_maxrss, this process)."""
    import resource
    import tempfile

    from charterm.story.session import Session
    from charterm.story.store import Store

    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "stories.db")
        session = Session.open(store, "cost", loaded, precision="int8")
        session.update_settings(adapt=False)
        session.continue_(50).run()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        session.update_settings(adapt=True)
        times, typed = [], []
        for k in range(12):
            turn = text[300 * k : 300 * (k + 1)]
            if k % 2:
                session.prepare(turn[:-10])
            t0 = time.perf_counter()
            session.append_person_turn(turn)
            session.generation_stepper()
            (typed if k % 2 else times).append(time.perf_counter() - t0)
            session.continue_(50).run()
            session.catch_up()
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        store.close()
    times.sort()
    typed.sort()
    at_enter, as_typed = times[len(times) // 2], typed[len(typed) // 2]
    print(
        f"\na 300-char person turn with adaptation: {at_enter:.2f} s at Enter, {as_typed:.2f} s "
        f"learned as typed (medians of 6: score, learn, read, pack the weights); peak memory grew by {grown:.0f} MB "
        f"with {KEEP} snapshots kept"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip", type=int, default=30_000, help="start this far into the validation split")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the worker runs
    loaded = load_model(ROOT / "models" / "anna.safetensors")
    corpus = open_corpus(Path(args.data), vocab=loaded.vocab)
    _, val_ids = split_train_val(corpus.ids, loaded.info.get("train_config", {}).get("val_frac", 0.1))
    text = "".join(loaded.vocab.chars[i] for i in val_ids[args.skip :])
    story = simulate_story(loaded, text, args.turns, random.Random(args.seed))
    person_chars = sum(len(ids) for a, ids in story if a == "person")
    print(f"torch {torch.__version__}, 1 thread; a story of {len(story)} turns, {person_chars:,} chars the person's")
    base, count, _ = read_story(loaded, story, "all", 0.0, False)
    print("| variant | person's text, nats/char | gain over base | learning, ms per 300 chars |")
    print("|---|---:|---:|---:|")
    print(f"| base model | {base / count:.4f} | | |")
    resync = base_states(loaded, story)
    for label, part, lr, learn_all, from_base in VARIANTS:
        total, _, seconds = read_story(loaded, story, part, lr, learn_all, resync if from_base else None)
        learned = sum(len(ids) for a, ids in story if a == "person" or learn_all)
        print(
            f"| {label} | {total / count:.4f} | {(base - total) / count:+.4f} | {300 * seconds / learned * 1000:.0f} |"
        )
    lagged = read_lagged(loaded, story, 1e-3, resync)
    label = "all weights, person's text, lr 1e-3, a turn behind"
    print(f"| {label} | {lagged / count:.4f} | {(base - lagged) / count:+.4f} | |")
    cost(loaded, text)
    name_text = "".join(loaded.vocab.chars[i] for i in val_ids[: args.skip])
    name_test(loaded, name_text, "Vronsky", "Velmorth")


if __name__ == "__main__":
    main()

"""Adaptation at the scale of a story: what to adapt, on whose text, and a name it learns.

    python benchmarks/adapt_story.py [--data ../shared/data/anna.txt] [--turns 40] [--seed 1]

A story is simulated from the validation split (text the model was not trained on): the
person's turns are consecutive 150-250-char pieces of the book, and between them the shipped
model writes 300 chars (top-k 5, temperature 1, from the base model, once, so every variant
reads the same story). Each variant reads the story turn by turn; every person turn is scored
before the model learns from it. Variants: the base model; `part` all or readout; learning
from the person's turns only or from every turn. Then a name test: a passage whose main
character is renamed, read (and learned) up to a late mention; the rest of the name is scored
and continued greedily under the base and the adapted model.
"""

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charterm.adapt import Adapter  # noqa: E402
from charterm.checkpoint import load_model  # noqa: E402
from charterm.corpus import open_corpus  # noqa: E402
from charterm.sampling import CharSampler, Generation, Stepper  # noqa: E402
from charterm.text import split_train_val  # noqa: E402

VARIANTS = [  # (label, part, lr, learn from the model's turns too, each turn read from the base model's state)
    ("all weights, person's text", "all", 3e-4, False, False),
    ("all weights, every turn", "all", 3e-4, True, False),
    ("all weights, person's text, lr 5e-4", "all", 5e-4, False, False),
    ("all weights, person's text, lr 5e-4, base states", "all", 5e-4, False, True),
    ("all weights, every turn, lr 5e-4, base states", "all", 5e-4, True, True),
    ("all weights, person's text, lr 1e-3", "all", 1e-3, False, False),
    ("read-out only, person's text", "readout", 1e-3, False, False),
    ("read-out only, every turn", "readout", 1e-3, True, False),
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


def name_test(loaded, text: str, old: str, new: str, lr: float, part: str, mentions: int = 12) -> None:
    vocab = loaded.vocab
    passage, last = text.replace(old, new), -1
    for _ in range(mentions + 1):
        last = passage.index(new, last + 1)
    context, rest = passage[: last + 2], new[2:]
    print(
        f"\nname test ({part}, lr {lr:g}): {old!r} renamed {new!r}, {passage[:last].count(new)} mentions read, "
        f"{len(context):,} chars; prime ends {context[-40:]!r}"
    )
    for label, learn in (("base", False), ("adapted", True)):
        adapter = Adapter(loaded.model, lr, 50, part)
        _, _, state = adapter.read(vocab.encode(context[:-1]), None, learn=learn)
        loss, n, _ = adapter.read(vocab.encode(context[-1] + rest), state, learn=False)
        _, _, state = adapter.read(vocab.encode(context[:-1]), None, learn=False)
        out, logits = [], None
        with torch.no_grad():
            x = torch.tensor([[vocab.index[context[-1]]]])
            for _ in range(12):
                logits, state = adapter.model(x, state)
                nxt = int(logits[0, -1].argmax())
                out.append(vocab.chars[nxt])
                x = torch.tensor([[nxt]])
        print(
            f"  {label:8} rest of the name {rest!r}: {loss / n:.3f} nats/char; greedy: {context[-6:]}{''.join(out)!r}"
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
    name_text = "".join(loaded.vocab.chars[i] for i in val_ids[: args.skip])
    for part, lr in (("all", 3e-4), ("all", 5e-4), ("all", 1e-3), ("readout", 1e-3)):
        name_test(loaded, name_text, "Vronsky", "Velmorth", lr, part)


if __name__ == "__main__":
    main()

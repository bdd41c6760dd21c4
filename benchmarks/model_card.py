"""How good is a model? Validation loss from `charterm eval` (the model's batching, and as one
long row, like a story whose state is carried through it all); the loss of the first chars read
from a zero state (as a new story or `charterm generate` starts), at 256 places in the
validation text; and the share of generated words that occur in the book (10 samples of 1,000
chars, top-k 5, primes "Anna" and "And Levin said" alternating, seeds 1-5), through the real
`charterm` command.

    python benchmarks/model_card.py [--model models/anna.safetensors] [--data ../shared/data/anna.txt]
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRIMES = ("Anna", "And Levin said")
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def charterm(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "charterm", *args], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"charterm {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def cold_start_loss(model_path: str, data: str, places: int = 256, chars: int = 20) -> float:
    """Mean nats/char over the first `chars` chars after a zero state, at evenly spaced places."""
    import torch
    import torch.nn.functional as F

    from charterm.engine.checkpoint import load_model
    from charterm.engine.corpus import open_corpus
    from charterm.engine.text import split_train_val
    from charterm.paths import default_model_path

    loaded = load_model(model_path or default_model_path())
    _, val = split_train_val(open_corpus(data, vocab=loaded.vocab).ids, loaded.info["train_config"]["val_frac"])
    at = range(0, len(val) - chars - 1, (len(val) - chars - 1) // places)[:places]
    ids = torch.from_numpy(val[[i + j for i in at for j in range(chars + 1)]].astype("int64")).view(-1, chars + 1)
    with torch.no_grad():
        logits, _ = loaded.model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--show", type=int, default=700, help="chars of the two first samples to print")
    args = ap.parse_args()
    model = ["--model", args.model] if args.model else []

    book = set(words(Path(args.data).read_text(encoding="utf-8")))
    result = json.loads(charterm("eval", *model, "--data", args.data, "--split", "val", "--json"))
    print(f"val loss {result['loss']:.4f} nats/char over {result['chars']:,} chars ({args.data})")
    one = json.loads(charterm("eval", *model, "--data", args.data, "--split", "val", "--batch-size", "1", "--json"))
    print(f"val loss {one['loss']:.4f} read as one {one['chars']:,}-char row (the state carried through it all)")
    print(f"cold start: {cold_start_loss(args.model, args.data):.4f} nats/char over the first 20 chars from zeros")
    total = known = 0
    for i in range(args.samples):
        prime = PRIMES[i % len(PRIMES)]
        text = charterm(
            "generate", *model, "--prime", prime, "--chars", str(args.chars), "--top-k", "5", "--seed", str(i // 2 + 1)
        )
        generated = words(text[len(prime) :])
        hits = sum(w in book for w in generated)
        total, known = total + len(generated), known + hits
        print(f"sample {i + 1:2d} (prime {prime!r}, seed {i // 2 + 1}): {hits}/{len(generated)} book words")
        if i < len(PRIMES) and args.show:
            print("    " + text[: args.show].replace("\n", "\n    ") + " ...")
    print(f"book words: {known}/{total} = {100 * known / total:.1f}%")


if __name__ == "__main__":
    main()

"""Does a model's carried state stay sane over long text? Validation loss with the state carried
through rows of different lengths, and with it reset every N chars, for a model file or the
weights in a resume state (`*.resume.pt`, loaded with weights_only=True).

    python benchmarks/drift.py MODEL.safetensors [RESUME.pt] [--data ../shared/data/anna.txt]

A model whose loss rises with the row length, and falls when the state is reset, drifts in
evaluation mode (no dropout); stories in the app carry one state through all their text.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from charterm.engine.checkpoint import load_model
from charterm.engine.corpus import open_corpus
from charterm.engine.text import row_starts, split_train_val, window

ROOT = Path(__file__).resolve().parent.parent


def score(model, ids, rows: int, reset_every: int, seq_length: int = 100) -> float:
    starts, n_windows = row_starts(len(ids), rows, seq_length)
    total = count = 0
    state = None
    with torch.no_grad():
        for w in range(n_windows):
            if reset_every and w * seq_length % reset_every == 0:
                state = None
            xs, ys = window(ids, starts, w * seq_length, seq_length)
            logits, state = model(torch.from_numpy(xs), state)
            y = torch.from_numpy(ys).reshape(-1)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y, reduction="sum").item()
            count += y.numel()
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("resume", nargs="?")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    args = ap.parse_args()
    loaded = load_model(args.model)
    if args.resume:
        loaded.model.load_state_dict(torch.load(args.resume, map_location="cpu", weights_only=True)["model"])
    loaded.model.eval()
    _, val = split_train_val(open_corpus(args.data, vocab=loaded.vocab).ids, 0.1)
    print(f"{args.resume or args.model}: validation loss, nats/char ({len(val):,} chars)")
    for rows, reset_every in ((32, 0), (8, 0), (32, 1000), (32, 100)):
        how = f"reset every {reset_every} chars" if reset_every else "carried through each row"
        loss = score(loaded.model, val, rows, reset_every)
        print(f"  {rows:2d} rows of {len(val) // rows:,} chars, {how}: {loss:.4f}")


if __name__ == "__main__":
    main()

"""Dynamic evaluation on the shipped model: the step size chosen on training text, the figure on
the validation split, and what adapting costs.

    python benchmarks/adapt.py [--data ../shared/data/anna.txt] [--tune-chars 30000]
                               [--lrs 1e-4,3e-4,1e-3] [--segment 50] [--val]

The step size is chosen on text other than the chars whose figure is reported: the last
--tune-chars of the model's training split (`--tune-on train`), or the first of the validation
split, then the rest of it is scored with the default (`--tune-on val`). `--val` scores the whole
validation split with the default, as `charterm eval --adapt --split val` does.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charterm.config import ADAPT_LR, ADAPT_SEGMENT  # noqa: E402
from charterm.engine.checkpoint import load_model  # noqa: E402
from charterm.engine.corpus import open_corpus  # noqa: E402
from charterm.engine.evaluate import evaluate_adapting  # noqa: E402
from charterm.engine.text import split_train_val  # noqa: E402
from charterm.paths import default_model_path  # noqa: E402


def score(model, ids, segment, lr, label):
    t0 = time.perf_counter()
    adapted, static, n = evaluate_adapting(model, ids, segment, lr)
    seconds = time.perf_counter() - t0
    print(
        f"| {label} | {lr:g} | {segment} | {n:,} | {static:.4f} | {adapted:.4f} | {static - adapted:+.4f} | "
        f"{seconds:.0f} s ({n / seconds:,.0f} chars/s) |",
        flush=True,
    )
    return adapted, seconds / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    ap.add_argument("--tune-chars", type=int, default=30_000)
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    ap.add_argument("--segment", type=int, default=ADAPT_SEGMENT)
    ap.add_argument(
        "--tune-on",
        choices=["train", "val"],
        default="train",
        help="train: the last --tune-chars of the training split; val: the first of the validation split",
    )
    ap.add_argument("--val", action="store_true", help="also score the whole validation split with the default")
    args = ap.parse_args()
    loaded = load_model(default_model_path())
    corpus = open_corpus(Path(args.data), vocab=loaded.vocab)
    train_ids, val_ids = split_train_val(corpus.ids, loaded.info.get("train_config", {}).get("val_frac", 0.1))
    tune = train_ids[-args.tune_chars :] if args.tune_on == "train" else val_ids[: args.tune_chars]
    where = f"train split, last {len(tune):,}" if args.tune_on == "train" else f"val split, first {len(tune):,}"
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {loaded.path.name}")
    print("| text | lr | segment | chars | static | adapted | gain | time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    per_char = 0.0
    for lr in (float(x) for x in args.lrs.split(",")):
        _, per_char = score(loaded.model, tune, args.segment, lr, where)
    if args.tune_on == "val":
        score(loaded.model, val_ids[args.tune_chars :], args.segment, ADAPT_LR, "val split, the rest (the default)")
    if args.val:
        _, per_char = score(loaded.model, val_ids, args.segment, ADAPT_LR, "val split (the default)")
    extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss) / 1024
    print(f"adapting a 300-char turn: {300 * per_char:.2f} s; peak memory grew by {extra_mb:.0f} MB while adapting")


if __name__ == "__main__":
    main()

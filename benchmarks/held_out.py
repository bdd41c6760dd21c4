"""How hard is the notebook's validation split? The same `charterm train --max-time SECONDS` run,
each time with a different tenth of the book held out: the tenth is moved to the end of a copy of
the text, where the usual 90/10 split makes it the validation set. Tenth 10 is the notebook's own
split (the end of the book).

    python benchmarks/held_out.py --seconds 300 --tenths 2 5 8 10 [--data ../shared/data/anna.txt]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from recipes import RECIPES, ROOT, run

sys.path.insert(0, str(ROOT))

from charterm.engine.text import split_train_val  # noqa: E402


def with_tenth_last(text: str, tenth: int) -> str:
    """`text` with its `tenth`-th tenth (1-based, as long as the usual validation split) moved to
    the end."""
    n = len(text)
    size = len(split_train_val(range(n), 0.1)[1])
    start = min((tenth - 1) * n // 10, n - size)
    return text[:start] + text[start + size :] + text[start : start + size]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--tenths", type=int, nargs="+", default=[2, 5, 8, 10])
    ap.add_argument("--recipe", default="defaults", choices=list(RECIPES))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    args = ap.parse_args()
    text = Path(args.data).read_text(encoding="utf-8")
    print(f"| tenth held out ({args.recipe}, {args.seconds:.0f} s each) | best val loss | steps |", flush=True)
    print("|---|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as d:
        for tenth in args.tenths:
            path = Path(d) / f"tenth{tenth}.txt"
            path.write_text(with_tenth_last(text, tenth), encoding="utf-8")
            _, val, steps, _, _ = run(f"tenth {tenth}", RECIPES[args.recipe], args.seconds, str(path))
            print(f"| {tenth} | {val:.4f} | {steps:,} |", flush=True)


if __name__ == "__main__":
    main()

"""Which training recipe learns fastest per CPU-second? Each recipe trains with `charterm train
--max-time SECONDS` on the same text and split; the table shows the best validation loss.

    python benchmarks/recipes.py --seconds 300 [--data ../shared/data/anna.txt] [--only NAME ...]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RECIPES = {
    "defaults": [],
    "notebook": ["--preset", "notebook"],
    "512x2 b32 lr3e-3": ["--hidden", "512", "--batch-size", "32", "--lr", "3e-3"],
    "512x2 b64 lr3e-3 drop0.1": ["--hidden", "512", "--batch-size", "64", "--lr", "3e-3", "--dropout", "0.1"],
    "384x2 b32 lr3e-3": ["--hidden", "384", "--batch-size", "32", "--lr", "3e-3"],
    "384x2 b32 lr5e-3": ["--hidden", "384", "--batch-size", "32", "--lr", "5e-3"],
    "256x2 b32 lr5e-3": ["--hidden", "256", "--batch-size", "32", "--lr", "5e-3"],
    "384x2 b16 lr3e-3": ["--hidden", "384", "--batch-size", "16", "--lr", "3e-3"],
    "384x2 b32 seq50 lr3e-3": ["--hidden", "384", "--batch-size", "32", "--seq-length", "50", "--lr", "3e-3"],
    "256x2 b16 lr5e-3": ["--hidden", "256", "--batch-size", "16", "--lr", "5e-3"],
    "256x2 b32 lr1e-2": ["--hidden", "256", "--batch-size", "32", "--lr", "1e-2"],
    "256x2 b8 lr5e-3": ["--hidden", "256", "--batch-size", "8", "--lr", "5e-3"],
    "256x2 b16 seq50 lr5e-3": ["--hidden", "256", "--batch-size", "16", "--seq-length", "50", "--lr", "5e-3"],
    "256x3 b16 lr5e-3": ["--hidden", "256", "--layers", "3", "--batch-size", "16", "--lr", "5e-3"],
    "256x2 b16 lr8e-3 to 1%": ["--hidden", "256", "--batch-size", "16", "--lr", "8e-3", "--min-lr-frac", "0.01"],
    "256x2 b16 lr5e-3 to 1%": ["--hidden", "256", "--batch-size", "16", "--lr", "5e-3", "--min-lr-frac", "0.01"],
}


def run(name, args, seconds, data):
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            sys.executable,
            "-m",
            "charterm",
            "train",
            "--data",
            data,
            "--out",
            f"{d}/m.safetensors",
            "--max-time",
            str(seconds),
            "--progress",
            "jsonl",
            *args,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        done = [e for e in events if e["event"] == "done"]
        if not done:
            return name, float("nan"), 0, 0.0, out.stderr.strip().splitlines()[-1:]
        steps = [e for e in events if e["event"] == "step"]
        start = events[0]
        chars = done[0]["step"] * start["config"]["batch_size"] * start["config"]["seq_length"]
        return name, done[0]["best_val_loss"], done[0]["step"], chars / done[0]["elapsed"], steps[-1]["loss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    names = args.only or list(RECIPES)
    print(f"| recipe ({args.seconds:.0f} s of CPU each) | best val loss | steps | chars/s |", flush=True)
    print("|---|---:|---:|---:|", flush=True)
    for name in names:
        n, val, steps, rate, _ = run(name, RECIPES[name], args.seconds, args.data)
        print(f"| {n} | {val:.4f} | {steps:,} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

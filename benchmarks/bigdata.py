"""Memory and start-up time of `charterm train` on a text far larger than the book.

Builds a folder of N copies of anna.txt (250 copies: about 500 MB), then runs `charterm train`
under `/usr/bin/time -v` three times, each for a few steps at the notebook's size (512x2):
on the folder with an empty token cache (count + encode), on the folder again (cache hit),
and on anna.txt alone (the baseline: the model's own memory). Prints a markdown table.

    python benchmarks/bigdata.py [--copies 250] [--steps 50] [--work /tmp/charterm-bigdata]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANNA = ROOT.parent / "shared" / "data" / "anna.txt"


def train(data: Path, out: Path, cache: Path, steps: int) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "charterm", "train", "--data", str(data), "--out", str(out)]
    cmd += ["--hidden", "512", "--batch-size", "32", "--max-steps", str(steps), "--eval-every", "100000"]
    cmd += ["--eval-chars", "200000", "--force", "--progress", "jsonl"]
    launched = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CHARTERM_CACHE": str(cache)})
    if r.returncode != 0:
        sys.exit(f"train failed: {r.stderr[-2000:]}")
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    start = next(e for e in events if e["event"] == "start")
    done = events[-1]
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return {
        "chars": start["chars"],
        "ready_s": start["time"] - launched,  # launch to the first step: imports, counting, encoding
        "peak_mb": rss_kb / 1024,
        "chars_per_sec": done["step"] * 32 * 100 / done["elapsed"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=250)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--work", default="/tmp/charterm-bigdata")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    books = work / "books"
    books.mkdir(parents=True)
    for i in range(args.copies):
        (books / f"copy{i:04d}.txt").symlink_to(ANNA)  # a folder of texts, as a user would have
    size = args.copies * ANNA.stat().st_size
    cache = work / "cache"
    rows = [
        ("folder, first run (counts and encodes)", train(books, work / "m.safetensors", cache, args.steps)),
        ("folder, second run (token cache hit)", train(books, work / "m.safetensors", cache, args.steps)),
        ("anna.txt alone (baseline)", train(ANNA, work / "a.safetensors", work / "cache2", args.steps)),
    ]
    print(f"{args.copies} copies of anna.txt: {size / 1e6:,.0f} MB; LSTM 512x2, batch 32, {args.steps} steps\n")
    print("| run | text chars | launch to first step | peak memory (max RSS) | chars/s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['chars']:,} | {r['ready_s']:.1f} s | {r['peak_mb']:,.0f} MB | {r['chars_per_sec']:,.0f} |"
        )
    token_files = list((cache / "tokens").glob("*.uint8"))
    print(f"\ntoken file: {sum(p.stat().st_size for p in token_files) / 1e6:,.0f} MB (uint8)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

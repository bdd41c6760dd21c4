"""The GPU check: a few hundred steps at the notebook's configuration on CUDA, plain and under
`torchrun --nproc_per_node=1`, reporting chars/s and the loss. Needs a CUDA GPU and anna.txt.

    python benchmarks/gpu_check.py [--steps 300] [--data ../shared/data/anna.txt]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ["--preset", "notebook"]  # 512x2, dropout 0.5, batch 128, seq 100, lr 1e-3


def run(launcher: list[str], data: str, steps: int, out: Path) -> dict:
    cmd = [*launcher, "-m", "charterm", "train", "--data", data, "--out", str(out), "--force", *NOTEBOOK]
    cmd += ["--max-steps", str(steps), "--eval-every", str(steps), "--device", "cuda", "--progress", "jsonl"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    steps_ev = [e for e in events if e["event"] == "step"]
    done = events[-1]
    warm = [e for e in steps_ev if e["step"] >= 20]  # leave out cuDNN's first-step set-up
    a, b = warm[0], warm[-1]
    rate = (b["step"] - a["step"]) * 128 * 100 / (b["elapsed"] - a["elapsed"])
    return {"chars_per_sec": rate, "loss": steps_ev[-1]["loss"], "val": done["best_val_loss"]}


def main():
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here")
    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as d:
        plain = run([sys.executable], args.data, args.steps, Path(d) / "a.safetensors")
        ddp = run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"],
            args.data,
            args.steps,
            Path(d) / "b.safetensors",
        )
    print(f"{gpu}, {date.today()}, torch {torch.__version__}; notebook settings, {args.steps} steps, bf16 autocast\n")
    print("| run | chars/s | train loss | val loss |")
    print("|---|---:|---:|---:|")
    for name, r in (("charterm train", plain), ("torchrun --nproc_per_node=1", ddp)):
        print(f"| {name} | {r['chars_per_sec']:,.0f} | {r['loss']:.4f} | {r['val']:.4f} |")


if __name__ == "__main__":
    main()

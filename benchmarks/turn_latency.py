"""How soon a turn starts and how soon it is committed, through the Python API (`Session`).

    python benchmarks/turn_latency.py [--old ../old-tree] [--rounds 3] [--person 300] [--chars 300,12000]

A story that learns (adaptation on, int8, one torch thread, as the worker runs) is built from the
book's validation text: three warm-up rounds of a person's turn and a 300-char model turn. Then,
for each --chars N: the person's next --person chars, and a model turn of N chars (exactly, no
whole words). Measured per turn:

first char   from the start of `append_person_turn` until the Continuation yields its first char:
             "typed" after `Session.prepare` saw the turn as typed (all but its last 10 chars, as
             the app sends the prompt while the person types; trees without it learn it all at
             Enter), "at Enter" with nothing learned ahead (a paste, `charterm generate --prime`)
stream       chars/s from the first char to the last
tail         from the last char until `close()` returns (the turn is committed)
idle         `Session.catch_up()` after the turn (what the worker does while no request waits;
             trees without it do that work inside the turn)

With --old PATH, the same measurements run on the charterm tree at PATH too, the two trees taking
turns round by round (a fresh process each), so both see the same load; medians are printed side
by side. The machine and its load average are printed with them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(args) -> dict:
    """One process: build the story, time the turns; {label: seconds or chars/s}."""
    import torch

    torch.set_num_threads(1)
    from charterm.engine.checkpoint import load_model
    from charterm.engine.corpus import open_corpus
    from charterm.engine.text import split_train_val
    from charterm.story.session import Session
    from charterm.story.store import Store

    loaded = load_model(Path(args.model))
    corpus = open_corpus(Path(args.data), vocab=loaded.vocab)
    _, val = split_train_val(corpus.ids, loaded.info.get("train_config", {}).get("val_frac", 0.1))
    book = "".join(loaded.vocab.chars[i] for i in val)
    text = iter(book[k : k + args.person] for k in range(0, len(book), args.person))
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as home:
        store = Store(Path(home) / "stories.db")
        s = Session.open(store, "bench", loaded, precision="int8")
        s.update_settings(seed=1, adapt=True)
        catch_up = getattr(s, "catch_up", lambda: None)
        for _ in range(3):
            s.append_person_turn(next(text))
            s.continue_(300).run()
            catch_up()
        for k, n in enumerate([args.chars[0], *args.chars]):
            turn = next(text)
            typed = k > 0 and hasattr(s, "prepare")
            if typed:
                s.prepare(turn[:-10])
            t0 = time.perf_counter()
            s.append_person_turn(turn)
            cont = s.continue_(n)
            chars = iter(cont)
            next(chars)
            first = time.perf_counter()
            for _ in chars:
                pass
            last = time.perf_counter()
            cont.close()
            done = time.perf_counter()
            catch_up()
            idle = time.perf_counter()
            assert len(cont.text) == n, len(cont.text)
            if k == 0:
                out["first char at Enter"] = first - t0
                continue
            out |= {f"first char typed, {n}": first - t0, f"stream, {n}": (n - 1) / (last - first)}
            out |= {f"tail, {n}": done - last, f"idle, {n}": idle - done}
        store.close()
    return out


def child(tree: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--data", args.data]
    cmd += ["--person", str(args.person), "--chars", ",".join(map(str, args.chars))]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        sys.exit(f"{tree}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", help="another charterm tree to measure beside this one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--person", type=int, default=300, help="chars of each person's turn")
    ap.add_argument("--chars", default="300,12000", help="the model turns' lengths, comma-separated")
    ap.add_argument("--model", default=str(ROOT / "models" / "anna.safetensors"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.chars = [int(c) for c in str(args.chars).split(",")]
    if args.child:
        print(json.dumps(measure(args)))
        return
    args.model, args.data = str(Path(args.model).resolve()), str(Path(args.data).resolve())
    trees = {"this tree": ROOT} | ({"old": Path(args.old).resolve()} if args.old else {})
    results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for r in range(args.rounds):
        for name, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
            print(f"round {r + 1}/{args.rounds}: {name}...", file=sys.stderr, flush=True)
            for key, value in child(tree, args).items():
                results[name].setdefault(key, []).append(value)
    report(results, args)


def report(results: dict, args) -> None:
    from app_bench import machine

    print(f"\n{machine()}; a {args.person}-char person's turn before each model turn; medians of {args.rounds}")
    names = list(results)
    print("\n| measure | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for key in results[names[0]]:
        cells = []
        for name in names:
            med = statistics.median(results[name].get(key, [float("nan")]))
            cells.append(f"{med:,.0f} chars/s" if key.startswith("stream") else f"{med * 1000:,.0f} ms")
        label = f"{key} chars" if "," in key else key
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()

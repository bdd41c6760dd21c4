"""Side-by-side speed of charterm and the teaching notebook's code, in one run on one machine.

    python benchmarks/bench.py [--data ../shared/data/anna.txt] [--quick]

Each case runs in its own child process (so one case's allocator or thread settings cannot
help or hurt another) and prints one row; the table at the end is what docs/speed.md shows.
The notebook's functions below are its code, unchanged but for the CPU-only device handling.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# --- the notebook's code -------------------------------------------------------------------------


def one_hot_encode(arr, n_labels):
    one_hot = np.zeros((arr.size, n_labels), dtype=np.float32)
    one_hot[np.arange(one_hot.shape[0]), arr.flatten()] = 1.0
    one_hot = one_hot.reshape((*arr.shape, n_labels))
    return one_hot


def get_batches(arr, batch_size, seq_length):
    batch_size_total = batch_size * seq_length
    n_batches = len(arr) // batch_size_total
    arr = arr[: n_batches * batch_size_total]
    arr = arr.reshape((batch_size, -1))
    for n in range(0, arr.shape[1], seq_length):
        x = arr[:, n : n + seq_length]
        y = np.zeros_like(x)
        try:
            y[:, :-1], y[:, -1] = x[:, 1:], arr[:, n + seq_length]
        except IndexError:
            y[:, :-1], y[:, -1] = x[:, 1:], arr[:, 0]
        yield x, y


class CharRNN(nn.Module):
    def __init__(self, tokens, n_hidden=256, n_layers=2, drop_prob=0.5, lr=0.001):
        super().__init__()
        self.drop_prob = drop_prob
        self.n_layers = n_layers
        self.n_hidden = n_hidden
        self.lr = lr
        self.chars = tokens
        self.int2char = dict(enumerate(self.chars))
        self.char2int = {ch: ii for ii, ch in self.int2char.items()}
        self.lstm = nn.LSTM(len(self.chars), n_hidden, n_layers, dropout=drop_prob, batch_first=True)
        self.dropout = nn.Dropout(drop_prob)
        self.fc = nn.Linear(n_hidden, len(self.chars))

    def forward(self, x, hidden):
        r_output, hidden = self.lstm(x, hidden)
        out = self.dropout(r_output)
        out = out.contiguous().view(-1, self.n_hidden)
        out = self.fc(out)
        return out, hidden

    def init_hidden(self, batch_size):
        weight = next(self.parameters()).data
        return (
            weight.new(self.n_layers, batch_size, self.n_hidden).zero_(),
            weight.new(self.n_layers, batch_size, self.n_hidden).zero_(),
        )


def predict(net, char, h=None, top_k=None):
    x = np.array([[net.char2int[char]]])
    x = one_hot_encode(x, len(net.chars))
    inputs = torch.from_numpy(x)
    h = tuple([each.data for each in h])
    out, h = net(inputs, h)
    p = F.softmax(out, dim=1).data
    if top_k is None:
        top_ch = np.arange(len(net.chars))
    else:
        p, top_ch = p.topk(top_k)
        top_ch = top_ch.numpy().squeeze()
    p = p.numpy().squeeze()
    char = np.random.choice(top_ch, p=p / p.sum())
    return net.int2char[char], h


def sample(net, size, prime="The", top_k=None):
    net.cpu()
    net.eval()
    chars = [ch for ch in prime]
    h = net.init_hidden(1)
    for ch in prime:
        char, h = predict(net, ch, h, top_k=top_k)
    chars.append(char)
    for ii in range(size):  # noqa: B007 (the notebook's code)
        char, h = predict(net, chars[-1], h, top_k=top_k)
        chars.append(char)
    return "".join(chars)


# --- cases ---------------------------------------------------------------------------------------

NOTEBOOK = dict(hidden=512, layers=2, dropout=0.5, batch_size=128, seq_length=100, lr=1e-3)


def load(data):
    from charterm.engine.text import Vocabulary, read_text

    text = read_text(data)
    return text, Vocabulary.from_text(text)


def case_train_notebook(data, steps):
    text, vocab = load(data)
    chars = vocab.chars
    encoded = np.array([vocab.index[c] for c in text])
    net = CharRNN(chars, NOTEBOOK["hidden"], NOTEBOOK["layers"])
    opt = torch.optim.Adam(net.parameters(), lr=NOTEBOOK["lr"])
    criterion = nn.CrossEntropyLoss()
    net.train()
    B, T = NOTEBOOK["batch_size"], NOTEBOOK["seq_length"]
    h = net.init_hidden(B)
    times = []
    for i, (x, y) in enumerate(get_batches(encoded, B, T)):
        if i == steps + 2:
            break
        t0 = time.perf_counter()
        x = one_hot_encode(x, len(chars))
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        h = tuple([each.data for each in h])
        net.zero_grad()
        output, h = net(inputs, h)
        loss = criterion(output, targets.view(B * T).long())
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5)
        opt.step()
        times.append(time.perf_counter() - t0)
    return B * T / np.median(times[2:])


def case_train_charterm(data, steps):
    from charterm.config import ModelConfig
    from charterm.engine.distributed import keep_buffers_in_heap
    from charterm.engine.model import CharModel
    from charterm.engine.text import make_rows

    keep_buffers_in_heap()
    text, vocab = load(data)
    ids = vocab.encode(text)
    B, T = NOTEBOOK["batch_size"], NOTEBOOK["seq_length"]
    x_rows, y_rows = make_rows(ids, B, T)
    x_all, y_all = torch.from_numpy(x_rows.astype(np.int64)), torch.from_numpy(y_rows.astype(np.int64))
    model = CharModel(
        ModelConfig(len(vocab), hidden=NOTEBOOK["hidden"], layers=NOTEBOOK["layers"], dropout=NOTEBOOK["dropout"])
    )
    opt = torch.optim.Adam(model.parameters(), lr=NOTEBOOK["lr"])
    model.train()
    h = model.init_state(B)
    times = []
    for w in range(steps + 2):
        t0 = time.perf_counter()
        s = slice(w * T, (w + 1) * T)
        h = tuple(x.detach() for x in h)
        logits, h = model(x_all[:, s], h)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_all[:, s].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return B * T / np.median(times[2:])


def case_train_trainer(data, steps):
    """charterm's own training loop (`Trainer`, as `charterm train --preset notebook` runs it):
    chars/s between its step events, the median after two warm-up steps; no validation in between."""
    import tempfile

    from charterm.config import PRESETS, TrainConfig
    from charterm.engine.training import run_training

    times = []

    def on_event(e):
        if type(e).__name__ == "Step":
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(**PRESETS["notebook"], data=data, out=f"{tmp}/m.safetensors", max_steps=steps + 3)
        cfg.eval_every, cfg.eval_chars, cfg.device = 10**9, 1, "cpu"
        run_training(cfg, on_event=on_event)
    B, T = NOTEBOOK["batch_size"], NOTEBOOK["seq_length"]
    return B * T / float(np.median(np.diff(times)[2:]))


def _models(data):
    """The same random weights in the notebook's CharRNN and in charterm's CharModel."""
    from charterm.config import ModelConfig
    from charterm.engine.model import CharModel

    _, vocab = load(data)
    torch.manual_seed(0)
    net = CharRNN(vocab.chars, 512, 2)
    model = CharModel(ModelConfig(len(vocab), hidden=512, layers=2))
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(len(vocab)))  # one-hot as an embedding: the same function
        for i, rnn in enumerate(model.rnns):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(rnn, f"{name}_l0").copy_(getattr(net.lstm, f"{name}_l{i}"))
        model.fc.load_state_dict(net.fc.state_dict())
    model.eval()
    return vocab, net, model


def case_generate_notebook(data, n):
    vocab, net, _ = _models(data)
    sample(net, 50, prime="Anna", top_k=5)
    t0 = time.perf_counter()
    sample(net, n, prime="A", top_k=5)
    return n / (time.perf_counter() - t0)


def case_generate_charterm(data, n, precision):
    from charterm.engine.sampling import CharSampler, Generation, Stepper, run_ids

    vocab, _, model = _models(data)
    stepper = Stepper(model, precision)
    logits, state = run_ids(model, [vocab.index["A"]])
    gen = iter(Generation(stepper, logits, state, CharSampler(5, 1.0, 0)))
    for _ in range(50):
        next(gen)
    t0 = time.perf_counter()
    for _ in range(n):
        next(gen)
    return n / (time.perf_counter() - t0)


def case_prime_notebook(data, n):
    text, vocab = load(data)
    _, net, _ = _models(data)
    t0 = time.perf_counter()
    sample(net, 0, prime=text[:n], top_k=5)
    return time.perf_counter() - t0


def case_prime_charterm(data, n):
    from charterm.engine.sampling import run_ids

    text, vocab = load(data)
    _, _, model = _models(data)
    run_ids(model, [vocab.index[c] for c in text[:200]])
    t0 = time.perf_counter()
    run_ids(model, [vocab.index[c] for c in text[:n]])
    return time.perf_counter() - t0


def case_next_words(data, n):
    """Median ms of `Session.next_words(5)` at the end of a 2,000-char prime, at n places in the book."""
    import random

    from charterm.engine.checkpoint import load_model
    from charterm.story.session import Session

    torch.set_num_threads(1)
    text, _ = load(data)
    loaded = load_model(ROOT / "models" / "anna.safetensors")
    rng, times = random.Random(0), []
    for _ in range(n):
        i = rng.randrange(2_000, len(text))
        session = Session(loaded)
        session.append_person_turn(text[i - 2_000 : i])
        t0 = time.perf_counter()
        session.next_words(5)
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


COMMON_BANS = ["the", "and", "said", "Levin", "was"]


def _story_session(text, precision="int8", bans=()):
    """A session on the shipped model (no store, no adaptation) after 2,000 chars of the book."""
    from charterm.engine.checkpoint import load_model
    from charterm.settings import Settings
    from charterm.story.session import Session

    torch.set_num_threads(1)  # as the worker writes
    loaded = load_model(ROOT / "models" / "anna.safetensors")
    session = Session(loaded, settings=Settings(seed=1, adapt=False, bans=tuple(bans)), precision=precision)
    session.append_person_turn(text[100_000:102_000])
    return session


def case_choices(data, n, k):
    """Seconds to write n chars in each of k continuations at once (k = 1: one `Continuation`)."""
    session = _story_session(load(data)[0])
    session.continue_(50).run()  # warm up
    t0 = time.perf_counter()
    if k == 1:
        session.continue_(n).run()
    else:
        session.choices(k, n).run()
    return time.perf_counter() - t0


def case_choices_steps(data, n, rounds):
    """In one process: us per char of one continuation of n chars, and per step of 3 and 8 choices at
    once, the three taking turns `rounds` times, the best of each."""
    session = _story_session(load(data)[0])
    runs = {1: [], 3: [], 8: []}
    for _ in range(rounds):
        for k, times in runs.items():
            t0 = time.perf_counter()
            (session.continue_(n) if k == 1 else session.choices(k, n)).run()
            times.append(time.perf_counter() - t0)
            session.undo()  # the same place each time
    best = {k: 1e6 * min(times) / n for k, times in runs.items()}
    return {"us_per_step": best, "3x": best[3] / best[1], "8x": best[8] / best[1]}


def case_bans(data, n, bans):
    """chars/s of one continuation of n chars with the first `bans` of COMMON_BANS banned, and rewinds per
    1,000 chars."""
    session = _story_session(load(data)[0], bans=COMMON_BANS[:bans])
    session.continue_(50).run()
    cont = session.continue_(n)
    t0 = time.perf_counter()
    text = "".join(cont)
    seconds = time.perf_counter() - t0
    row = getattr(cont._gen, "row", None)  # a BannedGeneration's: its rewinds, and the chars written in all
    per_1000 = 1000 * row.rewinds / len(text) if row else 0.0
    written = row.written / len(text) if row else 1.0
    return {"chars_per_s": len(text) / seconds, "rewinds_per_1000": per_1000, "written_per_shown": written}


def case_help():
    exe = Path(sys.executable).parent / "charterm"
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def run_case(args_list):
    out = subprocess.run([sys.executable, __file__, "--case", *args_list], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"))
    ap.add_argument("--quick", action="store_true", help="fewer steps and chars")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the best of each is shown")
    ap.add_argument("--case", nargs="+")
    ap.add_argument("--choices", action="store_true", help="only the table of choices and bans")
    args = ap.parse_args()
    if args.case:
        name, *rest = args.case
        fn = globals()[f"case_{name}"]
        conv = [int(r) if r.isdigit() else r for r in rest]
        print(json.dumps(fn(*conv) if name == "help" else fn(args.data, *conv)))
        return
    steps, gen_n, prime_n = (4, 500, 5000) if args.quick else (12, 3000, 20000)
    rounds = 1 if args.quick else args.rounds
    if args.choices:
        choices_table(gen_n, rounds)
        return
    rows = []

    def best(case_args):  # interleaved rounds, best of each: this VM's speed drifts by 10-20%
        return max(run_case(case_args) for _ in range(rounds))

    tr_nb, tr_ct = [], []
    for _ in range(rounds):
        tr_nb.append(run_case(["train_notebook", str(steps)]))
        tr_ct.append(run_case(["train_charterm", str(steps)]))
    rows.append(("training, 512x2, batch 128, seq 100, dropout 0.5 (chars/s)", max(tr_nb), max(tr_ct)))
    loop = max(run_case(["train_trainer", str(steps)]) for _ in range(rounds))
    rows.append(("the same in `charterm train --preset notebook`'s loop (chars/s)", max(tr_nb), loop))
    g_nb = best(["generate_notebook", str(gen_n // 3)])
    g_fp = best(["generate_charterm", str(gen_n), "fp32"])
    g_q = best(["generate_charterm", str(gen_n), "int8"])
    rows.append(("generation, batch 1, top-k 5, fp32 (chars/s)", g_nb, g_fp))
    rows.append(("generation, batch 1, top-k 5, int8 (chars/s)", g_nb, g_q))
    p_nb, p_ct = run_case(["prime_notebook", str(prime_n)]), run_case(["prime_charterm", str(prime_n)])
    rows.append((f"priming with {prime_n:,} chars (seconds)", p_nb, p_ct))
    help_s = run_case(["help"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, best of {rounds}")
    print("| what | notebook | charterm | speed-up |")
    print("|---|---:|---:|---:|")
    for what, nb, ct in rows:
        up = nb / ct if "seconds" in what else ct / nb
        fmt = "{:,.2f}" if "seconds" in what else "{:,.0f}"
        print(f"| {what} | {fmt.format(nb)} | {fmt.format(ct)} | {up:.1f}x |")
    print(f"| `charterm --help` (seconds, best of 5) | | {help_s:.3f} | |")
    choices_table(gen_n, rounds)


def choices_table(n, rounds):
    """K continuations at once against one, and bans against none (charterm only). The cases take turns,
    `rounds` times; each row is the best of its runs (a shared machine's speed drifts)."""
    cases = [["choices", str(n), "1"], ["choices", str(n), "3"], ["choices", str(n), "8"]]
    cases += [["bans", str(n), "0"], ["bans", str(n), "5"]]
    runs = [[] for _ in cases]
    for _ in range(rounds):
        for i, case in enumerate(cases):
            runs[i].append(run_case(case))
    one, three, eight = (min(r) for r in runs[:3])
    print(f"\n| {n:,} chars a continuation, int8, one thread | seconds | against one |")
    print("|---|---:|---:|")
    for what, t in (("1 continuation", one), ("3 choices at once", three), ("8 choices at once", eight)):
        print(f"| {what} | {t:.2f} | {t / one:.2f}x |")
    for bans, results in ((0, runs[3]), (5, runs[4])):
        best = max(results, key=lambda r: r["chars_per_s"])
        rate, rewinds, written = best["chars_per_s"], best["rewinds_per_1000"], best["written_per_shown"]
        names = ", ".join(COMMON_BANS[:bans]) or "none"
        print(f"| {bans} bans ({names}) | {rate:,.0f} chars/s | {rewinds:.1f} rewinds and {written:.3f} chars written "
              "per char kept |")

if __name__ == "__main__":
    main()

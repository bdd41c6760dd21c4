"""`charterm import`: the teaching notebook's own checkpoints become charterm models that compute
the same function, and anything else is refused in one line without running or writing anything."""

import contextlib
import copy
import hashlib
import json
import math
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli_in_process, run_cli, small_text
from torch import nn

from charterm.engine.checkpoint import load_model
from charterm.engine.notebook import DEFAULT_DROPOUT, FORMAT_NOTE, import_notebook
from charterm.story.session import Session, Settings
from charterm.story.store import Store

HIDDEN, LAYERS = 32, 2
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # for the real commands: small models, a busy 2-core machine


# --- the notebook's own model, training and checkpoint ------------------------------------------


class CharRNN(nn.Module):
    """The notebook's CharRNN, as it defines it (one-hot input, one multi-layer nn.LSTM)."""

    def __init__(self, tokens, n_hidden=256, n_layers=2, drop_prob=0.5, lr=0.001):
        super().__init__()
        self.drop_prob, self.n_layers, self.n_hidden, self.lr = drop_prob, n_layers, n_hidden, lr
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
        return self.fc(out), hidden

    def init_hidden(self, batch_size):
        weight = next(self.parameters()).data
        return (
            weight.new(self.n_layers, batch_size, self.n_hidden).zero_(),
            weight.new(self.n_layers, batch_size, self.n_hidden).zero_(),
        )


def one_hot_encode(arr, n_labels):
    one_hot = np.zeros((arr.size, n_labels), dtype=np.float32)
    one_hot[np.arange(one_hot.shape[0]), arr.flatten()] = 1.0
    return one_hot.reshape((*arr.shape, n_labels))


@contextlib.contextmanager
def one_thread():
    """Small LSTMs run far faster on one thread (two oversubscribe a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_notebook_net(text: str, steps=300, batch_size=8, seq_length=50) -> CharRNN:
    """The notebook's training steps (Adam, cross-entropy, clip 5, carried hidden state), a few."""
    torch.manual_seed(0)
    net = CharRNN(tuple(set(text)), n_hidden=HIDDEN, n_layers=LAYERS)
    encoded = np.array([net.char2int[ch] for ch in text])
    arr = encoded[: (len(encoded) - 1) // (batch_size * seq_length) * batch_size * seq_length + 1]
    xs, ys = arr[:-1].reshape(batch_size, -1), arr[1:].reshape(batch_size, -1)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    net.train()
    h = net.init_hidden(batch_size)
    for step in range(steps):
        n = step * seq_length % xs.shape[1]
        x, y = one_hot_encode(xs[:, n : n + seq_length], len(net.chars)), ys[:, n : n + seq_length]
        h = tuple(each.data for each in h)
        net.zero_grad()
        output, h = net(torch.from_numpy(x), h)
        F.cross_entropy(output, torch.from_numpy(y).reshape(-1)).backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5)
        opt.step()
    return net.eval()


def save_like_the_notebook(net: CharRNN, path: Path) -> Path:
    checkpoint = {
        "n_hidden": net.n_hidden,
        "n_layers": net.n_layers,
        "state_dict": net.state_dict(),
        "tokens": net.chars,
    }
    with open(path, "wb") as f:
        torch.save(checkpoint, f)
    return path


@torch.no_grad()
def notebook_greedy(net: CharRNN, prime: str, n: int) -> str:
    """The notebook's char-at-a-time prediction, greedy, from a zero state that first reads "\\n"
    and then the prime (how charterm's generate and a new story start)."""
    h = net.init_hidden(1)
    for ch in "\n" + prime:
        out, h = net(torch.from_numpy(one_hot_encode(np.array([[net.char2int[ch]]]), len(net.chars))), h)
    chars = []
    for _ in range(n):
        chars.append(net.int2char[int(out[-1].argmax())])
        out, h = net(torch.from_numpy(one_hot_encode(np.array([[net.char2int[chars[-1]]]]), len(net.chars))), h)
    return "".join(chars)


@torch.no_grad()
def notebook_loss(net: CharRNN, text: str, batch_size: int, seq_length: int) -> tuple[float, int]:
    """The notebook model's mean cross-entropy on charterm eval's layout: `batch_size` contiguous
    rows of whole windows, targets shifted by one char, the state carried from window to window."""
    ids = np.array([net.char2int[ch] for ch in text])
    n_windows = (len(ids) - 1) // (batch_size * seq_length)
    keep = n_windows * batch_size * seq_length
    xs, ys = ids[:keep].reshape(batch_size, -1), ids[1 : keep + 1].reshape(batch_size, -1)
    h, total = net.init_hidden(batch_size), 0.0
    for w in range(n_windows):
        cols = slice(w * seq_length, (w + 1) * seq_length)
        out, h = net(torch.from_numpy(one_hot_encode(xs[:, cols], len(net.chars))), h)
        total += F.cross_entropy(out, torch.from_numpy(ys[:, cols]).reshape(-1), reduction="sum").item()
    return total / keep, keep


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """(net, checkpoint path, text path): a notebook model trained a little and saved its way."""
    root = tmp_path_factory.mktemp("notebook")
    text = small_text()[:20_000]
    assert "\n" in text
    with one_thread():
        net = train_notebook_net(text)
    assert list(net.chars) != sorted(net.chars)  # the notebook's order, not charterm's
    text_path = root / "small.txt"
    text_path.write_text(text, encoding="utf-8")
    return net, save_like_the_notebook(net, root / "rnn_20_epoch.net"), text_path


@pytest.fixture(scope="module")
def imported(notebook, tmp_path_factory) -> Path:
    """The checkpoint imported by the real command, with the default --out."""
    net, ckpt, _ = notebook
    cwd = tmp_path_factory.mktemp("work")
    r = run_cli("import", ckpt, cwd=cwd, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    out = cwd / "models" / "rnn_20_epoch.safetensors"
    assert r.stdout == "" and r.stderr.splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith(f"models/rnn_20_epoch.safetensors: LSTM {HIDDEN}x{LAYERS}, {len(net.chars)} chars")
    assert out.is_file()
    return out


# --- the imported model is the notebook's model --------------------------------------------------


def test_same_function_as_the_notebook(notebook, imported):
    net, _, _ = notebook
    loaded = load_model(imported)
    c = loaded.model.config
    V = len(net.chars)
    assert (c.cell, c.hidden, c.layers, c.embed, c.vocab_size) == ("lstm", HIDDEN, LAYERS, V, V)
    assert c.dropout == DEFAULT_DROPOUT and loaded.vocab.chars == tuple(sorted(net.chars))
    text = small_text()[20_000:20_300]
    ids = np.array([[net.char2int[ch] for ch in text]])
    with torch.no_grad(), one_thread():
        theirs, _ = net(torch.from_numpy(one_hot_encode(ids, len(net.chars))), net.init_hidden(1))
        ours, _ = loaded.model(torch.tensor([[loaded.vocab.index[ch] for ch in text]]))
    order = [net.char2int[ch] for ch in loaded.vocab.chars]
    assert torch.allclose(ours[0], theirs[:, order], atol=1e-5)


def test_greedy_generation_matches_the_notebook_char_for_char(notebook, imported):
    net, _, _ = notebook
    prime, n = "Anna", 200
    args = ("--prime", prime, "--chars", n, "--temperature", "0", "--precision", "fp32")
    r = run_cli("generate", "--model", imported, *args, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    with one_thread():
        expected = notebook_greedy(net, prime, n)
    assert len(set(expected)) >= 3  # the model learned something: not one char over and over
    assert r.stdout == prime + expected


def test_a_story_with_it_continues_as_the_notebook_would(notebook, imported, tmp_path):
    """The app's path (its worker runs a Session on a Store): the story's first model turn."""
    net, _, _ = notebook
    store = Store(tmp_path / "stories.db")
    session = Session.open(store, "s", load_model(imported), settings=Settings(temperature=0), precision="fp32")
    with one_thread():
        session.append_person_turn("Levin ")
        turn = session.continue_(chars=60).run()
        assert turn.text == notebook_greedy(net, "Levin ", 60)
    store.close()


def test_eval_matches_the_notebooks_cross_entropy(notebook, imported):
    net, _, text_path = notebook
    r = run_cli("eval", "--model", imported, "--data", text_path, "--split", "all", "--json",
                "--batch-size", "8", "--seq-length", "100", env=ONE_THREAD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    with one_thread():
        loss, chars = notebook_loss(net.eval(), text_path.read_text(encoding="utf-8"), 8, 100)
    assert result["chars"] == chars
    assert abs(result["loss"] - loss) < 1e-4, (result["loss"], loss)


def test_info_says_where_it_came_from(notebook, imported, capsys, monkeypatch):
    _, ckpt, _ = notebook
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    code, out, _ = cli_in_process(capsys, monkeypatch, "info", "--model", imported, "--json")
    card = json.loads(out)
    assert code == 0 and card["import"] == {"source": ckpt.name, "source_sha256": sha, "format": FORMAT_NOTE}
    assert card["command"] == f"charterm import {ckpt}" and card["charterm_version"] and card["created"]
    code, out, _ = cli_in_process(capsys, monkeypatch, "info", "--model", imported)
    assert code == 0
    assert f"source     {FORMAT_NOTE}: rnn_20_epoch.net (sha256 {sha[:12]})" in out.splitlines()
    assert "None" not in out  # the notebook's file has no record of its training: no line of blanks


def test_train_init_from_an_imported_model(notebook, imported, tmp_path):
    _, _, text_path = notebook
    out = tmp_path / "ft.safetensors"
    r = run_cli("train", "--init-from", imported, "--data", text_path, "--out", out, "--max-steps", "2",
                "--batch-size", "4", "--seq-length", "32", "--device", "cpu", "--progress", "none",
                env=ONE_THREAD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    tuned = load_model(out)
    assert tuned.vocab == load_model(imported).vocab and tuned.info["steps"] == 2
    assert tuned.info["parent"]["command"].startswith("charterm import ")
    assert tuned.info["parent"]["import"]["source"] == "rnn_20_epoch.net"  # the lineage keeps the source file


def test_cuda_checkpoint_and_a_saved_drop_prob(notebook, tmp_path, monkeypatch):
    """The notebook trains on a GPU: its tensors are tagged cuda:0; map_location="cpu" reads them."""
    net, _, _ = notebook
    checkpoint = {**good_checkpoint(net), "drop_prob": 0.25}
    tag_as_cuda = [True]  # torch has no way to unregister a tagger: it steps aside once the file is saved
    torch.serialization.register_package(0, lambda s: "cuda:0" if tag_as_cuda[0] else None, lambda o, loc: None)
    try:
        torch.save(checkpoint, tmp_path / "gpu.net")
    finally:
        tag_as_cuda[0] = False
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.net", weights_only=True)
    loaded = import_notebook(tmp_path / "gpu.net", tmp_path / "gpu.safetensors")
    assert loaded.model.config.dropout == 0.25
    assert torch.equal(loaded.model.rnns[1].weight_hh_l0, net.lstm.weight_hh_l1)


def test_out_exists_needs_force(notebook, tmp_path, capsys, monkeypatch):
    _, ckpt, _ = notebook
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    code, _, err = cli_in_process(capsys, monkeypatch, "import", ckpt, "--out", out)
    assert code == 2 and err.startswith("charterm: error:") and "--force" in err and len(err.splitlines()) == 1
    assert out.read_bytes() == b"keep me"
    code, _, err = cli_in_process(capsys, monkeypatch, "import", ckpt, "--out", out, "--force")
    assert code == 0 and load_model(out).info["import"]["source"] == ckpt.name
    code, _, err = cli_in_process(capsys, monkeypatch, "import", ckpt, "--out", tmp_path)
    assert code == 2 and "directory" in err


# --- hostile and broken files ------------------------------------------------------------------


class Evil:
    """Unpickling this creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def good_checkpoint(net: CharRNN) -> dict:
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return {"n_hidden": net.n_hidden, "n_layers": net.n_layers, "state_dict": state, "tokens": net.chars}


def changed(**top):
    def edit(ckpt):
        ckpt.update(top)

    return edit


def state_edit(fn):
    def edit(ckpt):
        fn(ckpt["state_dict"], ckpt["tokens"])

    return edit


def _set(name, value):
    return state_edit(lambda s, t: s.__setitem__(name, value(s[name])))


EDITS = {
    "missing key": (state_edit(lambda s, t: s.pop("fc.bias")), "missing ['fc.bias']"),
    "extra key": (state_edit(lambda s, t: s.__setitem__("embed.weight", torch.zeros(3))), "'embed.weight'"),
    "extra entry": (changed(optimizer={}), "unexpected ['optimizer']"),
    "no tokens": (lambda c: c.pop("tokens"), "missing ['tokens']"),
    "n_hidden too big": (changed(n_hidden=64), "expected [256, "),
    "n_layers too many": (changed(n_layers=3), "lstm.weight_ih_l2"),
    "a token fewer": (lambda c: c.update(tokens=c["tokens"][:-1]), "has shape"),
    "repeated token": (lambda c: c.update(tokens=(*c["tokens"][:-1], c["tokens"][0])), "repeated characters"),
    "two-char token": (lambda c: c.update(tokens=("ab", *c["tokens"][1:])), "single characters"),
    "nan": (_set("lstm.weight_hh_l1", lambda t: t.index_fill(0, torch.tensor([3]), math.nan)), "NaN or infinite"),
    "inf": (_set("fc.bias", lambda t: t.index_fill(0, torch.tensor([0]), math.inf)), "NaN or infinite"),
    "int weights": (_set("fc.bias", lambda t: t.long()), "floating-point"),
    "n_hidden a string": (changed(n_hidden="32"), "n_hidden is '32'"),
    "n_layers a bool": (changed(n_layers=True), "n_layers is True"),
    "bad drop_prob": (changed(drop_prob=1.5), "drop_prob"),
}


def write_case(case: str, net: CharRNN, path: Path, marker: Path) -> Path:
    """A file for each way a checkpoint can be wrong."""
    if case in EDITS:
        ckpt = copy.deepcopy(good_checkpoint(net))
        EDITS[case][0](ckpt)
        torch.save(ckpt, path)
    elif case == "evil torch.save":
        torch.save({**good_checkpoint(net), "state_dict": Evil(marker)}, path)
    elif case == "evil legacy torch.save":
        torch.save({**good_checkpoint(net), "tokens": Evil(marker)}, path, _use_new_zipfile_serialization=False)
    elif case == "evil raw pickle":
        path.write_bytes(pickle.dumps(Evil(marker), protocol=4))
    elif case == "a list":
        torch.save([1, 2, 3], path)
    elif case == "text file":
        path.write_text("n_hidden = 32\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        torch.save(good_checkpoint(net), path)
        path.write_bytes(path.read_bytes()[:3000])
    return path


SAYS = {
    **{case: says for case, (_, says) in EDITS.items()},
    "evil torch.save": "not a plain checkpoint",
    "evil legacy torch.save": "not a plain checkpoint",
    "evil raw pickle": "was not loaded",
    "a list": "holds a list",
    "text file": "not a PyTorch checkpoint file",
    "empty": "not a PyTorch checkpoint file",
    "truncated": "not a PyTorch checkpoint file",
    "missing file": "no such file",
}



def assert_refused(code, out, err, says, folder: Path, marker: Path) -> None:
    assert code == 1, (code, err)
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("charterm: error:") and says in lines[0], err
    assert not marker.exists()
    assert not (folder / "models").exists() and not list(folder.glob("*.safetensors*"))


def test_the_evil_payload_is_real(notebook, tmp_path):
    """Control: loaded the unsafe way, the test's pickles do run code."""
    marker = tmp_path / "marker"
    torch.load(write_case("evil torch.save", notebook[0], tmp_path / "x.net", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("case", list(SAYS))
def test_refused_in_one_line_with_nothing_written(case, notebook, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "marker"
    src = tmp_path / "bad.net"
    if case != "missing file":
        write_case(case, notebook[0], src, marker)
    monkeypatch.chdir(tmp_path)
    assert_refused(*cli_in_process(capsys, monkeypatch, "import", src), SAYS[case], tmp_path, marker)


def test_real_process_refuses_in_one_line_and_runs_nothing(notebook, tmp_path):
    """The real `charterm import` on a code-running pickle and on a file that is not a torch file."""
    cases = ["evil torch.save", "text file"]
    dirs = [tmp_path / str(i) for i in range(len(cases))]
    for case, d in zip(cases, dirs, strict=True):
        d.mkdir()
        write_case(case, notebook[0], d / "bad.net", d / "marker")
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda d: run_cli("import", "bad.net", cwd=d, env=ONE_THREAD, timeout=60), dirs))
    for case, d, r in zip(cases, dirs, results, strict=True):
        assert_refused(r.returncode, r.stdout, r.stderr, SAYS[case], d, d / "marker")


def test_import_help_does_not_import_torch():
    code = (
        "import sys\nfrom charterm.cli import main\n"
        "try:\n    main(['import', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH"
    assert "Usage: charterm import" in r.stdout

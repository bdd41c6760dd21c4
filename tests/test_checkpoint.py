"""The model file: safetensors round trips, refusing pickles without running them, and clear errors
for damaged or hostile files (never a traceback, never a huge allocation)."""

import builtins
import copy
import json
import os
import pickle
import random
import shlex
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import cli_in_process, run_cli

from charterm.config import ModelConfig
from charterm.engine import checkpoint
from charterm.engine.checkpoint import FORMAT, load_model, read_header, save_model
from charterm.engine.model import CharModel
from charterm.engine.text import Vocabulary
from charterm.errors import CharTermError

# Unsorted on purpose (order must survive), with chars JSON and shells treat specially.
CHARS = ["z", "\n", '"', "é", "a", " ", "\\", "\u2014", "\U0001f600", "\t"]
INFO = {"data": "data/some text.txt", "steps": 12, "val_loss": 1.25, "note": 'quote " é \n done'}


def make_model(seed=0, **kw) -> CharModel:
    torch.manual_seed(seed)
    kw = {"hidden": 16, "layers": 2, **kw}
    return CharModel(ModelConfig(vocab_size=len(CHARS), **kw))


def saved(path, dtype=torch.float32, **kw):
    model, vocab = make_model(**kw), Vocabulary(CHARS)
    save_model(path, model, vocab, INFO, dtype=dtype)
    return model, vocab


def split(raw: bytes) -> tuple[dict, bytes]:
    """A safetensors file as (header dict, tensor data)."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def pack(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


@pytest.fixture
def good(tmp_path):
    """A valid small model file and its raw bytes."""
    path = tmp_path / "good.safetensors"
    saved(path)
    return path, path.read_bytes()


def assert_same_weights(a: CharModel, b: CharModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype == torch.float32, k
        assert torch.equal(sa[k], sb[k]), k



def assert_one_line_error(code, out, err) -> None:
    assert code == 1, (code, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("charterm: error:"), err
    assert out == ""


# --- 1. round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"cell": "gru", "layers": 1, "embed": 5, "dropout": 0.25}])
def test_round_trip_is_exact(tmp_path, kw):
    path = tmp_path / "m.safetensors"
    model, vocab = saved(path, **kw)
    loaded = load_model(path)
    assert_same_weights(model, loaded.model)
    assert loaded.vocab == vocab
    assert loaded.vocab.chars == tuple(CHARS)
    assert loaded.vocab.index["\n"] == 1 and loaded.vocab.index["é"] == 3
    assert loaded.model.config == model.config
    assert loaded.model.config.to_dict() == ModelConfig(len(CHARS), hidden=16, **{"layers": 2, **kw}).to_dict()
    fingerprint = loaded.fingerprint
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert loaded.info == {**INFO, "fingerprint": fingerprint}
    assert loaded.dtype == "F32"
    assert loaded.path == path
    assert not loaded.model.training
    # the same input gives the same output
    ids = torch.tensor([[0, 1, 2, 3, 4, 5]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids)[0], loaded.model(ids)[0])


def test_header_is_readable_without_loading(good):
    path, _ = good
    meta, entries, start = read_header(path)
    assert meta["format"] == FORMAT
    assert json.loads(meta["vocab"]) == CHARS
    assert set(entries) == set(make_model().state_dict())
    assert start % 8 == 0 and start > 8


def test_fingerprint_tracks_weights(tmp_path):
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    saved(a, seed=0)
    saved(b, seed=0)
    saved(c, seed=1)
    fa, fb, fc = (load_model(p).fingerprint for p in (a, b, c))
    assert fa == fb != fc


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "m.safetensors"  # the folder is made
    saved(path, seed=0)
    saved(path, seed=1)  # overwrite in place
    assert sorted(os.listdir(path.parent)) == ["m.safetensors"]
    assert not list(path.parent.glob(".*.tmp"))
    assert_same_weights(make_model(seed=1), load_model(path).model)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    saved(path, seed=0)
    before = path.read_bytes()

    class DiskFull:
        def __init__(self, file, mode="r", *a, **k):
            self.f = builtins.open(file, mode, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "open", DiskFull, raising=False)
    with pytest.raises(OSError, match="No space"):
        saved(path, seed=1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    assert_same_weights(make_model(seed=0), load_model(path).model)


@pytest.mark.parametrize(("dtype", "name", "tol"), [(torch.float16, "F16", 1e-3), (torch.bfloat16, "BF16", 8e-3)])
def test_half_precision_loads_as_float32(tmp_path, dtype, name, tol):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    model, _ = saved(full)
    saved(half, dtype=dtype)
    loaded = load_model(half)
    assert loaded.dtype == name
    assert half.stat().st_size < full.stat().st_size
    ref, got = model.state_dict(), loaded.model.state_dict()
    for k in ref:
        assert got[k].dtype == torch.float32, k
        assert torch.equal(got[k], ref[k].to(dtype).float()), k  # exactly the rounded weights
        torch.testing.assert_close(got[k], ref[k], rtol=tol, atol=1e-4)
    assert loaded.vocab.chars == tuple(CHARS)


def test_export_stores_another_dtype_and_records_it(tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    model, _ = saved(full)
    r = run_cli("export", full, "--out", half, "--dtype", "BF16")
    assert r.returncode == 0, r.stderr
    assert "BF16" in r.stderr and f"charterm eval --model {half}" in r.stderr
    source, written = load_model(full), load_model(half)
    assert written.dtype == "BF16" and half.stat().st_size < 0.6 * full.stat().st_size
    for k, v in model.state_dict().items():
        assert torch.equal(written.model.state_dict()[k], v.to(torch.bfloat16).float()), k
    assert written.vocab == source.vocab and written.model.config == source.model.config
    kept = {k: v for k, v in written.info.items() if k not in ("fingerprint", "export")}
    assert kept == {k: v for k, v in source.info.items() if k != "fingerprint"}  # how it was made stays
    assert written.fingerprint != source.fingerprint
    assert written.info["export"] == {
        "dtype": "BF16",
        "from_dtype": "F32",
        "from_fingerprint": source.fingerprint,
        "command": f"charterm export {full} --out {half} --dtype BF16",
    }
    assert "stored as  BF16 by charterm export" in run_cli("info", "--model", half).stdout
    before = half.read_bytes()
    r = run_cli("export", full, "--out", half)
    assert r.returncode == 2 and "--force" in r.stderr and half.read_bytes() == before
    r = run_cli("export", full, "--out", half, "--dtype", "F8")
    assert r.returncode == 2 and "Traceback" not in r.stderr and half.read_bytes() == before
    assert run_cli("export", full, "--out", half, "--force").returncode == 0
    assert load_model(half).dtype == "F16"


# --- 2. pickles are refused and never run -------------------------------------------------------


class Evil:
    """Unpickling this runs code: it creates (or touches) the marker file."""

    def __init__(self, marker, how="open"):
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "open":
            return (open, (self.marker, "w"))
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def write_evil(path, marker, kind: str, how: str = "open"):
    if kind.startswith("pickle"):
        path.write_bytes(pickle.dumps(Evil(marker, how), protocol=int(kind[len("pickle") :])))
    elif kind == "torch-zip":
        torch.save({"state_dict": Evil(marker, how)}, path)
    elif kind == "torch-legacy":
        torch.save({"state_dict": Evil(marker, how)}, path, _use_new_zipfile_serialization=False)
    return path


def run_unsafely(path, kind):
    if kind.startswith("pickle"):
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)


PICKLE_KINDS = ["pickle2", "pickle4", "pickle5", "torch-zip", "torch-legacy"]


@pytest.mark.parametrize("how", ["open", "system"])
@pytest.mark.parametrize("kind", PICKLE_KINDS)
def test_pickles_are_refused_without_running(tmp_path, kind, how):
    # the payload is real: loading it the unsafe way does create a marker
    control = tmp_path / "control-marker"
    run_unsafely(write_evil(tmp_path / "control.pt", control, kind, how), kind)
    assert control.exists()

    marker = tmp_path / "marker"
    evil = write_evil(tmp_path / "evil.pt", marker, kind, how)
    assert evil.read_bytes()[:2] == b"PK" if kind == "torch-zip" else evil.read_bytes()[:1] == b"\x80"
    with pytest.raises(CharTermError, match="(?i)pickle"):
        load_model(evil)
    with pytest.raises(CharTermError, match="(?i)pickle"):
        read_header(evil)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocol_pickles_are_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Evil(marker), protocol=protocol))
    with pytest.raises(CharTermError):
        load_model(evil)
    assert not marker.exists()


def test_cli_real_process_refuses_pickles_and_damage_in_one_line(tmp_path, good):
    """The real `charterm` command on a raw pickle, a torch.save zip and a damaged file (run side by side)."""
    cases = []
    for kind in ("pickle2", "torch-zip"):
        marker = tmp_path / f"marker-{kind}"
        cases.append((marker, write_evil(tmp_path / f"{kind}.pt", marker, kind), "pickle"))
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(DAMAGED["huge shape"](good[1]))
    cases.append((None, damaged, "embed.weight has shape"))
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda c: run_cli("info", "--model", c[1], timeout=60), cases))
    for (marker, _, says), r in zip(cases, results, strict=True):
        assert_one_line_error(r.returncode, r.stdout, r.stderr)
        assert says in r.stderr
        assert marker is None or not marker.exists()


@pytest.mark.parametrize("command", ["info", "generate"])
def test_cli_in_process_refuses_pickle(tmp_path, capsys, monkeypatch, command):
    marker = tmp_path / "marker"
    evil = write_evil(tmp_path / "evil.pt", marker, "torch-zip")
    assert_one_line_error(*cli_in_process(capsys, monkeypatch, command, "--model", evil))
    assert not marker.exists()


# --- 3. damaged files ---------------------------------------------------------------------------


def edit(raw: bytes, fn) -> bytes:
    header, data = split(raw)
    header = copy.deepcopy(header)
    fn(header)
    return pack(header, data)


def set_meta(key, value):
    def fn(h):
        if value is None:
            del h["__metadata__"][key]
        else:
            h["__metadata__"][key] = value

    return fn


def set_entry(name, key, value):
    def fn(h):
        h[name][key] = value

    return fn


def flip(raw: bytes, where: float) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    i = 8 + min(int(n * where), n - 1)
    return raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :]


def with_model_meta(**changes):
    def fn(h):
        d = json.loads(h["__metadata__"]["model"])
        d.update(changes)
        h["__metadata__"]["model"] = json.dumps(d)

    return fn


V = len(CHARS)
DAMAGED = {
    "empty": lambda raw: b"",
    "seven bytes": lambda raw: raw[:7],
    "truncated to half": lambda raw: raw[: len(raw) // 2],
    "one byte short": lambda raw: raw[:-1],
    "header length 2**62": lambda raw: struct.pack("<Q", 2**62) + raw[8:],
    "header length past the end": lambda raw: struct.pack("<Q", len(raw)) + raw[8:],
    "text file": lambda raw: b"Happy families are all alike; every unhappy family is unhappy in its own way.\n",
    "flipped first header byte": lambda raw: flip(raw, 0.0),
    "flipped middle header byte": lambda raw: flip(raw, 0.5),
    "flipped last header byte": lambda raw: flip(raw, 0.999),
    "json not an object": lambda raw: pack([1, 2], split(raw)[1]),  # type: ignore[arg-type]
    "huge shape": lambda raw: edit(
        raw, lambda h: h["embed.weight"].update(shape=[100_000, 100_000], data_offsets=[0, 4 * 100_000 * 100_000])
    ),
    "dtype I64": lambda raw: edit(raw, set_entry("fc.bias", "dtype", "I64")),
    "dtype F64": lambda raw: edit(raw, set_entry("fc.bias", "dtype", "F64")),
    "dtype missing": lambda raw: edit(raw, lambda h: h["fc.bias"].pop("dtype")),
    "entry not an object": lambda raw: edit(raw, lambda h: h.update({"fc.bias": "x"})),
    "wrong shape": lambda raw: edit(raw, set_entry("fc.bias", "shape", [V + 1])),
    "transposed shape, same size": lambda raw: edit(raw, set_entry("fc.weight", "shape", [16, V])),
    "offsets past the data": lambda raw: edit(
        raw,
        lambda h: h["fc.bias"].update(
            data_offsets=[h["fc.bias"]["data_offsets"][0] + 10**6, h["fc.bias"]["data_offsets"][1] + 10**6]
        ),
    ),
    "offsets of the wrong length": lambda raw: edit(
        raw,
        lambda h: h["fc.bias"].update(
            data_offsets=[h["fc.bias"]["data_offsets"][0], h["fc.bias"]["data_offsets"][1] - 4]
        ),
    ),
    "missing tensor": lambda raw: edit(raw, lambda h: h.pop("fc.bias")),
    "extra tensor": lambda raw: edit(raw, lambda h: h.update({"extra": h["fc.bias"]})),
    "no metadata": lambda raw: edit(raw, lambda h: h.pop("__metadata__")),
    "metadata without format": lambda raw: edit(raw, set_meta("format", None)),
    "other format": lambda raw: edit(raw, set_meta("format", "charterm-model/999")),
    "metadata without model": lambda raw: edit(raw, set_meta("model", None)),
    "metadata without vocab": lambda raw: edit(raw, set_meta("vocab", None)),
    "model metadata not json": lambda raw: edit(raw, set_meta("model", "{hidden: 16")),
    "unknown cell": lambda raw: edit(raw, with_model_meta(cell="transformer")),
    "hidden zero": lambda raw: edit(raw, with_model_meta(hidden=0)),
    "vocab_size as text": lambda raw: edit(raw, with_model_meta(vocab_size="ten")),
    "vocab one char short": lambda raw: edit(raw, set_meta("vocab", json.dumps(CHARS[:-1]))),
    "vocab one char long": lambda raw: edit(raw, set_meta("vocab", json.dumps([*CHARS, "q"]))),
    "vocab repeated char": lambda raw: edit(raw, set_meta("vocab", json.dumps([*CHARS[:-1], "z"]))),
    "vocab not a list": lambda raw: edit(raw, set_meta("vocab", "42")),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_file_is_a_clear_error(good, case, capsys, monkeypatch):
    path, raw = good
    bad = path.with_name("bad.safetensors")
    bad.write_bytes(DAMAGED[case](raw))
    t0 = time.perf_counter()
    with pytest.raises(CharTermError) as exc:
        load_model(bad)
    assert time.perf_counter() - t0 < 2
    assert "\n" not in str(exc.value)
    assert_one_line_error(*cli_in_process(capsys, monkeypatch, "info", "--model", bad))


def test_damage_messages_say_what_is_wrong(good):
    path, raw = good
    expect = {
        "empty": "too short",
        "header length 2**62": "bad or truncated header",
        "truncated to half": "truncated",
        "huge shape": r"shape \[100000, 100000\]",
        "dtype I64": "unsupported dtype",
        "wrong shape": "fc.bias has shape",
        "transposed shape, same size": "fc.weight has shape",
        "no metadata": FORMAT,
        "vocab one char short": f"vocabulary has {V - 1} chars but the weights expect {V}",
        "missing tensor": r"missing \['fc.bias'\]",
        "extra tensor": r"extra \['extra'\]",
        "model metadata not json": "damaged model metadata",
    }
    bad = path.with_name("bad.safetensors")
    for case, pattern in expect.items():
        bad.write_bytes(DAMAGED[case](raw))
        with pytest.raises(CharTermError, match=pattern):
            load_model(bad)


def test_missing_path_and_directory(tmp_path, capsys, monkeypatch):
    with pytest.raises(CharTermError, match="no such model file"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CharTermError, match="is a directory"):
        load_model(tmp_path)
    for p in (tmp_path / "nope.safetensors", tmp_path):
        for command in ("info", "generate"):
            assert_one_line_error(*cli_in_process(capsys, monkeypatch, command, "--model", p))


def test_plain_safetensors_without_charterm_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in make_model().state_dict().items()}, str(path))
    with pytest.raises(CharTermError, match=FORMAT):
        load_model(path)


def test_huge_but_consistent_architecture_is_refused_without_allocating(good, monkeypatch):
    """Metadata and shapes agree on a ~600-billion-parameter model; the data is a few KB.
    Refusing must come from the header alone: no real model may be built."""
    path, raw = good
    header, data = split(raw)
    vocab = [chr(0x4E00 + i) for i in range(2000)]
    config = ModelConfig(vocab_size=len(vocab), hidden=1 << 14, layers=64, embed=1 << 14)
    shapes = {k: list(v.shape) for k, v in CharModel(config, device="meta").state_dict().items()}
    entries, offset = {}, 0
    for k, shape in shapes.items():
        n = 4
        for s in shape:
            n *= s
        entries[k] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    meta = {**header["__metadata__"], "model": json.dumps(config.to_dict()), "vocab": json.dumps(vocab)}
    bad = path.with_name("huge.safetensors")
    bad.write_bytes(pack({"__metadata__": meta, **entries}, data))

    built = []
    real = checkpoint.CharModel

    def watch(cfg, device=None):
        built.append(torch.device(device) if device is not None else torch.get_default_device())
        return real(cfg, device=device)

    monkeypatch.setattr(checkpoint, "CharModel", watch)
    t0 = time.perf_counter()
    with pytest.raises(CharTermError, match="outside the file"):
        load_model(bad)
    assert time.perf_counter() - t0 < 5
    assert all(d.type == "meta" for d in built)


def test_bit_flips_in_the_header_never_escape_as_other_errors(good):
    """Single-bit flips of the header (low bit, case bit) at sampled places: each loads or is a CharTermError."""
    path, raw = good
    (n,) = struct.unpack("<Q", raw[:8])
    bad = path.with_name("bad.safetensors")
    loaded = refused = 0
    places = sorted(random.Random(0).sample(range(8, 8 + n), 150))
    for mask in (0x01, 0x20):
        for i in places:
            b = bytearray(raw)
            b[i] ^= mask
            bad.write_bytes(bytes(b))
            try:
                load_model(bad)
                loaded += 1
            except CharTermError:
                refused += 1
    assert refused > 0 and loaded + refused == 2 * len(places)


# --- regressions: valid headers that look like pickles, malformed header types -------------------


def save_with_header_length(path, target: int) -> None:
    """Save a valid model whose safetensors header is exactly `target` bytes long."""
    model, vocab = make_model(), Vocabulary(CHARS)
    save_model(path, model, vocab, {"pad": ""})
    base = struct.unpack("<Q", path.read_bytes()[:8])[0]
    for k in range(max(0, target - base - 16), target - base + 16):
        save_model(path, model, vocab, {"pad": "x" * k})
        if struct.unpack("<Q", path.read_bytes()[:8])[0] == target:
            return
    raise AssertionError(f"could not make a header of {target} bytes")


@pytest.mark.parametrize("target", [0x580, 0x4B50], ids=["first-byte-0x80", "first-bytes-PK"])
def test_valid_model_with_unlucky_header_length_loads(tmp_path, target):
    path = tmp_path / "m.safetensors"
    save_with_header_length(path, target)
    assert path.read_bytes()[:1] == b"\x80" or path.read_bytes()[:2] == b"PK"
    assert load_model(path).vocab.chars == tuple(CHARS)


@pytest.mark.parametrize(
    "fn",
    [
        set_entry("fc.bias", "data_offsets", ["0", "40"]),
        set_entry("fc.bias", "data_offsets", [None, None]),
        set_meta("model", "[1, 2]"),
        with_model_meta(hidden=16.5),
        with_model_meta(layers=2.0),
    ],
    ids=["offsets-as-text", "offsets-null", "model-meta-list", "hidden-float", "layers-float"],
)
def test_malformed_header_types_are_charterm_errors(good, fn):
    path, raw = good
    bad = path.with_name("bad.safetensors")
    bad.write_bytes(edit(raw, fn))
    with pytest.raises(CharTermError):
        load_model(bad)


@pytest.mark.parametrize("vocab", [list(range(V)), ["ab", *CHARS[1:]]], ids=["ints", "two-char-string"])
def test_vocab_must_be_single_characters(good, vocab):
    path, raw = good
    bad = path.with_name("bad.safetensors")
    bad.write_bytes(edit(raw, set_meta("vocab", json.dumps(vocab))))
    with pytest.raises(CharTermError):
        load_model(bad)


# --- 4. loading never unpickles -----------------------------------------------------------------


class Forbidden(BaseException):
    """A BaseException, so no `except Exception` in the code under test can swallow it."""


def test_load_model_never_calls_torch_load_or_pickle(good, monkeypatch):
    path, _ = good
    calls = []

    def forbid(name):
        def f(*a, **k):
            calls.append(name)
            raise Forbidden(name)

        return f

    for mod, name in [
        (pickle, "Unpickler"),
        (pickle, "load"),
        (pickle, "loads"),
        (torch, "load"),
        (torch.serialization, "load"),
    ]:
        monkeypatch.setattr(mod, name, forbid(f"{mod.__name__}.{name}"))
    with pytest.raises(Forbidden):  # the traps work
        torch.load(path)
    calls.clear()

    loaded = load_model(path)
    assert calls == []
    assert_same_weights(make_model(), loaded.model)
    assert loaded.vocab.chars == tuple(CHARS)

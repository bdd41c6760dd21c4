"""Corpora of any size: folders, the token cache, chunked reading, --max-vocab, --init-from."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

from charterm.config import TrainConfig
from charterm.engine import corpus as corpus_mod
from charterm.engine.checkpoint import load_model
from charterm.engine.corpus import open_corpus, text_files
from charterm.engine.text import UNKNOWN, Vocabulary, read_text
from charterm.engine.training import run_training
from charterm.errors import CharTermError, UsageError


def make_folder(root, texts: dict[str, str]):
    for name, text in texts.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def test_a_folder_is_its_txt_files_joined_in_sorted_order(tmp_path):
    books = make_folder(
        tmp_path / "books",
        {
            "b.txt": "second book\n",
            "a.txt": "first book\n",
            "sub/c.txt": "third\n",
            "notes.md": "not a text",
            ".hidden.txt": "hidden",
            ".git/x.txt": "hidden too",
        },
    )
    assert [p.relative_to(books).as_posix() for p in text_files(books)] == ["a.txt", "b.txt", "sub/c.txt"]
    c = open_corpus(books, separator="\n\n")
    joined = "first book\n\n\nsecond book\n\n\nthird\n"
    assert c.vocab == Vocabulary.from_text(joined)
    assert c.vocab.decode(c.ids) == joined
    assert c.describe()["data_files"] == 3 and c.describe()["data_separator"] == "\n\n"
    assert open_corpus(books, separator="|").vocab.decode(open_corpus(books, separator="|").ids) == (
        "first book\n|second book\n|third\n"
    )


def test_an_empty_folder_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .txt files"):
        open_corpus(tmp_path / "empty")


def test_the_token_file_is_made_once_and_reused(tmp_path, corpus):
    first = open_corpus(corpus)
    again = open_corpus(corpus)
    text = read_text(corpus)
    assert isinstance(again.ids, np.memmap) and again.ids.dtype == np.uint8
    assert not again.encoded_now and again.token_file == first.token_file
    assert np.array_equal(np.asarray(again.ids), Vocabulary.from_text(text).encode(text))
    changed = tmp_path / "changed.txt"
    changed.write_text(text + "more", encoding="utf-8")
    assert open_corpus(changed).encoded_now  # another text, another key


def test_a_damaged_token_file_is_made_again(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcabc\n" * 1000, encoding="utf-8")
    c = open_corpus(p)
    with open(c.token_file, "r+b") as f:
        f.truncate(100)  # as if the encoder had been killed after the rename of a partial file
    again = open_corpus(p)
    assert again.encoded_now and again.vocab.decode(again.ids) == "abcabc\n" * 1000


def test_chunked_reading_matches_reading_whole(tmp_path, monkeypatch):
    """Chunk edges inside a UTF-8 sequence and between CR and LF change nothing."""
    monkeypatch.setattr(corpus_mod, "CHUNK", 7)
    raw = "Ann\u00e9\r\nLevin \u4e16\u754c\r\rKitty\u2014 \U0001f600 end\r".encode() * 9
    p = tmp_path / "t.txt"
    p.write_bytes(raw)
    c = open_corpus(p)
    assert c.vocab.decode(c.ids) == read_text(p)
    assert c.sha256 == __import__("hashlib").sha256(raw).hexdigest()


def test_a_bad_byte_deep_in_the_file_is_reported_at_its_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK", 64)
    p = tmp_path / "t.txt"
    p.write_bytes("\u00e9".encode() * 100 + b"\xff tail")
    with pytest.raises(CharTermError, match=r"not valid utf-8 at byte offset 200 \(b'\\xff ta'\)"):
        open_corpus(p)
    with pytest.raises(CharTermError, match="byte offset 200"):
        read_text(p)  # the whole-file reader says the same
    assert open_corpus(p, encoding="latin-1").vocab.decode(open_corpus(p, encoding="latin-1").ids).endswith("tail")


def test_a_large_vocabulary_gets_wide_tokens(tmp_path):
    text = "".join(chr(0x4E00 + (i * 7919) % 400) for i in range(20_000))  # 400 distinct CJK chars
    p = tmp_path / "zh.txt"
    p.write_text(text, encoding="utf-8")
    c = open_corpus(p)
    assert len(c.vocab) == 400 and c.ids.dtype == np.uint16 and c.token_file.suffix == ".uint16"
    assert c.vocab.decode(c.ids) == text


def test_max_vocab_keeps_the_most_frequent_and_maps_the_rest_to_one_token(tmp_path):
    text = "aaaa bbb cc d\n" * 50 + "xyz\ufffd"
    p = tmp_path / "t.txt"
    p.write_text(text, encoding="utf-8")
    c = open_corpus(p, max_vocab=4)
    assert c.vocab.chars == tuple(sorted("ab c" + UNKNOWN)) and c.vocab.unknown == UNKNOWN
    decoded = c.vocab.decode(c.ids)
    assert decoded == "".join(ch if ch in "ab c" else UNKNOWN for ch in text)
    d = c.describe()
    rare = len(set(text) - set("ab c"))  # d, \n, x, y, z and a literal U+FFFD
    assert d["unknown_chars"] == rare and d["distinct_chars"] == len(set(text))
    assert d["unknown_share"] == pytest.approx(sum(ch not in "ab c" for ch in text) / len(text))
    assert open_corpus(p, max_vocab=100).vocab.unknown is None  # nothing to cut


@pytest.mark.slow
def test_training_on_a_folder_with_max_vocab_then_info_eval_and_generate(tmp_path, corpus):
    text = read_text(corpus)
    half = len(text) // 2
    books = make_folder(tmp_path / "books", {"1.txt": text[:half], "2.txt": text[half:] + "\u00e9\u00e8\u4e16"})
    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(data=str(books), out=str(out), max_vocab=40, max_steps=30, **{**TINY, "epochs": 1})
    run_training(cfg)
    loaded = load_model(out)
    assert len(loaded.vocab) == 41 and loaded.vocab.unknown == UNKNOWN
    assert loaded.info["data_files"] == 2 and loaded.info["data_separator"] == "\n\n"
    assert loaded.info["unknown_chars"] > 3
    card = json.loads(run_cli("info", "--model", out, "--json").stdout)
    assert card["unknown_token"] == UNKNOWN and card["unknown_chars"] == loaded.info["unknown_chars"]
    assert "stands for the" in run_cli("info", "--model", out).stdout
    r = run_cli("eval", "--model", out, "--data", books, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["loss"] == pytest.approx(loaded.info["val_loss"], abs=1e-6)
    r = run_cli("generate", "--model", out, "--chars", "1500", "--top-k", "41", "--temperature", "3", "--seed", "1")
    assert r.returncode == 0 and len(r.stdout) > 1000
    assert UNKNOWN not in r.stdout  # the unknown token is never sampled


def test_init_from_fine_tunes_a_model_on_another_text(tmp_path, corpus, tiny_model):
    base = load_model(tiny_model)
    own = tmp_path / "mine.txt"
    own.write_text(read_text(corpus)[::-1] + "\u201cquoted\u201d \u00fcber \u4e16", encoding="utf-8")
    out = tmp_path / "ft.safetensors"
    run_training(TrainConfig(data=str(own), out=str(out), init_from=str(tiny_model), max_steps=5, **TINY))
    ft = load_model(out)
    assert ft.vocab == base.vocab and ft.model.config == base.model.config
    assert ft.info["train_config"]["init_from"] == str(tiny_model)
    parent = ft.info["parent"]  # how the starting weights were made travels with the fine-tune
    assert parent["command"] == base.info["command"] == "pytest tiny_model"
    assert parent["fingerprint"] == base.fingerprint and parent["steps"] == base.info["steps"]
    assert f"from       pytest tiny_model ({base.info['epochs']} epochs" in run_cli("info", "--model", out).stdout
    cfg = dict(
        data=str(own), out=str(tmp_path / "again.safetensors"), init_from=str(tiny_model), **{**TINY, "epochs": 50}
    )
    run_training(TrainConfig(max_steps=4, **cfg))
    second = run_training(TrainConfig(max_steps=8, **cfg), resume=True, explicit={"max_steps"})  # keeps the lineage
    resume_state = torch.load(second.resume_path, weights_only=True)
    assert resume_state["step"] == 8 and resume_state["parent"] == parent
    assert load_model(second.out).info["parent"] == parent
    r = run_cli("train", "--data", own, "--out", tmp_path / "x.safetensors", "--init-from", tiny_model, "--hidden", "7")
    assert r.returncode == 2 and "--hidden 7 differs" in r.stderr and "Traceback" not in r.stderr


def test_the_unknown_token_is_saved_with_the_model_and_checked_on_load(tmp_path):
    import struct

    from charterm.config import ModelConfig
    from charterm.engine.checkpoint import save_model
    from charterm.engine.model import CharModel

    vocab = Vocabulary(["a", "b", UNKNOWN], unknown=UNKNOWN)
    path = tmp_path / "m.safetensors"
    save_model(path, CharModel(ModelConfig(vocab_size=3, hidden=8, layers=1)), vocab, {})
    assert load_model(path).vocab == vocab and load_model(path).vocab.unknown_id == 2
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["unknown"] = json.dumps("zz")
    bad = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(bad) == n
    (tmp_path / "bad.safetensors").write_bytes(raw[:8] + bad + raw[8 + n :])
    with pytest.raises(CharTermError, match="damaged model metadata"):
        load_model(tmp_path / "bad.safetensors")


def test_an_unwritable_cache_is_a_one_line_error(tmp_path, corpus):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    r = run_cli(
        "train",
        "--data",
        corpus,
        "--out",
        tmp_path / "m.safetensors",
        "--max-steps",
        "1",
        env={"CHARTERM_CACHE": str(blocker / "cache")},
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "cannot write the token file" in line and "CHARTERM_CACHE" in line
    assert not (tmp_path / "m.safetensors").exists()

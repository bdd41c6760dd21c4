import numpy as np
import pytest
from conftest import ANNA, needs_anna

from charterm.engine.text import (
    UNKNOWN,
    Vocabulary,
    check_sizes,
    make_rows,
    read_text,
    row_starts,
    split_train_val,
    window,
)
from charterm.errors import CharTermError, UsageError


@needs_anna
def test_anna_reads_as_in_the_notebook():
    text = read_text(ANNA)
    assert len(text) == 1_985_223
    assert "\r" not in text
    vocab = Vocabulary.from_text(text)
    assert len(vocab) == 83
    assert list(vocab.chars) == sorted(vocab.chars)


def test_universal_newlines(tmp_path):
    p = tmp_path / "crlf.txt"
    p.write_bytes(b"one\r\ntwo\rthree\n")
    assert read_text(p) == "one\ntwo\nthree\n"


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello world \xff\xfe tail")
    with pytest.raises(CharTermError, match="byte offset 12") as e:
        read_text(p)
    assert "--encoding" in str(e.value)
    assert read_text(p, "latin-1").endswith("tail")
    with pytest.raises(UsageError, match="unknown encoding"):
        read_text(p, "no-such-codec")


def test_vocabulary_is_sorted_and_stable():
    a = Vocabulary.from_text("banana bread\n")
    b = Vocabulary.from_text("\nbread banana")
    assert a == b
    assert a.chars == ("\n", " ", "a", "b", "d", "e", "n", "r")
    ids = a.encode("bread")
    assert a.decode(ids) == "bread"
    with pytest.raises(CharTermError, match="'z'"):
        a.encode("zebra")


def test_fold_keeps_known_chars_and_reports_the_rest():
    vocab = Vocabulary.from_text('Anna said "yes" -- it\'s cafe ok.\n')
    folded, report = vocab.fold("\u201cAnna\u201d said caf\u00e9 \u2014 it\u2019s \u0416\u0416 \U0001f600 OK")
    assert folded == '"Anna" said cafe -- it\'s   ok'
    assert all(c in vocab for c in folded)
    assert ("\u201c", '"') in report.changed and ("\u00e9", "e") in report.changed
    assert ("\u2014", "--") in report.changed and ("\u2019", "'") in report.changed
    assert report.dropped["\u0416"] == 2 and report.dropped["\U0001f600"] == 1
    assert ("O", "o") in report.changed  # case folds when only one case is known
    text = report.describe()
    assert "dropped" in text and "changed" in text


def test_fold_of_known_text_is_identity():
    vocab = Vocabulary.from_text("abc \n")
    folded, report = vocab.fold("abc cab\n")
    assert folded == "abc cab\n" and not report


def test_rows_keep_the_notebook_batching():
    ids = np.arange(1000) % 251
    x, y = make_rows(ids, batch_size=4, seq_length=10)
    # (1000 - 1) // 40 = 24 windows per row
    assert x.shape == y.shape == (4, 240)
    # rows are contiguous slices of the text, and targets are inputs shifted by one char
    flat_x = x.reshape(-1)
    assert np.array_equal(flat_x, ids[:960])
    assert np.array_equal(y.reshape(-1), ids[1:961])


def test_windows_read_from_a_memmap_are_the_rows_windows(tmp_path):
    """Training reads each step's window straight from the token file; it must be make_rows'."""
    ids = (np.arange(1003) * 7 % 251).astype(np.uint8)
    ids.tofile(tmp_path / "t.uint8")
    mm = np.memmap(tmp_path / "t.uint8", dtype=np.uint8, mode="r")
    x, y = make_rows(ids, batch_size=4, seq_length=10)
    starts, n_windows = row_starts(len(mm), 4, 10)
    assert n_windows == 25
    for w in range(n_windows):
        xs, ys = window(mm, starts, w * 10, 10)
        assert xs.dtype == np.int64
        assert np.array_equal(xs, x[:, w * 10 : (w + 1) * 10]) and np.array_equal(ys, y[:, w * 10 : (w + 1) * 10])
    two_ranks = [starts[r * 2 : (r + 1) * 2] for r in range(2)]  # torchrun: each rank takes its rows
    assert np.array_equal(np.concatenate([window(mm, s, 30, 10)[0] for s in two_ranks]), x[:, 30:40])


def test_unknown_token_takes_every_char_outside_the_vocabulary():
    vocab = Vocabulary(["a", "b", UNKNOWN], unknown=UNKNOWN)
    assert vocab.decode(vocab.encode("abzq\u4e16")) == "ab" + UNKNOWN * 3
    folded, report = vocab.fold("a\u00e1z")
    assert folded == "aa" + UNKNOWN  # a fold first, the unknown token when none fits
    assert vocab.unknown_id == 2 and Vocabulary(["a", "b", UNKNOWN]) != vocab


def test_split_is_the_last_fraction():
    ids = np.arange(100)
    train, val = split_train_val(ids, 0.1)
    assert len(train) == 90 and val[0] == 90


def test_too_small_says_how_small_and_what_fits():
    with pytest.raises(UsageError) as e:
        check_sizes(5000, 0.1, batch_size=128, seq_length=100)
    msg = str(e.value)
    assert "5,000 chars" in msg and "12,801" in msg and "--batch-size 4" in msg
    check_sizes(5000, 0.1, batch_size=4, seq_length=100)  # fits

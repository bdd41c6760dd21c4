"""Reading text, the character vocabulary, prime folding, and training batches."""

import hashlib
import io
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charterm.errors import CharTermError, UsageError

# Folds for characters whose NFKD form is not what a reader expects.
_FOLDS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "--",
    "\u2015": "--",
    "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\t": " ",
    "\u00df": "ss",
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u0153": "oe",
    "\u0152": "OE",
    "\u00f8": "o",
    "\u00d8": "O",
    "\u0142": "l",
    "\u0141": "L",
    "\u2022": "*",
    "\r": "\n",
}


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read a whole text file strictly, with universal newlines (CRLF and CR become LF)."""
    p = Path(path)
    if not p.exists():
        raise CharTermError(f"{p}: no such file")
    if p.is_dir():
        raise UsageError(f"{p} is a directory; pass a text file")
    raw = p.read_bytes()
    try:
        raw.decode(encoding)
    except LookupError:
        raise UsageError(f"unknown encoding {encoding!r}; try --encoding utf-8 or latin-1") from None
    except UnicodeDecodeError as e:
        raise CharTermError(
            f"{p}: not valid {encoding} at byte offset {e.start} ({raw[e.start : e.start + 4]!r}); "
            f"pass --encoding (e.g. latin-1) or fix the file"
        ) from None
    return io.TextIOWrapper(io.BytesIO(raw), encoding=encoding, newline=None).read()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class FoldReport:
    """What `Vocabulary.fold` did to characters outside the vocabulary."""

    changed: Counter = field(default_factory=Counter)  # (char, replacement) -> count
    dropped: Counter = field(default_factory=Counter)  # char -> count

    def __bool__(self) -> bool:
        return bool(self.changed or self.dropped)

    def describe(self) -> str:
        parts = []
        if self.changed:
            items = ", ".join(f"{a!r}->{b!r}" + (f" (x{n})" if n > 1 else "") for (a, b), n in self.changed.items())
            parts.append(f"changed {items}")
        if self.dropped:
            items = ", ".join(f"{a!r}" + (f" (x{n})" if n > 1 else "") for a, n in self.dropped.items())
            parts.append(f"dropped {items}")
        return "; ".join(parts) + " (not in the model's vocabulary)"


UNKNOWN = "\ufffd"  # the unknown-char token of a vocabulary cut by --max-vocab


class Vocabulary:
    """The ordered set of characters a model knows; index i is the i-th char in sorted order.

    `unknown`, when set, is a char of the vocabulary that stands for every char outside it."""

    def __init__(self, chars: str | list[str] | tuple[str, ...], unknown: str | None = None):
        self.chars: tuple[str, ...] = tuple(chars)
        if len(set(self.chars)) != len(self.chars):
            raise CharTermError("vocabulary has repeated characters")
        self.index = {c: i for i, c in enumerate(self.chars)}
        if unknown is not None and unknown not in self.index:
            raise CharTermError("the unknown-char token is not in the vocabulary")
        self.unknown = unknown

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(sorted(set(text)))

    @classmethod
    def from_counts(cls, counts: dict[str, int], max_vocab: int = 0) -> "Vocabulary":
        """All chars of a text, or (max_vocab > 0 and more distinct chars than that) its
        max_vocab most frequent plus an unknown-char token for the rest."""
        if not max_vocab or len(counts) <= max_vocab:
            return cls(sorted(counts))
        ranked = sorted((c for c in counts if c != UNKNOWN), key=lambda c: (-counts[c], c))
        return cls(sorted([*ranked[:max_vocab], UNKNOWN]), unknown=UNKNOWN)

    @property
    def unknown_id(self) -> int | None:
        return self.index[self.unknown] if self.unknown else None

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.chars, self.unknown) == (other.chars, other.unknown)

    def __contains__(self, ch: str) -> bool:
        return ch in self.index

    @property
    def dtype(self):
        return np.uint8 if len(self) <= 256 else (np.uint16 if len(self) <= 65536 else np.uint32)

    def encode(self, text: str) -> np.ndarray:
        """Encode text made only of known chars (training text); raises on unknown chars unless
        the vocabulary has an unknown-char token."""
        if self.unknown:
            unk = self.index[self.unknown]
            return np.fromiter((self.index.get(c, unk) for c in text), dtype=self.dtype, count=len(text))
        try:
            return np.fromiter((self.index[c] for c in text), dtype=self.dtype, count=len(text))
        except KeyError as e:
            raise CharTermError(f"character {e.args[0]!r} is not in the model's vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def fold(self, text: str) -> tuple[str, FoldReport]:
        """Map text onto the vocabulary: keep known chars, fold the rest where a sensible fold
        exists (curly quotes to straight, NFKD without accents, case), and drop what remains, or
        map it to the unknown-char token when the vocabulary has one."""
        report = FoldReport()
        out = []
        for ch in text:
            if ch in self.index:
                out.append(ch)
                continue
            rep = self.fold_char(ch)
            if rep is None:
                report.dropped[ch] += 1
            else:
                report.changed[(ch, rep)] += 1
                out.append(rep)
        return "".join(out), report

    def fold_char(self, ch: str) -> str | None:
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        candidates = [
            _FOLDS.get(ch, ""),
            base,
            "".join(_FOLDS.get(c, c) for c in base),
            ch.lower(),
            ch.upper(),
            " " if ch.isspace() else "",
        ]
        for cand in candidates:
            if cand and cand != ch and all(c in self.index for c in cand):
                return cand
        return self.unknown


def split_train_val(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's split: the first (1 - val_frac) of the text trains, the rest validates."""
    cut = int(len(ids) * (1 - val_frac))
    return ids[:cut], ids[cut:]


def make_rows(ids: np.ndarray, batch_size: int, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ids into `batch_size` contiguous rows of whole windows; targets are inputs shifted by
    one char. Returns (inputs, targets), each (batch_size, n_windows * seq_length)."""
    n_windows = windows_in(len(ids), batch_size, seq_length)
    keep = n_windows * batch_size * seq_length
    x = ids[:keep].reshape(batch_size, -1)
    y = ids[1 : keep + 1].reshape(batch_size, -1)
    return x, y


def row_starts(n_chars: int, rows: int, seq_length: int) -> tuple[np.ndarray, int]:
    """Where each of `rows` contiguous rows of whole windows starts, and the windows per row:
    the layout of `make_rows`, without copying the text."""
    n_windows = windows_in(n_chars, rows, seq_length)
    return np.arange(rows, dtype=np.int64) * (n_windows * seq_length), n_windows


def window(ids: np.ndarray, starts: np.ndarray, offset: int, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (each (rows, seq_length), int64) of the window at `offset` in every row;
    `ids` may be a memmap, only these chars are read."""
    block = np.asarray(ids[starts[:, None] + (offset + np.arange(seq_length + 1))], dtype=np.int64)
    return block[:, :-1], block[:, 1:]


def windows_in(n_chars: int, batch_size: int, seq_length: int) -> int:
    return max(0, (n_chars - 1) // (batch_size * seq_length))


def check_sizes(n_chars: int, val_frac: float, batch_size: int, seq_length: int) -> None:
    """Raise a clear error when the text cannot fill one training and one validation batch."""
    n_val = n_chars - int(n_chars * (1 - val_frac))
    n_train = n_chars - n_val
    if windows_in(n_train, batch_size, seq_length) >= 1 and windows_in(n_val, batch_size, seq_length) >= 1:
        return
    smallest = min(n_train, n_val)
    fit = (smallest - 1) // seq_length
    if fit >= 1:
        hint = f"--batch-size {fit} would fit at --seq-length {seq_length}"
    elif (smallest - 1) // batch_size >= 1:
        hint = f"try --seq-length {(smallest - 1) // batch_size} or a smaller --batch-size"
    else:
        hint = f"try --batch-size {max(1, smallest - 1)} --seq-length 1"
    raise UsageError(
        f"text too small: {n_chars:,} chars gives {n_train:,} for training and {n_val:,} for validation "
        f"(--val-frac {val_frac}), but one batch needs {batch_size * seq_length + 1:,} "
        f"(--batch-size {batch_size} x --seq-length {seq_length} + 1); {hint}, or use more text"
    )

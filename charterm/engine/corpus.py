"""Training text of any size: a file or a folder of .txt files, read in chunks, encoded once.

A corpus is hashed (raw bytes, cheap), its characters counted (cached by hash), and encoded to a
flat token file (uint8, uint16 or uint32 by vocabulary size) in the cache dir, keyed by the data's
sha256, the encoding and the vocabulary. Training and evaluation read that file through
`numpy.memmap`, so memory stays flat whatever the size of the text, and a second run on the same
text starts without re-encoding.
"""

import codecs
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charterm.engine.text import FoldReport, Vocabulary
from charterm.errors import CharTermError, UsageError
from charterm.files import atomic_path, atomic_write_bytes
from charterm.paths import cache_dir

SEPARATOR = "\n\n"  # between the files of a folder
CHUNK = 1 << 22  # bytes read at a time
CACHE_FORMAT = 1
STATUS_BYTES = 16 << 20  # texts at least this big say when they are being counted or encoded


def text_files(path: Path) -> list[Path]:
    """The files a --data path stands for: itself, or a folder's .txt files (recursively,
    sorted by relative path, hidden ones skipped)."""
    if not path.exists():
        raise CharTermError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path]
    visible = (p for p in path.rglob("*.txt") if not any(s.startswith(".") for s in p.relative_to(path).parts))
    files = sorted((p for p in visible if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise UsageError(f"{path} is a folder with no .txt files; put the training texts there or pass a file")
    return files


@dataclass
class Corpus:
    """A text (one file or a folder) as token ids on disk. `ids` is a read-only memmap."""

    path: Path
    files: list[Path]
    separator: str
    encoding: str
    sha256: str
    counts: dict[str, int]  # every char of the text and how often it occurs
    vocab: Vocabulary
    ids: np.ndarray
    token_file: Path
    encoded_now: bool  # False when the token file came from the cache

    def __len__(self) -> int:
        return len(self.ids)

    def describe(self) -> dict:
        """What a model's metadata records about the data it was trained on."""
        d = {
            "data": self.path.name,
            "data_sha256": self.sha256,
            "chars": len(self.ids),
            "data_files": len(self.files),
            "distinct_chars": len(self.counts),
        }
        if self.path.is_dir():
            d["data_separator"] = self.separator
        if self.vocab.unknown:
            known = set(self.vocab.chars)
            rare = {c: n for c, n in self.counts.items() if c not in known or c == self.vocab.unknown}
            d["unknown_chars"] = len(rare)
            d["unknown_share"] = sum(rare.values()) / max(1, sum(self.counts.values()))
        return d


def open_corpus(
    path: str | os.PathLike,
    encoding: str = "utf-8",
    separator: str = SEPARATOR,
    max_vocab: int = 0,
    vocab: Vocabulary | None = None,
    on_fold: Callable[[FoldReport], None] = lambda r: None,
    on_status: Callable[[str], None] = lambda s: None,
) -> Corpus:
    """Hash, count and encode a corpus, each step skipped when its result is cached.

    Without `vocab` the vocabulary is made from the text (at most `max_vocab` chars plus an
    unknown-char token when set); with it (evaluation) the text is folded onto that vocabulary
    and `on_fold` hears what was changed."""
    path = Path(path)
    files = text_files(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(f"unknown encoding {encoding!r}; try --encoding utf-8 or latin-1") from None
    if sum(f.stat().st_size for f in files) < STATUS_BYTES:
        on_status = lambda s: None  # noqa: E731 - instant for small texts: nothing to say
    sha = _hash(files, separator)
    root = cache_dir()
    counts_file = root / "counts" / f"{sha}-{encoding}.json"
    counts = _read_counts(counts_file)
    if counts is None:
        on_status(f"counting the chars of {path}")
        counts = _count(files, encoding, separator)
        _write_json(counts_file, {"format": CACHE_FORMAT, "counts": counts})
    if vocab is None:
        vocab = Vocabulary.from_counts(counts, max_vocab)
    key = hashlib.sha256(json.dumps([sha, encoding, list(vocab.chars), vocab.unknown]).encode()).hexdigest()[:32]
    token_file = root / "tokens" / f"{key}.{np.dtype(vocab.dtype).name}"
    meta_file = token_file.with_suffix(token_file.suffix + ".json")
    n = _valid_tokens(token_file, meta_file, vocab)
    encoded_now = n is None
    if encoded_now:
        on_status(f"encoding {path} (once; cached in {token_file.parent})")
        report = FoldReport()
        try:
            n = _encode(files, encoding, separator, vocab, token_file, report)
        except OSError as e:
            raise CharTermError(
                f"cannot write the token file in {token_file.parent} ({e.strerror or e}); "
                f"free some space or set CHARTERM_CACHE to a writable folder"
            ) from None
        _write_json(meta_file, {"format": CACHE_FORMAT, "tokens": n, "dtype": np.dtype(vocab.dtype).name})
        if report:
            on_fold(report)
    elif any(c not in vocab for c in counts) and not vocab.unknown:
        report = FoldReport()
        for c, k in counts.items():
            if c not in vocab:
                rep = vocab.fold_char(c)
                if rep is None:
                    report.dropped[c] += k
                else:
                    report.changed[(c, rep)] += k
        on_fold(report)
    ids = np.memmap(token_file, dtype=vocab.dtype, mode="r", shape=(n,)) if n else np.zeros(0, vocab.dtype)
    return Corpus(path, files, separator, encoding, sha, counts, vocab, ids, token_file, encoded_now)


def _hash(files: list[Path], separator: str) -> str:
    """sha256 of the joined raw bytes; for one file, the file's own sha256."""
    h = hashlib.sha256()
    for i, f in enumerate(files):
        if i:
            h.update(separator.encode("utf-8"))
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
    return h.hexdigest()


def iter_text(files: list[Path], encoding: str, separator: str) -> Iterator[str]:
    """The joined text in chunks: strict decoding, universal newlines (CRLF and CR become LF)."""
    for i, f in enumerate(files):
        if i:
            yield separator
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        text = io.IncrementalNewlineDecoder(decoder, translate=True)
        offset = 0
        with open(f, "rb") as fh:
            while True:
                block = fh.read(CHUNK)
                pending = decoder.getstate()[0]
                try:
                    chunk = text.decode(block, final=not block)
                except UnicodeDecodeError as e:
                    seen = pending + block
                    raise CharTermError(
                        f"{f}: not valid {encoding} at byte offset {offset - len(pending) + e.start} "
                        f"({seen[e.start : e.start + 4]!r}); pass --encoding (e.g. latin-1) or fix the file"
                    ) from None
                offset += len(block)
                if chunk:
                    yield chunk
                if not block:
                    break


def _codepoints(chunk: str) -> np.ndarray:
    return np.frombuffer(chunk.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _count(files: list[Path], encoding: str, separator: str) -> dict[str, int]:
    totals: dict[int, int] = {}
    for chunk in iter_text(files, encoding, separator):
        counts = np.bincount(_codepoints(chunk))
        for cp in np.flatnonzero(counts):
            totals[int(cp)] = totals.get(int(cp), 0) + int(counts[cp])
    return {chr(cp): n for cp, n in sorted(totals.items())}


def _encode(files: list[Path], encoding: str, separator: str, vocab: Vocabulary, dest: Path, report: FoldReport) -> int:
    lut = np.full(0x110000, -1, dtype=np.int64)
    for i, c in enumerate(vocab.chars):
        lut[ord(c)] = i
    if vocab.unknown:
        lut[lut < 0] = vocab.index[vocab.unknown]
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for chunk in iter_text(files, encoding, separator):
            ids = lut[_codepoints(chunk)]
            if (ids < 0).any():  # chars outside a given vocabulary: fold them (evaluation only)
                folded, r = vocab.fold(chunk)
                report.changed.update(r.changed)
                report.dropped.update(r.dropped)
                ids = lut[_codepoints(folded)]
            out.write(ids.astype(vocab.dtype).tobytes())
            n += len(ids)
    return n


def _read_counts(path: Path) -> dict[str, int] | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        counts = d["counts"] if d.get("format") == CACHE_FORMAT else None
        if isinstance(counts, dict) and all(isinstance(k, str) and len(k) == 1 for k in counts):
            return {k: int(v) for k, v in counts.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _valid_tokens(token_file: Path, meta_file: Path, vocab: Vocabulary) -> int | None:
    """The token count of a complete cached token file, or None (missing, partial, damaged)."""
    try:
        meta = json.loads(meta_file.read_text())
        n = int(meta["tokens"])
        if meta.get("format") != CACHE_FORMAT or meta.get("dtype") != np.dtype(vocab.dtype).name:
            return None
        if token_file.stat().st_size != n * np.dtype(vocab.dtype).itemsize:
            return None
        return n
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    try:
        atomic_write_bytes(path, json.dumps(obj, ensure_ascii=True).encode())
    except OSError:
        pass  # a cache that cannot be written only costs time

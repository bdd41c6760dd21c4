"""The model file: one .safetensors file, weights plus metadata. Loading never unpickles.

Before any tensor is read, the header is checked against the architecture it declares (names,
dtypes, shapes, byte ranges), so a damaged or hostile file is a clear error, not a huge allocation.
"""

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charterm.config import ModelConfig
from charterm.engine.model import CharModel, State
from charterm.engine.text import Vocabulary
from charterm.errors import CharTermError
from charterm.files import atomic_path

FORMAT = "charterm-model/1"
MAX_HEADER = 16 << 20
_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}
_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


@dataclass
class LoadedModel:
    model: CharModel
    vocab: Vocabulary
    info: dict = field(default_factory=dict)  # how it was made: data, sha256, steps, val loss, ...
    path: Path | None = None
    dtype: str = "F32"

    @property
    def fingerprint(self) -> str:
        """Identifies these exact weights (for caches keyed by model)."""
        return self.info.get("fingerprint", "")


def save_model(path, model: CharModel, vocab: Vocabulary, info: dict, dtype=torch.float32) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    fingerprint = _fingerprint(tensors)
    metadata = {
        "format": FORMAT,
        "model": json.dumps(model.config.to_dict()),
        "vocab": json.dumps(list(vocab.chars), ensure_ascii=True),
        "info": json.dumps({**info, "fingerprint": fingerprint}, ensure_ascii=True),
    }
    if vocab.unknown:
        metadata["unknown"] = json.dumps(vocab.unknown, ensure_ascii=True)
    data = save(tensors, metadata=metadata)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def export_model(src, dst, dtype: str, command: str) -> tuple["LoadedModel", "LoadedModel"]:
    """Writes src's weights in another dtype (F32, F16 or BF16) to dst, with src's metadata and a
    record of the conversion. Returns (source, written) as loaded from disk."""
    source = load_model(src)
    info = {k: v for k, v in source.info.items() if k not in ("fingerprint", "export")}
    info["export"] = {
        "dtype": dtype,
        "from_dtype": source.dtype,
        "from_fingerprint": source.fingerprint,
        "command": command,
    }
    save_model(dst, source.model, source.vocab, info, dtype=_DTYPES[dtype][0])
    return source, load_model(dst)


def weights_fingerprint(model: CharModel) -> str:
    """The fingerprint `save_model` records for these weights in float32."""
    return _fingerprint({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()})


def _fingerprint(tensors: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].view(torch.uint8).numpy().tobytes() if tensors[k].numel() else b"")
    return h.hexdigest()[:16]


def read_header(path) -> tuple[dict, dict, int]:
    """Parse and sanity-check a safetensors header without reading tensors.
    Returns (metadata, tensor entries, data start offset)."""
    path = Path(path)
    if not path.exists():
        raise CharTermError(f"{path}: no such model file")
    if path.is_dir():
        raise CharTermError(f"{path} is a directory, not a model file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        impossible = n is None or n > MAX_HEADER or 8 + n > size
        if impossible and (head[:2] == b"PK" or head[:1] == b"\x80"):
            raise CharTermError(
                f"{path} is a PyTorch pickle; charterm loads only .safetensors model files "
                f"(pickles can run code when loaded)"
            )
        if n is None:
            raise CharTermError(f"{path} is not a charterm model file (too short)")
        if impossible:
            raise CharTermError(f"{path} is not a charterm model file (bad or truncated header)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CharTermError(f"{path} is not a charterm model file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CharTermError(f"{path} is not a charterm model file (bad header)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CharTermError(f"{path} is not a charterm model file (no {FORMAT} metadata)")
    return meta, header, 8 + n


def load_model(path, device="cpu") -> LoadedModel:
    from safetensors import safe_open

    path = Path(path)
    meta, entries, start = read_header(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["model"]))
        unknown = json.loads(meta["unknown"]) if "unknown" in meta else None
        if unknown is not None and not (isinstance(unknown, str) and len(unknown) == 1):
            raise ValueError("the unknown-char token must be one character")
        vocab = Vocabulary(json.loads(meta["vocab"]), unknown)
        info = json.loads(meta.get("info", "{}"))
        if not isinstance(info, dict):
            raise ValueError("info is not an object")
        if not all(type(getattr(config, k)) is int for k in ("vocab_size", "embed", "hidden", "layers")):
            raise ValueError("architecture sizes must be integers")
        if not all(isinstance(x, int | float) for x in (config.dropout, config.weight_drop)):
            raise ValueError("dropout must be a number")
        if not all(isinstance(c, str) and len(c) == 1 for c in vocab.chars):
            raise ValueError("vocabulary entries must be single characters")
        if config.cell not in ("lstm", "gru") or not (0 < config.vocab_size < 1 << 21):
            raise ValueError("architecture")
        if not (0 < config.hidden <= 1 << 14 and 0 < config.layers <= 64 and 0 < config.embed <= 1 << 14):
            raise ValueError("architecture size")
    except (KeyError, ValueError, TypeError, AttributeError, CharTermError) as e:
        raise CharTermError(f"{path}: damaged model metadata ({e})") from None
    if len(vocab) != config.vocab_size:
        raise CharTermError(f"{path}: vocabulary has {len(vocab)} chars but the weights expect {config.vocab_size}")
    expected = {k: tuple(v.shape) for k, v in CharModel(config, device="meta").state_dict().items()}
    size = path.stat().st_size - start
    dtypes = set()
    if set(entries) != set(expected):
        missing, extra = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
        raise CharTermError(f"{path}: weights do not match the architecture (missing {missing}, extra {extra})")
    for name, e in entries.items():
        try:
            dtype, width = _DTYPES[e["dtype"]]
            shape, (lo, hi) = tuple(e["shape"]), e["data_offsets"]
            if not all(type(v) is int for v in (*shape, lo, hi)):
                raise TypeError("non-integer shape or offsets")
        except (KeyError, TypeError, ValueError):
            raise CharTermError(f"{path}: tensor {name} has an unsupported dtype or a bad entry") from None
        if shape != expected[name]:
            raise CharTermError(f"{path}: tensor {name} has shape {list(shape)}, expected {list(expected[name])}")
        if not (0 <= lo <= hi <= size) or hi - lo != width * _numel(shape):
            raise CharTermError(f"{path}: tensor {name} lies outside the file (truncated or damaged)")
        dtypes.add(e["dtype"])
    model = CharModel(config)
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k).to(torch.float32) for k in expected}
    except Exception as e:  # safetensors raises its own error types
        raise CharTermError(f"{path}: damaged model file ({e})") from None
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(model.to(device), vocab, info, path, "/".join(sorted(dtypes)))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# what a model file's metadata may say about how it was made, as `info --json` and the app show it
CARD_INFO = (
    "val_loss", "train_loss", "data", "data_sha256", "epochs", "steps", "wall_time", "machine", "created",
    "command", "charterm_version", "fingerprint", "distinct_chars", "unknown_chars", "unknown_share",
    "data_files", "parent", "export", "import",
)  # fmt: skip


def model_card(loaded: LoadedModel) -> dict:
    """The one model card: what `charterm info` prints and the app's side pane shows (plain
    values, safe to send between processes)."""
    c, info = loaded.model.config, loaded.info
    path = Path(loaded.path) if loaded.path else None
    card = {
        "name": path.name if path else "model",
        "path": str(path.resolve()) if path else "",
        "file_size": path.stat().st_size if path and path.exists() else None,
        "dtype": loaded.dtype,
        "cell": c.cell,
        "hidden": c.hidden,
        "layers": c.layers,
        "embed": c.embed,
        "dropout": c.dropout,
        "vocab_size": c.vocab_size,
        "params": loaded.model.n_params,
        "vocab": "".join(loaded.vocab.chars),
        "unknown_token": loaded.vocab.unknown,
    }
    card.update((k, info.get(k)) for k in CARD_INFO)
    card["train_text"] = info.get("train_config", {}).get("data")  # the path it was trained from, as given
    if not isinstance(card["val_loss"], int | float):
        card["val_loss"] = None
    return card


def pack_state(state: State) -> bytes:
    from safetensors.torch import save

    return save({f"s{i}": s.detach().float().cpu().contiguous() for i, s in enumerate(state)})


def unpack_state(data: bytes | None, loaded: LoadedModel) -> State | None:
    """The stored state if it fits this model's shapes, else None (then it is rebuilt)."""
    if not data:
        return None
    from safetensors.torch import load

    c = loaded.model.config
    n = 2 if c.cell == "lstm" else 1
    try:
        d = load(data)
        state = tuple(d[f"s{i}"] for i in range(n))
    except Exception:  # a damaged cache is not an error: the text is the source of truth
        return None
    if len(d) != n or any(s.shape != (c.layers, 1, c.hidden) or s.dtype != torch.float32 for s in state):
        return None
    return state

"""The training loop: Adam, cross-entropy, clipping, truncated BPTT, periodic validation.

Everything a front-end needs arrives as `charterm.train_events`; `run_training` never prints.
The best-validation model goes to `out` and a resume state beside it, both written atomically.
"""

import ctypes
import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from charterm import __version__
from charterm import train_events as te
from charterm.checkpoint import save_model, weights_fingerprint
from charterm.config import ModelConfig, TrainConfig
from charterm.corpus import Corpus, open_corpus
from charterm.distributed import Ranks
from charterm.errors import CharTermError, UsageError
from charterm.evaluate import _autocast, evaluate
from charterm.fsutil import atomic_path, remove_stale_temps
from charterm.model import CharModel
from charterm.text import Vocabulary, check_sizes, row_starts, split_train_val, window

RESUME_FORMAT = "charterm-resume/1"
# Automatic validation cadence: first pass after FIRST_EVAL_SECONDS, then often enough that the
# full validation pass takes about EVAL_SHARE of the time (the notebook's every-10-steps pass
# doubled its training time). Evaluation never changes the training trajectory.
FIRST_EVAL_SECONDS = 10.0
EVAL_SHARE = 0.05
BASELINE_CHARS = 50_000  # validation chars a --baseline model and each checkpoint are compared on
# Options that may differ on --resume; everything else must match the saved run.
RESUMABLE_OVERRIDES = {
    "epochs",
    "max_steps",
    "max_time",
    "eval_every",
    "eval_chars",
    "device",
    "data",
    "out",
    "encoding",
}


@dataclass
class TrainResult:
    out: Path
    resume_path: Path
    steps: int
    best_val_loss: float
    interrupted: bool


def resume_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".resume.pt")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: Apple MPS is not available; use --device cpu or auto")
    return torch.device(name)


def keep_buffers_in_heap() -> None:
    """Stop glibc from unmapping and re-mapping the large per-step buffers (page faults every
    step); worth 10-15% on CPU. No-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-4, 0)  # M_MMAP_MAX
    except (OSError, AttributeError):
        pass


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    lo = cfg.lr * cfg.min_lr_frac
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * p))


def kept_rows(cfg: TrainConfig, step: int, rows: int) -> torch.Tensor:
    """Which of all `rows` keep their carried state at this step (the rest start from zeros). A
    function of the seed and step alone: the same for any process count, and on --resume."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    return (torch.rand(rows, generator=g) >= cfg.state_reset).float()


def load_resume_state(path: Path) -> dict:
    if not path.exists():
        raise CharTermError(f"no resume state at {path}; train without --resume to start a new run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CharTermError(f"{path}: unreadable resume state ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CharTermError(f"{path} is not a charterm resume state")
    return state


def _vocab_difference(old: Vocabulary, new: Vocabulary) -> str:
    gone = "".join(sorted(set(old.chars) - set(new.chars)))
    added = "".join(sorted(set(new.chars) - set(old.chars)))
    return f"chars no longer in the text: {gone!r}; new chars: {added!r}"


class StopFlag:
    """Set by a signal handler (or a front-end) to end training at the next step boundary."""

    def __init__(self):
        self.reason = ""

    def set(self, reason: str = "interrupted") -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return bool(self.reason)


def run_training(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    explicit: set[str] | None = None,
    on_event=lambda e: None,
    stop: StopFlag | None = None,
    command: str = "",
    ranks: Ranks | None = None,
    baseline: str | os.PathLike | None = None,
) -> TrainResult:
    """Train per `cfg`. Under torchrun pass the `Ranks` from `distributed.start`: every rank
    calls this, rank 0 alone writes files and sends events. `baseline`: a model file to score
    on the validation text first, so each checkpoint can be compared with it."""
    stop = stop if stop is not None else StopFlag()
    ranks = ranks or Ranks()
    explicit = explicit or set()
    emit = on_event if ranks.is_main else (lambda e: None)
    data_path = Path(cfg.data)
    if not data_path.exists():
        hint = " (run `charterm data fetch anna` to get it)" if data_path.name == "anna.txt" else ""
        raise CharTermError(f"training text {data_path} not found{hint}; or pass --data PATH")
    out = Path(cfg.out or f"models/{data_path.stem}.safetensors")
    rpath = resume_path_for(out)
    baseline_model = _load_baseline(baseline) if baseline and ranks.is_main else None

    saved = None
    if resume:
        saved = load_resume_state(rpath)
        saved_cfg = TrainConfig(**{"state_reset": 0.0, **saved["config"]})  # runs saved before it existed
        for name in explicit - RESUMABLE_OVERRIDES:
            if getattr(cfg, name) != getattr(saved_cfg, name):
                raise UsageError(
                    f"--{name.replace('_', '-')} cannot change on --resume (saved run used {getattr(saved_cfg, name)})"
                )
        for name in explicit & RESUMABLE_OVERRIDES:
            setattr(saved_cfg, name, getattr(cfg, name))
        saved_cfg.out = str(out)
        cfg = saved_cfg
        if saved.get("world", 1) != ranks.world:
            raise UsageError(
                f"the saved run trained with {saved.get('world', 1)} process(es); resume it with "
                f"torchrun --nproc_per_node={saved.get('world', 1)} (this is {ranks.world})"
            )
    elif out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it, --resume to continue, or --out PATH")

    start_from = _start_from(cfg, explicit) if cfg.init_from and saved is None else None
    fixed_vocab = start_from.vocab if start_from else None  # a fine-tune keeps its model's vocabulary
    if saved is not None and cfg.init_from:
        fixed_vocab = Vocabulary(saved["vocab"], saved.get("unknown"))
    corpus = _open_corpus_once(cfg, data_path, saved, ranks, emit, fixed_vocab)
    vocab, data_sha = corpus.vocab, corpus.sha256
    rows = cfg.batch_size * ranks.world  # each rank trains on its own batch_size rows
    check_sizes(len(corpus), cfg.val_frac, rows, cfg.seq_length)
    if len(vocab) < 2:
        raise UsageError(f"{data_path} has only {len(vocab)} distinct char(s); a model needs at least 2")
    if ranks.is_main:
        for path in (out, rpath):  # half-written files of a run that was killed mid-write
            remove_stale_temps(path)

    train_ids, val_ids = split_train_val(corpus.ids, cfg.val_frac)
    starts, n_windows = row_starts(len(train_ids), rows, cfg.seq_length)
    starts = starts[ranks.rank * cfg.batch_size : (ranks.rank + 1) * cfg.batch_size]
    eval_windows = math.ceil(cfg.eval_chars / (rows * cfg.seq_length)) if cfg.eval_chars else 0
    device = pick_device(cfg.device)
    if device.type == "cpu":
        keep_buffers_in_heap()

    torch.manual_seed(cfg.seed)
    mconf = ModelConfig(
        vocab_size=len(vocab),
        cell=cfg.cell,
        embed=cfg.embed,
        hidden=cfg.hidden,
        layers=cfg.layers,
        dropout=cfg.dropout,
        weight_drop=cfg.weight_drop,
    )
    model = CharModel(mconf).to(device)
    if start_from is not None:
        model.load_state_dict(start_from.model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, epoch, win, elapsed, best_val = 0, 0, 0, 0.0, math.inf
    hidden = None
    if ranks.rank:
        torch.manual_seed(cfg.seed + ranks.rank)  # the same initial weights, different dropout masks
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        step, epoch, win = saved["step"], saved["epoch"], saved["window"]
        elapsed, best_val = saved["elapsed"], saved["best_val"]
        mine = saved["hidden"] if ranks.world == 1 else saved["hidden"][ranks.rank]
        hidden = tuple(h.to(device) for h in mine) if mine else None
        torch.set_rng_state(saved["rng"] if ranks.world == 1 else saved["rng"][ranks.rank])
        if device.type == "cuda" and saved.get("cuda_rng") is not None and ranks.world == 1:
            torch.cuda.set_rng_state(saved["cuda_rng"])
    net = model
    if ranks.active:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    total_steps = cfg.epochs * n_windows
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    next_eval_at = FIRST_EVAL_SECONDS + elapsed  # for the automatic cadence (eval_every == 0)
    last_eval_seconds = 0.0
    chars_per_step = rows * cfg.seq_length
    baseline_windows = max(1, math.ceil(BASELINE_CHARS / (cfg.batch_size * cfg.seq_length)))
    baseline_val = None
    if baseline_model is not None:
        emit(te.Data(message=f"scoring {Path(baseline).name} on {BASELINE_CHARS:,} chars of the validation text"))
        baseline_val = baseline_loss(baseline_model, vocab, val_ids, cfg, baseline_windows)
    emit(
        te.Start(
            params=model.n_params,
            chars=len(corpus),
            train_chars=len(train_ids),
            val_chars=len(val_ids),
            vocab_size=len(vocab),
            steps_per_epoch=n_windows,
            total_steps=total_steps,
            epochs=cfg.epochs,
            step=step,
            device=str(device),
            processes=ranks.world,
            out=str(out),
            resumed=saved is not None,
            max_time=cfg.max_time,
            config=cfg.to_dict(),
            baseline=str(baseline) if baseline else None,
            baseline_val_loss=baseline_val,
        )
    )

    started = time.monotonic() - elapsed
    last_step_event = 0.0
    train_loss = math.nan
    last_eval_step = step if saved is not None else -1
    parent = _lineage(start_from.info) if start_from is not None else (saved or {}).get("parent")
    info_base = {
        **corpus.describe(),
        **({"parent": parent} if parent else {}),
        "command": command,
        "charterm_version": __version__,
        "machine": machine_description(device) + (f", {ranks.world} processes" if ranks.world > 1 else ""),
        "train_config": cfg.to_dict(),
    }

    def agreed(flag: bool) -> bool:
        """True on every rank when it is true on any (ranks must agree on when to stop)."""
        return ranks.sum([float(flag)])[0] > 0 if ranks.active else flag

    def progress() -> float:
        p = step / total_steps if total_steps else 1.0
        if cfg.max_time:
            p = max(p, (time.monotonic() - started) / cfg.max_time)
        return p

    def save_resume() -> None:
        mine = tuple(h.detach().cpu() for h in hidden) if hidden is not None else None
        hiddens, rngs = ranks.gather(mine), ranks.gather(torch.get_rng_state())
        if not ranks.is_main:
            return
        payload = {
            "format": RESUME_FORMAT,
            "config": cfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "epoch": epoch,
            "window": win,
            "elapsed": time.monotonic() - started,
            "best_val": best_val,
            "world": ranks.world,
            "hidden": hiddens[0] if ranks.world == 1 else hiddens,
            "rng": rngs[0] if ranks.world == 1 else rngs,
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "vocab": list(vocab.chars),
            "unknown": vocab.unknown,
            "data_sha256": data_sha,
            "parent": parent,
        }
        with atomic_path(rpath) as tmp:
            torch.save(payload, tmp)

    def run_eval() -> None:
        nonlocal best_val, last_eval_step, next_eval_at, last_eval_seconds
        t0 = time.monotonic()
        val, n = evaluate(
            model,
            val_ids,
            cfg.batch_size,
            cfg.seq_length,
            should_stop=(lambda: bool(stop)) if not ranks.active else (lambda: False),
            part=(ranks.rank, ranks.world),
            max_windows=eval_windows,
        )
        if ranks.active:
            total, n = ranks.sum([val * n, n])
            val = total / n
        if agreed(bool(stop)):
            stop.set(stop.reason or "interrupted")
            return
        last_eval_step = step
        spent = last_eval_seconds = time.monotonic() - t0
        next_eval_at = time.monotonic() - started + max(FIRST_EVAL_SECONDS, spent * (1 - EVAL_SHARE) / EVAL_SHARE)
        improved = val < best_val
        emit(
            te.Eval(
                step=step,
                epoch=epoch + win / n_windows,
                val_loss=val,
                train_loss=train_loss,
                best_val_loss=min(val, best_val),
                improved=improved,
                seconds=round(spent, 3),
            )
        )
        ranks.barrier()
        if improved:
            best_val = val
            if ranks.is_main:
                info = {
                    **info_base,
                    "epochs": round(epoch + win / n_windows, 4),
                    "steps": step,
                    "val_loss": val,
                    "train_loss": train_loss,
                    "wall_time": round(time.monotonic() - started, 1),
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                save_model(out, model, vocab, info)
            mine = None
            if baseline_val is not None:  # this model on the chars the baseline was scored on
                mine, _ = evaluate(model, val_ids, cfg.batch_size, cfg.seq_length, max_windows=baseline_windows)
                model.train()
            emit(
                te.Checkpoint(
                    step=step, val_loss=val, path=str(out), baseline_val_loss=baseline_val, compared_val_loss=mine
                )
            )
        save_resume()

    model.train()
    t_window, chars_window = time.monotonic(), 0
    budget_spent = bool(cfg.max_steps and step >= cfg.max_steps) or agreed(
        bool(cfg.max_time) and elapsed >= cfg.max_time
    )
    while epoch < cfg.epochs and not stop and not budget_spent:
        if win == 0 and hidden is None:
            hidden = model.init_state(cfg.batch_size, device)
        while win < n_windows:
            lr = lr_at(cfg, step, progress())
            for group in opt.param_groups:
                group["lr"] = lr
            xs, ys = window(train_ids, starts, win * cfg.seq_length, cfg.seq_length)
            x, y = torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)
            hidden = tuple(h.detach() for h in hidden)
            if cfg.state_reset > 0:
                keep = kept_rows(cfg, step, rows)[ranks.rank * cfg.batch_size : (ranks.rank + 1) * cfg.batch_size]
                hidden = tuple(h * keep.view(1, -1, 1).to(device) for h in hidden)
            with _autocast(device):
                logits, hidden = net(x, hidden)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            step += 1
            win += 1
            chars_window += chars_per_step
            train_loss = loss.item()
            now = time.monotonic()
            budget_spent = bool(cfg.max_steps and step >= cfg.max_steps) or (
                bool(cfg.max_time) and now - started >= cfg.max_time
            )
            due = step % cfg.eval_every == 0 if cfg.eval_every else now - started >= next_eval_at
            if due and cfg.max_time and now - started + last_eval_seconds >= cfg.max_time:
                due = False  # the final evaluation at the end of the budget will do
            if ranks.active:  # one small all-reduce a step: the mean loss and what the ranks agree on
                loss_sum, stopping, spent, due_any = ranks.sum([train_loss, bool(stop), budget_spent, due])
                train_loss, budget_spent, due = loss_sum / ranks.world, spent > 0, due_any > 0
                if stopping and not stop:
                    stop.set("interrupted")
            if now - last_step_event >= 0.1 or step == 1:
                rate = chars_window / max(1e-9, now - t_window)
                emit(
                    te.Step(
                        step=step,
                        total_steps=total_steps,
                        epoch=epoch + win / n_windows,
                        loss=train_loss,
                        lr=lr,
                        chars_per_sec=round(rate, 1),
                        elapsed=round(now - started, 2),
                        progress=round(min(1.0, progress()), 5),
                    )
                )
                last_step_event = now
                if now - t_window > 5:
                    t_window, chars_window = now, 0
            if stop or budget_spent:
                break
            if due:
                run_eval()
                t_window, chars_window = time.monotonic(), 0
        else:
            win, hidden = 0, None
            epoch += 1
            continue
        break

    if not agreed(bool(stop)) and last_eval_step != step:
        run_eval()
    interrupted = agreed(bool(stop))
    if interrupted:
        stop.set(stop.reason or "interrupted")
        save_resume()
    fingerprints = ranks.gather(weights_fingerprint(model)) if ranks.world > 1 else []
    emit(
        te.Done(
            step=step,
            epoch=epoch + win / n_windows,
            best_val_loss=best_val,
            reason=stop.reason if interrupted else "finished",
            elapsed=round(time.monotonic() - started, 2),
            out=str(out),
            resume=str(rpath),
            rank_fingerprints=fingerprints,
        )
    )
    return TrainResult(out, rpath, step, best_val, interrupted)


LINEAGE_KEYS = (
    "command", "charterm_version", "data", "data_sha256", "epochs", "steps", "wall_time", "machine", "val_loss",
    "created", "fingerprint", "parent",
)  # fmt: skip


def _lineage(info: dict) -> dict:
    """How an --init-from model was made (and what it came from), for the new model's metadata."""
    return {k: info[k] for k in LINEAGE_KEYS if k in info}


def _load_baseline(path):
    from charterm.checkpoint import load_model

    if not Path(path).is_file():
        raise UsageError(f"--baseline {path}: no such model file")
    return load_model(Path(path))


def baseline_loss(loaded, vocab: Vocabulary, val_ids, cfg: TrainConfig, max_windows: int) -> float | None:
    """Another model's loss on the first `max_windows` windows of this run's validation rows
    (the chars each checkpoint is also scored on for the comparison): the same ids when the
    vocabularies match, else the text folded onto the model's vocabulary. None if too little
    of the text is left to score."""
    import numpy as np

    ids = val_ids
    if loaded.vocab != vocab:
        text = "".join(np.asarray(vocab.chars, dtype=object)[np.asarray(val_ids)])
        folded, _ = loaded.vocab.fold(text)
        ids = np.fromiter((loaded.vocab.index[c] for c in folded), dtype=np.int64, count=len(folded))
    if len(ids) < cfg.batch_size * (cfg.seq_length + 1):
        return None
    val, n = evaluate(loaded.model, ids, cfg.batch_size, cfg.seq_length, max_windows=max_windows)
    return val if n and math.isfinite(val) else None


def _start_from(cfg: TrainConfig, explicit: set[str]):
    """The model named by --init-from; its architecture replaces cfg's (an explicit, different
    --hidden, --layers, --cell or --embed is an error)."""
    from charterm.checkpoint import load_model

    path = Path(cfg.init_from)
    if not path.exists():
        raise CharTermError(f"--init-from {path}: no such model file")
    loaded = load_model(path)
    for name in ("cell", "hidden", "layers", "embed"):
        have = getattr(loaded.model.config, name)
        if name in explicit and getattr(cfg, name) != have and not (name == "embed" and cfg.embed == 0):
            raise UsageError(f"--{name} {getattr(cfg, name)} differs from the --init-from model's ({have}); drop it")
        setattr(cfg, name, have)
    return loaded


def _open_corpus_once(
    cfg: TrainConfig, data_path: Path, saved: dict | None, ranks: Ranks, emit, vocab: Vocabulary | None = None
) -> Corpus:
    """The training text as token ids; under torchrun rank 0 encodes it and the others then find
    it in the cache. On --resume the text must be the saved run's. With `vocab` (--init-from)
    the text is folded onto that vocabulary."""

    def prepare() -> Corpus:
        corpus = open_corpus(
            data_path,
            cfg.encoding,
            cfg.separator,
            cfg.max_vocab,
            vocab=vocab,
            on_status=lambda s: emit(te.Data(message=s)),
            on_fold=lambda r: emit(te.Data(message=f"{data_path}: {r.describe()}")),
        )
        if saved is not None:
            old = Vocabulary(saved["vocab"], saved.get("unknown"))
            if old != corpus.vocab:
                raise CharTermError(
                    f"{data_path} has a different vocabulary from the saved run: {_vocab_difference(old, corpus.vocab)}"
                )
            if saved["data_sha256"] != corpus.sha256:
                raise CharTermError(
                    f"{data_path} changed since the saved run (sha256 {corpus.sha256[:12]}, was "
                    f"{saved['data_sha256'][:12]}); restore the original text or start a new run without --resume"
                )
        return corpus

    if not ranks.active:
        return prepare()
    corpus, error = None, None
    if ranks.is_main:
        try:
            corpus = prepare()
        except CharTermError as e:
            error = e
    ready = ranks.sum([0.0 if error else 1.0])[0] == ranks.world  # also the barrier before the others read
    if error:
        raise error
    if not ready:
        raise CharTermError("rank 0 could not prepare the training text (see its error)")
    return corpus if corpus is not None else prepare()

"""The training loop: Adam, cross-entropy, clipping, truncated BPTT, periodic validation.

Everything a front-end needs arrives as `charterm.train_events`; `run_training` never prints.
The best-validation model goes to `out` and a resume state beside it, both written atomically.
"""

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from charterm import __version__
from charterm import train_events as te
from charterm.config import ModelConfig, TrainConfig
from charterm.engine.checkpoint import save_model, weights_fingerprint
from charterm.engine.corpus import Corpus, open_corpus
from charterm.engine.distributed import Ranks, keep_buffers_in_heap, machine_description, pick_device
from charterm.engine.evaluate import autocast_for, evaluate
from charterm.engine.model import CharModel
from charterm.engine.resume import ResumeState, StopFlag, resume_path_for
from charterm.engine.text import Vocabulary, check_sizes, row_starts, split_train_val, window
from charterm.errors import CharTermError, UsageError
from charterm.files import remove_stale_temps
from charterm.paths import training_out, training_text
from charterm.pauses import clock, continue_if_orphaned

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


def _vocab_difference(old: Vocabulary, new: Vocabulary) -> str:
    gone = "".join(sorted(set(old.chars) - set(new.chars)))
    added = "".join(sorted(set(new.chars) - set(old.chars)))
    return f"chars no longer in the text: {gone!r}; new chars: {added!r}"


class Trainer:
    """One training run. The constructor sets it up (the resume checks, the text, the model, the
    optimiser, the saved state); `run` is the loop, with the step, the evaluation, the checkpoint,
    the resume state and the finish as methods of their own.

    Under torchrun every rank makes a Trainer with the `Ranks` from `distributed.start`; rank 0
    alone writes files and sends events. `baseline`: a model file to score on the validation text
    first, so each checkpoint can be compared with it."""

    def __init__(
        self,
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
    ):
        self.stop = stop if stop is not None else StopFlag()
        self.ranks = ranks or Ranks()
        self.emit = on_event if self.ranks.is_main else (lambda e: None)
        self.command, self.baseline = command, baseline
        self.baseline_model = _load_baseline(baseline) if baseline and self.ranks.is_main else None
        explicit = explicit or set()
        data_path = training_text(cfg.data)
        cfg.data = cfg.data or str(data_path)
        self.out = Path(cfg.out) if cfg.out else training_out(data_path.stem, resume)
        self.resume_path = resume_path_for(self.out)
        self.saved = ResumeState.load(self.resume_path) if resume else None
        if self.saved is not None:
            cfg = self._resumed_config(cfg, explicit)
        elif self.out.exists() and not force:
            raise UsageError(
                f"{self.out} already exists; pass --force to overwrite it, --resume to continue, or --out PATH"
            )
        cfg.check()
        self.cfg = cfg
        start_from = _start_from(cfg, explicit) if cfg.init_from and self.saved is None else None
        self._prepare_text(data_path, start_from)
        self._build(start_from)
        self._restore()

    # --- setup --------------------------------------------------------------------------------

    def _resumed_config(self, cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
        """The saved run's config, with the options that may change on --resume taken from `cfg`."""
        saved_cfg = self.saved.train_config()
        for name in explicit - RESUMABLE_OVERRIDES:
            if getattr(cfg, name) != getattr(saved_cfg, name):
                raise UsageError(
                    f"--{name.replace('_', '-')} cannot change on --resume (saved run used {getattr(saved_cfg, name)})"
                )
        for name in explicit & RESUMABLE_OVERRIDES:
            setattr(saved_cfg, name, getattr(cfg, name))
        saved_cfg.out = str(self.out)
        if self.saved.world != self.ranks.world:
            raise UsageError(
                f"the saved run trained with {self.saved.world} process(es); resume it with "
                f"torchrun --nproc_per_node={self.saved.world} (this is {self.ranks.world})"
            )
        return saved_cfg

    def _prepare_text(self, data_path: Path, start_from) -> None:
        """The token ids, the train/val split, and which rows of the training text are this rank's."""
        cfg, ranks, saved = self.cfg, self.ranks, self.saved
        fixed_vocab = start_from.vocab if start_from else None  # a fine-tune keeps its model's vocabulary
        if saved is not None and cfg.init_from:
            fixed_vocab = Vocabulary(saved.vocab, saved.unknown)
        self.corpus = _open_corpus_once(cfg, data_path, saved, ranks, self.emit, fixed_vocab)
        self.vocab = self.corpus.vocab
        rows = cfg.batch_size * ranks.world  # each rank trains on its own batch_size rows
        check_sizes(len(self.corpus), cfg.val_frac, rows, cfg.seq_length)
        if len(self.vocab) < 2:
            raise UsageError(f"{data_path} has only {len(self.vocab)} distinct char(s); a model needs at least 2")
        if ranks.is_main:
            for path in (self.out, self.resume_path):  # half-written files of a run that was killed mid-write
                remove_stale_temps(path)
        self.train_ids, self.val_ids = split_train_val(self.corpus.ids, cfg.val_frac)
        starts, self.n_windows = row_starts(len(self.train_ids), rows, cfg.seq_length)
        self.starts = starts[ranks.rank * cfg.batch_size : (ranks.rank + 1) * cfg.batch_size]
        self.rows, self.chars_per_step = rows, rows * cfg.seq_length
        self.eval_windows = math.ceil(cfg.eval_chars / self.chars_per_step) if cfg.eval_chars else 0
        self.total_steps = cfg.epochs * self.n_windows
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)

    def _build(self, start_from) -> None:
        """The model (random, or the --init-from weights) and its optimiser, on the device."""
        cfg = self.cfg
        self.device = pick_device(cfg.device)
        if self.device.type == "cpu":
            keep_buffers_in_heap()
        torch.manual_seed(cfg.seed)
        self.model = CharModel(ModelConfig(vocab_size=len(self.vocab), **cfg.architecture())).to(self.device)
        if start_from is not None:
            self.model.load_state_dict(start_from.model.state_dict())
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        if self.ranks.rank:
            torch.manual_seed(cfg.seed + self.ranks.rank)  # the same initial weights, different dropout masks
        self.net = self.model
        if self.ranks.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        lineage = _lineage(start_from.info) if start_from is not None else None
        self.parent = lineage or (self.saved.parent if self.saved is not None else None)

    def _restore(self) -> None:
        """Where the loop starts: the beginning, or exactly where the saved run stopped."""
        self.step, self.epoch, self.window, self.elapsed, self.best_val = 0, 0, 0, 0.0, math.inf
        self.hidden, self.last_eval_step = None, -1
        saved = self.saved
        if saved is None:
            return
        self.model.load_state_dict(saved.model)
        self.opt.load_state_dict(saved.optimizer)
        self.step, self.epoch, self.window = saved.step, saved.epoch, saved.window
        self.elapsed, self.best_val, self.last_eval_step = saved.elapsed, saved.best_val, saved.step
        hidden, rng = saved.for_rank(self.ranks.rank)
        self.hidden = tuple(h.to(self.device) for h in hidden) if hidden else None
        torch.set_rng_state(rng)
        if self.device.type == "cuda" and saved.cuda_rng is not None and self.ranks.world == 1:
            torch.cuda.set_rng_state(saved.cuda_rng)

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        continue_if_orphaned()  # the app stops the run while the model writes (charterm.pauses)
        self._begin()
        self.model.train()
        while True:
            if self.window == self.n_windows:  # the end of an epoch: every row starts again
                self.epoch, self.window, self.hidden = self.epoch + 1, 0, None
            if self.stopping():
                break
            due = self.train_step()
            if self.stopping():
                break
            if due:
                self.evaluate()
        return self.finish()

    def stopping(self) -> bool:
        """Every reason the loop ends: the epochs are done, the step or time budget is spent, or a stop."""
        return self.epoch >= self.cfg.epochs or self.budget_spent or bool(self.stop)

    def _begin(self) -> None:
        """Score the baseline, send `start`, and start the clocks."""
        cfg, baseline = self.cfg, self.baseline
        self.baseline_windows = max(1, math.ceil(BASELINE_CHARS / (cfg.batch_size * cfg.seq_length)))
        self.baseline_val = None
        if self.baseline_model is not None:
            self.emit(
                te.Data(message=f"scoring {Path(baseline).name} on {BASELINE_CHARS:,} chars of the validation text")
            )
            self.baseline_val = baseline_loss(self.baseline_model, self.vocab, self.val_ids, cfg, self.baseline_windows)
        self.emit(
            te.Start(
                params=self.model.n_params,
                chars=len(self.corpus),
                train_chars=len(self.train_ids),
                val_chars=len(self.val_ids),
                vocab_size=len(self.vocab),
                steps_per_epoch=self.n_windows,
                total_steps=self.total_steps,
                epochs=cfg.epochs,
                step=self.step,
                device=str(self.device),
                processes=self.ranks.world,
                out=str(self.out),
                resumed=self.saved is not None,
                max_time=cfg.max_time,
                config=cfg.to_dict(),
                baseline=str(baseline) if baseline else None,
                baseline_val_loss=self.baseline_val,
            )
        )
        self.started = clock() - self.elapsed
        self.next_eval_at = FIRST_EVAL_SECONDS + self.elapsed  # the automatic cadence (eval_every == 0)
        self.last_eval_seconds, self.last_step_event, self.train_loss = 0.0, 0.0, math.nan
        self.t_window, self.chars_window = clock(), 0
        spent_time = bool(cfg.max_time) and self.elapsed >= cfg.max_time
        self.budget_spent = bool(cfg.max_steps and self.step >= cfg.max_steps) or self.agreed(spent_time)

    def train_step(self) -> bool:
        """One window of every row: forward, backward, clip, Adam. Returns whether validation is due."""
        cfg, ranks = self.cfg, self.ranks
        if self.window == 0 and self.hidden is None:
            self.hidden = self.model.init_state(cfg.batch_size, self.device)
        lr = lr_at(cfg, self.step, self.progress())
        for group in self.opt.param_groups:
            group["lr"] = lr
        xs, ys = window(self.train_ids, self.starts, self.window * cfg.seq_length, cfg.seq_length)
        x, y = torch.from_numpy(xs).to(self.device), torch.from_numpy(ys).to(self.device)
        hidden = tuple(h.detach() for h in self.hidden)
        if cfg.state_reset > 0:
            keep = kept_rows(cfg, self.step, self.rows)[ranks.rank * cfg.batch_size : (ranks.rank + 1) * cfg.batch_size]
            hidden = tuple(h * keep.view(1, -1, 1).to(self.device) for h in hidden)
        with autocast_for(self.device):
            logits, self.hidden = self.net(x, hidden)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.opt.step()
        self.step, self.window, self.chars_window = (
            self.step + 1,
            self.window + 1,
            self.chars_window + self.chars_per_step,
        )
        self.train_loss = loss.item()
        now = clock()
        self.budget_spent = bool(cfg.max_steps and self.step >= cfg.max_steps) or (
            bool(cfg.max_time) and now - self.started >= cfg.max_time
        )
        due = self.step % cfg.eval_every == 0 if cfg.eval_every else now - self.started >= self.next_eval_at
        if due and cfg.max_time and now - self.started + self.last_eval_seconds >= cfg.max_time:
            due = False  # the final evaluation at the end of the budget will do
        if ranks.active:  # one small all-reduce a step: the mean loss and what the ranks agree on
            loss_sum, stopping, spent, due_any = ranks.sum([self.train_loss, bool(self.stop), self.budget_spent, due])
            self.train_loss, self.budget_spent, due = loss_sum / ranks.world, spent > 0, due_any > 0
            if stopping and not self.stop:
                self.stop.set("interrupted")
        self._report_step(lr, now)
        return due

    def _report_step(self, lr: float, now: float) -> None:
        """A `step` event at most every 0.1 s; the rate is over the last few seconds."""
        if now - self.last_step_event < 0.1 and self.step != 1:
            return
        self.emit(
            te.Step(
                step=self.step,
                total_steps=self.total_steps,
                epoch=self.epoch + self.window / self.n_windows,
                loss=self.train_loss,
                lr=lr,
                chars_per_sec=round(self.chars_window / max(1e-9, now - self.t_window), 1),
                elapsed=round(now - self.started, 2),
                progress=round(min(1.0, self.progress()), 5),
            )
        )
        self.last_step_event = now
        if now - self.t_window > 5:
            self.t_window, self.chars_window = now, 0

    def progress(self) -> float:
        p = self.step / self.total_steps if self.total_steps else 1.0
        if self.cfg.max_time:
            p = max(p, (clock() - self.started) / self.cfg.max_time)
        return p

    def agreed(self, flag: bool) -> bool:
        """True on every rank when it is true on any (ranks must agree on when to stop)."""
        return self.ranks.sum([float(flag)])[0] > 0 if self.ranks.active else flag

    # --- evaluation, checkpoint, resume state, finish ------------------------------------------

    def evaluate(self) -> None:
        """Score the validation text; keep the model if it is the best yet; save the resume state."""
        cfg, ranks, t0 = self.cfg, self.ranks, clock()
        val, n = evaluate(
            self.model,
            self.val_ids,
            cfg.batch_size,
            cfg.seq_length,
            should_stop=(lambda: bool(self.stop)) if not ranks.active else (lambda: False),
            part=(ranks.rank, ranks.world),
            max_windows=self.eval_windows,
        )
        if ranks.active:
            total, n = ranks.sum([val * n, n])
            val = total / n
        if self.agreed(bool(self.stop)):
            self.stop.set(self.stop.reason or "interrupted")
            return
        self.last_eval_step = self.step
        spent = self.last_eval_seconds = clock() - t0
        self.next_eval_at = (
            clock() - self.started + max(FIRST_EVAL_SECONDS, spent * (1 - EVAL_SHARE) / EVAL_SHARE)
        )
        improved = val < self.best_val
        self.emit(
            te.Eval(
                step=self.step,
                epoch=self.epoch + self.window / self.n_windows,
                val_loss=val,
                train_loss=self.train_loss,
                best_val_loss=min(val, self.best_val),
                improved=improved,
                seconds=round(spent, 3),
            )
        )
        ranks.barrier()
        if improved:
            self.best_val = val
            self.checkpoint(val)
        self.save_resume()
        self.t_window, self.chars_window = clock(), 0

    def checkpoint(self, val: float) -> None:
        """Write the model (rank 0) and send `checkpoint`, compared with the baseline if there is one."""
        if self.ranks.is_main:
            info = {
                **self.corpus.describe(),
                **({"parent": self.parent} if self.parent else {}),
                "command": self.command,
                "charterm_version": __version__,
                "machine": machine_description(self.device)
                + (f", {self.ranks.world} processes" if self.ranks.world > 1 else ""),
                "train_config": self.cfg.to_dict(),
                "epochs": round(self.epoch + self.window / self.n_windows, 4),
                "steps": self.step,
                "val_loss": val,
                "train_loss": self.train_loss,
                "wall_time": round(clock() - self.started, 1),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            save_model(self.out, self.model, self.vocab, info)
        compared = None
        if self.baseline_val is not None:  # this model on the chars the baseline was scored on
            cfg = self.cfg
            compared, _ = evaluate(
                self.model, self.val_ids, cfg.batch_size, cfg.seq_length, max_windows=self.baseline_windows
            )
            self.model.train()
        self.emit(
            te.Checkpoint(
                step=self.step,
                val_loss=val,
                path=str(self.out),
                baseline_val_loss=self.baseline_val,
                compared_val_loss=compared,
            )
        )

    def save_resume(self) -> None:
        mine = tuple(h.detach().cpu() for h in self.hidden) if self.hidden is not None else None
        hiddens, rngs = self.ranks.gather(mine), self.ranks.gather(torch.get_rng_state())
        if not self.ranks.is_main:
            return
        one = self.ranks.world == 1
        ResumeState(
            config=self.cfg.to_dict(),
            model=self.model.state_dict(),
            optimizer=self.opt.state_dict(),
            step=self.step,
            epoch=self.epoch,
            window=self.window,
            elapsed=clock() - self.started,
            best_val=self.best_val,
            vocab=list(self.vocab.chars),
            data_sha256=self.corpus.sha256,
            hidden=hiddens[0] if one else hiddens,
            rng=rngs[0] if one else rngs,
            cuda_rng=torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            world=self.ranks.world,
            unknown=self.vocab.unknown,
            parent=self.parent,
        ).save(self.resume_path)

    def finish(self) -> TrainResult:
        """A last evaluation unless the step was just scored; on a stop, the resume state; `done`."""
        if not self.agreed(bool(self.stop)) and self.last_eval_step != self.step:
            self.evaluate()
        interrupted = self.agreed(bool(self.stop))
        if interrupted:
            self.stop.set(self.stop.reason or "interrupted")
            self.save_resume()
        fingerprints = self.ranks.gather(weights_fingerprint(self.model)) if self.ranks.world > 1 else []
        self.emit(
            te.Done(
                step=self.step,
                epoch=self.epoch + self.window / self.n_windows,
                best_val_loss=self.best_val,
                reason=self.stop.reason if interrupted else "finished",
                elapsed=round(clock() - self.started, 2),
                out=str(self.out),
                resume=str(self.resume_path),
                rank_fingerprints=fingerprints,
            )
        )
        return TrainResult(self.out, self.resume_path, self.step, self.best_val, interrupted)


def run_training(cfg: TrainConfig, **options) -> TrainResult:
    """Train per `cfg` (see `Trainer` for the options)."""
    return Trainer(cfg, **options).run()


LINEAGE_KEYS = (
    "command", "charterm_version", "data", "data_sha256", "epochs", "steps", "wall_time", "machine", "val_loss",
    "created", "fingerprint", "parent", "import",
)  # fmt: skip


def _lineage(info: dict) -> dict:
    """How an --init-from model was made (and what it came from), for the new model's metadata."""
    return {k: info[k] for k in LINEAGE_KEYS if k in info}


def _load_baseline(path):
    from charterm.engine.checkpoint import load_model

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
    from charterm.engine.checkpoint import load_model

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
    cfg: TrainConfig, data_path: Path, saved: "ResumeState | None", ranks: Ranks, emit, vocab: Vocabulary | None = None
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
            old = Vocabulary(saved.vocab, saved.unknown)
            if old != corpus.vocab:
                raise CharTermError(
                    f"{data_path} has a different vocabulary from the saved run: {_vocab_difference(old, corpus.vocab)}"
                )
            if saved.data_sha256 != corpus.sha256:
                raise CharTermError(
                    f"{data_path} changed since the saved run (sha256 {corpus.sha256[:12]}, was "
                    f"{saved.data_sha256[:12]}); restore the original text or start a new run without --resume"
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

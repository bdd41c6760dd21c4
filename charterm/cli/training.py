"""`charterm train`."""

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from charterm.cli.common import (
    D,
    Progress,
    app,
    command_line,
    unescape,
)
from charterm.config import TrainConfig
from charterm.errors import CharTermError


@app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Training text: a file, or a folder of .txt files (joined). [default: data/anna.txt in the "
            "checkout or the data dir; downloaded when it is in neither]"
        ),
    ] = None,
    max_vocab: Annotated[
        int | None,
        typer.Option(help="Keep the N most frequent chars, the rest become one unknown-char token; 0 = all."),
    ] = None,
    separator: Annotated[
        str | None, typer.Option(help="Joins the files of a --data folder; \\n escapes work. [default: two newlines]")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help=f"Passes over the text. [default: {D.epochs}]")] = None,
    hidden: Annotated[int | None, typer.Option(help=f"Units per layer. [default: {D.hidden}]")] = None,
    layers: Annotated[int | None, typer.Option(help=f"Recurrent layers. [default: {D.layers}]")] = None,
    dropout: Annotated[
        float | None, typer.Option(help=f"Dropout between layers and before the read-out. [default: {D.dropout}]")
    ] = None,
    weight_drop: Annotated[
        float | None,
        typer.Option(help=f"DropConnect on the recurrent weights (AWD-LSTM's weight drop). [default: {D.weight_drop}]"),
    ] = None,
    state_reset: Annotated[
        float | None,
        typer.Option(
            help="Chance per row and window that the carried state is zeroed, so the model learns to start "
            f"from nothing as a new story does. [default: {D.state_reset}]"
        ),
    ] = None,
    cell: Annotated[str | None, typer.Option(help=f"lstm or gru. [default: {D.cell}]")] = None,
    embed: Annotated[
        int | None, typer.Option(help=f"Embedding width; 0 = vocabulary size. [default: {D.embed}]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help=f"Rows of text per step. [default: {D.batch_size}]")] = None,
    seq_length: Annotated[
        int | None, typer.Option(help=f"Chars per row per step (BPTT length). [default: {D.seq_length}]")
    ] = None,
    lr: Annotated[float | None, typer.Option(help=f"Peak learning rate (Adam). [default: {D.lr}]")] = None,
    schedule: Annotated[
        str | None, typer.Option(help=f"cosine (warm-up then decay) or constant. [default: {D.schedule}]")
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option(help=f"Steps of linear warm-up. [default: {D.warmup_steps}]")
    ] = None,
    min_lr_frac: Annotated[
        float | None, typer.Option(help=f"Cosine decays to this fraction of --lr. [default: {D.min_lr_frac}]")
    ] = None,
    clip: Annotated[float | None, typer.Option(help=f"Gradient-norm clip. [default: {D.clip}]")] = None,
    val_frac: Annotated[
        float | None, typer.Option(help=f"Fraction held out (the end of the text). [default: {D.val_frac}]")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Steps between validations; 0 = automatic, about 5% of the time.")
    ] = None,
    eval_chars: Annotated[
        int | None, typer.Option(help=f"Validation chars scored per pass; 0 = all. [default: {D.eval_chars:,}]")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps; 0 = no limit.")] = None,
    max_time: Annotated[float | None, typer.Option(help="Stop after SECONDS; the schedule fits this budget.")] = None,
    seed: Annotated[int | None, typer.Option(help=f"Random seed. [default: {D.seed}]")] = None,
    device: Annotated[str | None, typer.Option(help=f"auto, cpu, cuda or mps. [default: {D.device}]")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Model file to write. [default: a new file in the data dir's models/, e.g. "
            "anna-20261203-141502.safetensors; with --resume, the newest run of the text]"
        ),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Start from named settings: notebook.")] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(help="Start from this model's weights (fine-tune); the text is folded onto its vocabulary."),
    ] = None,
    encoding: Annotated[str | None, typer.Option(help=f"Text encoding of --data. [default: {D.encoding}]")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved beside --out.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing model at --out.")] = False,
    progress: Annotated[Progress, typer.Option(help="rich bar, jsonl events on stdout, or none.")] = Progress.auto,
    baseline: Annotated[
        Path | None,
        typer.Option(help="Score this model on the validation text first; each checkpoint event carries its loss."),
    ] = None,
) -> None:
    """Train a char model; keeps the best-validation model at --out and a resume state beside it.

    Under `torchrun --nproc_per_node=N -m charterm train ...` it trains with N processes
    (DistributedDataParallel); --batch-size is then per process."""
    from charterm.config import train_config

    given = {k: v for k, v in locals().items() if v is not None and k in TrainConfig.__dataclass_fields__}
    if separator is not None:
        given["separator"] = unescape(separator)
    cfg = train_config({k: str(v) if isinstance(v, Path) else v for k, v in given.items()}, preset)
    explicit = set(given)
    cfg.data, cfg.out = map(str, _text_and_out(data, out, resume))
    mode = progress.value
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "none"

    from charterm import train_events as te
    from charterm.cli.train_views import JsonlTrainView, QuietTrainView, RichTrainView
    from charterm.engine import distributed
    from charterm.engine.resume import StopFlag
    from charterm.engine.training import run_training

    ranks, cfg.device = distributed.start(cfg.device)
    if not ranks.is_main:
        mode = "none"

    stop = StopFlag.on_signals(signal.SIGINT, signal.SIGTERM)
    command = command_line("train")
    renderer = {"rich": RichTrainView, "jsonl": JsonlTrainView, "none": QuietTrainView}[mode]()
    try:
        result = run_training(
            cfg,
            resume=resume,
            force=force,
            explicit=explicit,
            on_event=renderer,
            stop=stop,
            command=command,
            ranks=ranks,
            baseline=baseline,
        )
    except CharTermError as e:
        renderer.close()
        if mode == "jsonl":
            print(te.Error(message=str(e)).to_json(), flush=True)
        raise
    finally:
        distributed.stop(ranks)
    renderer.close()
    if result.interrupted:
        if ranks.is_main:
            print(
                f"charterm: stopped at step {result.steps}; resume state saved to {result.resume_path} "
                f"(continue with --resume --out {result.out})",
                file=sys.stderr,
            )
        raise typer.Exit(130)


def _text_and_out(data: Path | None, out: Path | None, resume: bool) -> tuple[Path, Path]:
    """--data and --out, or the defaults (charterm.paths): the book where it is, else downloaded; a new
    model file, never one that exists (on --resume, the newest run of the text)."""
    from charterm.cli.data import fetch_default_text
    from charterm.paths import default_text, training_out

    text = data or default_text() or fetch_default_text()
    return text, out or training_out(text.stem, resume)

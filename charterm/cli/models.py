"""`charterm eval`, `info`, `export` and `import`: model files."""

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from charterm.cli.common import (
    D,
    Precision,
    Split,
    StoreDtype,
    app,
    command_line,
    load_model_or_default,
    warn,
)
from charterm.config import ADAPT_LR, ADAPT_SEGMENT
from charterm.errors import UsageError


@app.command("eval")
def eval_(
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the model shipped in models/]")] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Text to score: a file or a folder of .txt files. [default: the text `train` uses]"),
    ] = None,
    split: Annotated[Split, typer.Option(help="val (the held-out end), train, or all.")] = Split.val,
    val_frac: Annotated[float | None, typer.Option(help="Held-out fraction. [default: the model's]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows. [default: the model's training batch size]")] = None,
    seq_length: Annotated[int | None, typer.Option(help="Window. [default: the model's training seq length]")] = None,
    precision: Annotated[Precision, typer.Option(help="fp32, or int8 as used by generate.")] = Precision.fp32,
    encoding: Annotated[str, typer.Option(help="Text encoding of --data.")] = "utf-8",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt", help="Dynamic evaluation: score each segment, then let the model learn from it (batch 1)."
        ),
    ] = False,
    adapt_lr: Annotated[float, typer.Option(help="Adam step size for --adapt.")] = ADAPT_LR,
    adapt_segment: Annotated[int, typer.Option(help="Chars scored before each --adapt step.")] = ADAPT_SEGMENT,
) -> None:
    """Mean cross-entropy (nats/char), bits/char and perplexity over a split of a text.

    With --adapt the text is read in order and the model adapts to it as it goes (the static
    model's loss on the same chars is printed beside it); the model file is not changed."""
    import math

    from charterm.paths import training_text

    _check_eval_options(val_frac, batch_size, seq_length, adapt and (precision, adapt_segment, adapt_lr))
    data = training_text(data)
    from charterm.engine.corpus import SEPARATOR, open_corpus
    from charterm.engine.evaluate import evaluate
    from charterm.engine.text import split_train_val, windows_in

    loaded = load_model_or_default(model)
    i = loaded.info
    tc = i.get("train_config", {})
    val_frac = val_frac or tc.get("val_frac", D.val_frac)  # a model without a training record: the defaults
    batch_size = batch_size or tc.get("batch_size", D.batch_size)
    seq_length = seq_length or tc.get("seq_length", D.seq_length)
    corpus = open_corpus(
        data,
        encoding,
        i.get("data_separator", SEPARATOR),
        vocab=loaded.vocab,
        on_fold=lambda report: warn(f"{data}: {report.describe()}"),
    )
    train_ids, val_ids = split_train_val(corpus.ids, val_frac)
    ids = {"val": val_ids, "train": train_ids, "all": corpus.ids}[split.value]
    if windows_in(len(ids), batch_size, seq_length) < 1:
        raise UsageError(
            f"the {split.value} split has {len(ids):,} chars, fewer than one batch "
            f"({batch_size} x {seq_length} + 1); pass a smaller --batch-size or --seq-length"
        )
    if adapt:
        from charterm.engine.evaluate import evaluate_adapting

        loss, static, n = evaluate_adapting(loaded.model, ids, adapt_segment, adapt_lr)
        extra = {"static_loss": static, "adapt_lr": adapt_lr, "adapt_segment": adapt_segment}
    else:
        loss, n = evaluate(loaded.model, ids, batch_size, seq_length, precision=precision.value)
        extra = {}
    result = {
        "loss": loss,
        "bits_per_char": loss / math.log(2),
        "perplexity": math.exp(loss),
        "chars": n,
        "split": split.value,
        "precision": precision.value,
        **extra,
    }
    if as_json:
        print(json.dumps(result))
        return
    print(
        f"{split.value}: {loss:.4f} nats/char, {result['bits_per_char']:.4f} bits/char, "
        f"perplexity {result['perplexity']:.3f} over {n:,} chars ({precision.value})"
        + (f"; adapting, static {static:.4f} nats/char on the same chars" if adapt else "")
    )


@app.command()
def info(
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the model shipped in models/]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The model card: architecture, size, vocabulary, what it was trained on, val loss."""
    from charterm.engine.checkpoint import model_card

    loaded = load_model_or_default(model)
    c, card = loaded.model.config, model_card(loaded)
    if as_json:
        print(json.dumps(card))
        return
    val = _loss(card["val_loss"])
    lines = [
        f"model      {card['path']} ({card['file_size'] / 1e6:.1f} MB, {card['dtype']})",
        f"network    {c.cell.upper()} {c.hidden}x{c.layers}, embedding {c.embed}, dropout {c.dropout}; "
        f"{card['params']:,} parameters",
        f"vocabulary {c.vocab_size} chars: {card['vocab']!r}",
    ]
    if loaded.vocab.unknown:
        share = card["unknown_share"]
        lines.append(
            f"unknown    {card['unknown_token']!r} stands for the {card['unknown_chars'] or 'other'} rarer chars of "
            f"the text ({card['distinct_chars'] or '?'} distinct)"
            + (f", {100 * share:.3f}% of it" if isinstance(share, float) else "")
        )
    files = f", {card['data_files']} files" if (card["data_files"] or 1) > 1 else ""
    if card["data"] is not None:  # an imported model has no record of its training
        lines.append(
            f"trained on {card['data']}{files} (sha256 {str(card['data_sha256'])[:12]}), {card['epochs']} epochs, "
            f"{card['steps']} steps, {card['wall_time']} s on {card['machine']}"
        )
    lines += [
        f"val loss   {val} nats/char",
        f"made by    {card['command']} (charterm {card['charterm_version']}, {card['created']})",
    ]
    parent = card["parent"]
    while isinstance(parent, dict):
        lines.append(
            f"from       {parent.get('command')} ({parent.get('epochs')} epochs, {parent.get('steps')} steps, "
            f"{parent.get('wall_time')} s; val loss {_loss(parent.get('val_loss'))})"
        )
        parent = parent.get("parent")
    if isinstance(card["export"], dict):
        e = card["export"]
        lines.append(f"stored as  {e.get('dtype')} by {e.get('command')} (from {e.get('from_dtype')} weights)")
    if isinstance(card["import"], dict):
        m = card["import"]
        lines.append(f"source     {m.get('format')}: {m.get('source')} (sha256 {str(m.get('source_sha256'))[:12]})")
    print("\n".join(lines))


def _check_eval_options(val_frac, batch_size, seq_length, adapting) -> None:
    """eval's options, before the model or the text is read; `adapting`: (precision, segment,
    lr) with --adapt, else False."""
    if adapting:
        precision, adapt_segment, adapt_lr = adapting
        if adapt_segment < 1 or not adapt_lr >= 0 or precision == Precision.int8:
            raise UsageError("--adapt needs --adapt-segment 1 or more, --adapt-lr 0 or more, and fp32 weights")
    if val_frac is not None and not 0 < val_frac < 1:
        raise UsageError(f"--val-frac must be between 0 and 1, exclusive (got {val_frac})")
    for name, v in (("batch-size", batch_size), ("seq-length", seq_length)):
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be at least 1 (got {v})")


def _loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "unknown"



@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Model file to convert.")],
    out: Annotated[Path, typer.Option(help="Where to write the converted model (atomically).")],
    dtype: Annotated[StoreDtype, typer.Option(help="Weight storage: F16 and BF16 halve the file.")] = StoreDtype.F16,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Store a model's weights in another dtype; its metadata is kept and records the conversion."""
    from charterm.engine.checkpoint import export_model

    if out.exists() and not force and out.resolve() != model.resolve():
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; pass a file name")
    command = command_line("export")
    source, written = export_model(model, out, dtype.value, command)
    print(
        f"{out}: {written.dtype}, {out.stat().st_size / 1e6:.1f} MB (from {source.dtype}, "
        f"{model.stat().st_size / 1e6:.1f} MB); check it with: charterm eval --model {shlex.quote(str(out))}",
        file=sys.stderr,
    )


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="The notebook's checkpoint, e.g. rnn_20_epoch.net.")],
    out: Annotated[
        Path | None, typer.Option(help="Model file to write (atomically). [default: models/<PATH stem>.safetensors]")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Turn the teaching notebook's checkpoint into a charterm model (read with weights_only: it runs no code)."""
    from charterm.engine.notebook import FORMAT_NOTE, import_notebook
    from charterm.paths import default_out

    out = out or default_out(path.stem)
    command = command_line("import")
    c = import_notebook(path, out, force, command).model.config
    print(
        f"{out}: LSTM {c.hidden}x{c.layers}, {c.vocab_size} chars, {out.stat().st_size / 1e6:.1f} MB, "
        f"{FORMAT_NOTE} ({path.name}); try it: charterm generate --model {shlex.quote(str(out))}",
        file=sys.stderr,
    )


# --- data --------------------------------------------------------------------------------------

"""The command line: a thin Typer front-end over the core. torch is imported inside commands,
so `charterm --help` stays fast."""

import json
import os
import re
import shlex
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from charterm import __version__
from charterm.config import ADAPT_LR, ADAPT_SEGMENT, TrainConfig
from charterm.errors import CharTermError, UsageError
from charterm.settings import BY_FIELD, Settings

D = TrainConfig()  # the defaults, shown in --help
S = Settings()

app = typer.Typer(
    name="charterm",
    help="A character-level LSTM text generator. With no command: write a story with the model, full screen.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Get training texts.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
stories_app = typer.Typer(
    help="Saved stories: list, show, export, remove.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(stories_app, name="stories")


class Progress(StrEnum):
    auto = "auto"
    rich = "rich"
    jsonl = "jsonl"
    none = "none"


class Split(StrEnum):
    val = "val"
    train = "train"
    all = "all"


class Precision(StrEnum):
    int8 = "int8"
    fp32 = "fp32"


def warn(msg: str) -> None:
    print(f"charterm: warning: {msg}", file=sys.stderr, flush=True)


def _version(value: bool) -> None:
    if value:
        print(f"charterm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    story: Annotated[str | None, typer.Option(help="Open (or create) this story. [default: the last one]")] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model file. [default: the story's, else the one shipped in models/]")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also CHARTERM_DEBUG=1).")] = False,
) -> None:
    """Write a story with the model (full screen) when no command is given."""
    if debug:
        os.environ["CHARTERM_DEBUG"] = "1"
    if ctx.invoked_subcommand is not None:
        if story is not None or model is not None:
            raise UsageError("--story and --model before a command only apply to the app; put them after the command")
        return
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UsageError("the story app needs a terminal; for scripts use `charterm generate` (see --help)")
    if story is not None:
        from charterm.store import check_name

        check_name(story)
    if model is not None and not model.is_file():
        raise CharTermError(f"{model}: no such model file")
    from charterm.worker_client import start_worker

    # Textual waits this long after a lone Esc byte for the rest of a key sequence (100 ms unless
    # set); Esc is the stop key, and terminals send a sequence's bytes together
    os.environ.setdefault("ESCDELAY", "25")

    # started first: the worker imports torch and loads the model while this process imports Textual
    client = start_worker(story, str(model) if model else None)
    from charterm.app.app import CharTermApp

    for name in ("COLUMNS", "LINES"):  # a fixed size from the environment would make Textual ignore resizes
        os.environ.pop(name, None)
    CharTermApp(story=story, model=str(model) if model else None, client=client).run()


# --- train -------------------------------------------------------------------------------------


@app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(help="Training text: a file, or a folder of .txt files (joined). [default: data/anna.txt]"),
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
        Path | None, typer.Option(help="Model file to write. [default: models/<data stem>.safetensors]")
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
        given["separator"] = _unescape(separator)
    cfg = train_config({k: str(v) if isinstance(v, Path) else v for k, v in given.items()}, preset)
    mode = progress.value
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "none"

    from charterm import distributed
    from charterm import train_events as te
    from charterm.train_views import JsonlTrainView, QuietTrainView, RichTrainView
    from charterm.training import StopFlag, run_training

    ranks, cfg.device = distributed.start(cfg.device)
    if not ranks.is_main:
        mode = "none"

    stop = StopFlag.on_signals(signal.SIGINT, signal.SIGTERM)
    command = _command_line("train")
    renderer = {"rich": RichTrainView, "jsonl": JsonlTrainView, "none": QuietTrainView}[mode]()
    try:
        result = run_training(
            cfg,
            resume=resume,
            force=force,
            explicit=set(given),
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
                f"(continue with --resume)",
                file=sys.stderr,
            )
        raise typer.Exit(130)


def _command_line(name: str) -> str:
    """The command as typed (recorded in the model file it writes), or `charterm NAME` when run
    some other way (from a test, or the app's job runner)."""
    return "charterm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == [name] else f"charterm {name}"


def _unescape(text: str) -> str:
    """\\n, \\t and \\\\ in a command-line value; everything else literal."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


# --- generate ----------------------------------------------------------------------------------


def _load(model: Path | None):
    from charterm.checkpoint import load_model
    from charterm.paths import default_model_path

    path = model or default_model_path()
    if model is None and not path.exists():
        raise CharTermError(f"no default model at {path}; train one with `charterm train` or pass --model PATH")
    return load_model(path)


class StopAt(StrEnum):
    none = "none"
    sentence = "sentence"
    paragraph = "paragraph"


@app.command()
def generate(
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the model shipped in models/]")] = None,
    prime: Annotated[str | None, typer.Option(help="Text to start from (any characters).")] = None,
    prime_file: Annotated[Path | None, typer.Option(help="Read the prime from a file.")] = None,
    chars: Annotated[int, typer.Option(help=BY_FIELD["chars"].help)] = 500,
    top_k: Annotated[int, typer.Option(help=BY_FIELD["top_k"].help)] = S.top_k,
    temperature: Annotated[float, typer.Option(help=BY_FIELD["temperature"].help)] = S.temperature,
    stop: Annotated[StopAt, typer.Option(help="Also end at the first sentence or paragraph end.")] = StopAt.none,
    seed: Annotated[int | None, typer.Option(help="Random seed: same seed, same text.")] = None,
    precision: Annotated[Precision, typer.Option(help="int8 (fast) or fp32 weights for sampling.")] = Precision.int8,
    story: Annotated[
        str | None,
        typer.Option(help="Continue this saved story: the prime and the new text become turns; prints the new text."),
    ] = None,
    adapt: Annotated[
        bool | None,
        typer.Option(
            "--adapt/--no-adapt",
            help="With --story: learn the story's text (saved with it). [default: the story's own, on for a new one]",
        ),
    ] = None,
    retry: Annotated[
        bool, typer.Option("--retry", help="With --story: write a new version of its last model turn (the old kept).")
    ] = False,
) -> None:
    """Write the prime and its continuation to stdout, streamed as it is generated.

    A new story and plain `generate` start alike (as after a newline), so for one seed and
    prime they write the same text."""
    from charterm.settings import Settings

    try:
        settings = Settings(top_k=top_k, temperature=temperature, chars=chars, stop_at=stop.value, seed=seed)
    except UsageError as e:  # the rule names the setting ("chars must be ..."); here it is an option
        raise UsageError(f"--{e}") from None
    prime = _read_prime(prime, prime_file)
    if story is not None:
        from charterm.store import check_name

        if retry and prime:
            raise UsageError("--retry writes the last model turn again; it takes no --prime")
        _continue_story(check_name(story), model, prime, settings, precision.value, adapt, retry)
        return
    if adapt is not None or retry:
        raise UsageError("--adapt, --no-adapt and --retry go with --story NAME")
    from charterm.session import Session

    session = Session(_load(model), settings=settings, precision=precision.value)
    if prime:
        _feed_prime(session, prime)
    sys.stdout.write(prime)
    _stream(session)


def _read_prime(prime: str | None, prime_file: Path | None) -> str:
    if prime is not None and prime_file is not None:
        raise UsageError("pass --prime or --prime-file, not both")
    if prime_file is not None:
        if prime_file.is_dir() or not prime_file.exists():
            raise UsageError(f"--prime-file {prime_file}: not a readable file")
        from charterm.text import read_text

        prime = read_text(prime_file)
    prime = prime or ""
    try:
        prime.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("--prime is not valid UTF-8; put the text in a file and pass --prime-file") from None
    return prime


def _feed_prime(session, prime: str) -> None:
    report = session.append_person_turn(prime)
    if report:
        warn(f"prime: {report.describe()}")


def _stream(session, retry: bool = False) -> None:
    """The model's turn to stdout, flushed about 30 times a second; committed if there is a store.
    `retry`: a new version of the story's last model turn instead."""
    import torch

    torch.set_num_threads(1)  # one char at a time: as fast as two threads alone, far faster on a busy CPU
    out = sys.stdout
    with session.retry() if retry else session.continue_() as cont:
        last_flush, buf = time.monotonic(), []
        for ch in cont:
            buf.append(ch)
            if time.monotonic() - last_flush > 0.03:
                out.write("".join(buf))
                out.flush()
                buf.clear()
                last_flush = time.monotonic()
        out.write("".join(buf))
    out.write("\n" if out.isatty() else "")
    out.flush()


def _continue_story(name, model, prime, settings, precision, adapt: bool | None, retry: bool = False) -> None:
    from charterm.session import Session, model_path_for
    from charterm.settings import Settings
    from charterm.store import Store

    store = Store()
    existing = store.load(name)
    path, notice = model_path_for(existing, model)
    if notice:
        warn(notice)
    loaded = _load(path)
    story = existing or store.open(name)
    own = Settings.from_dict(story.settings).adapt
    session = Session(loaded, store, story, settings=settings.replace(adapt=own), precision=precision)
    if adapt is not None and adapt != own:
        session.update_settings(adapt=adapt)
    for notice in session.notices:
        warn(notice)
    if prime:
        _feed_prime(session, prime)
    _stream(session, retry)
    session.save_adaptation()
    if retry:
        k, n = session.versions()
        print(f"version {k}/{n} of the last turn (`stories show {name!r} --tree` lists them)", file=sys.stderr)
    for notice in session.notices:
        warn(notice)
    store.set_last_story(name)
    store.close()


# --- next ----------------------------------------------------------------------------------------


@app.command("next")
def next_(
    prime: Annotated[str | None, typer.Option(help="Text to end with (any characters).")] = None,
    story: Annotated[
        str | None,
        typer.Option(
            help="Start from this saved story's text and state (read only; the prime goes after; "
            "the model's own weights, without what it learned of the story)."
        ),
    ] = None,
    words: Annotated[int, typer.Option(help="How many words to show, 1 to 9.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help='Print [{"text": ..., "p": ...}, ...].')] = False,
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the story's, else the shipped one]")] = None,
) -> None:
    """The words the model would most likely write next, each with its probability (the chance
    that its next word is exactly that one: a leading space is part of it, the space after is not)."""
    from charterm.candidates import check_words

    try:
        check_words(words)
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    import torch

    torch.set_num_threads(1)  # a beam of a few rows: as fast as two threads alone, far faster on a busy CPU
    prime = _read_prime(prime, None)
    session = _read_only_session(story, model)
    if prime:
        _feed_prime(session, prime)
    found = session.next_words(words)
    if as_json:
        print(json.dumps([{"text": c.text, "p": round(c.p, 6)} for c in found], ensure_ascii=False))
        return
    for i, c in enumerate(found, 1):
        print(f"{i}  {100 * c.p:6.2f}%  {json.dumps(c.text, ensure_ascii=False)}")


def _read_only_session(name: str | None, model: Path | None):
    """A session on a saved story's text and state that writes nothing (no store), or on nothing."""
    from charterm.session import Session, model_path_for

    if name is None:
        return Session(_load(model))
    from charterm.store import Store, check_name

    store = Store()
    try:
        story = store.load(check_name(name))
    finally:
        store.close()
    if story is None:
        raise CharTermError(f"no story named {name!r} (see `charterm stories list`)")
    path, notice = model_path_for(story, model)
    if notice:
        warn(notice)
    return Session(_load(path), story=story)


# --- stories -----------------------------------------------------------------------------------


class Format(StrEnum):
    txt = "txt"
    md = "md"


def _story(name: str):
    from charterm.store import Store

    store = Store()
    story = store.load(name)
    if story is None:
        raise CharTermError(f"no story named {name!r} (see `charterm stories list`)")
    return store, story


@stories_app.command("list")
def stories_list(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Saved stories, most recent first."""
    from charterm.store import Store

    store = Store()
    rows = store.list_stories()
    last = store.last_story()
    if as_json:
        print(json.dumps([{**r.__dict__, "last": r.name == last} for r in rows]))
        return
    if not rows:
        print(f"no stories yet in {store.path} (run `charterm` to start one)", file=sys.stderr)
        return
    width = max(len(r.name) for r in rows)
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated))
        mark = "*" if r.name == last else " "
        print(f"{mark} {r.name:<{width}}  {r.turns:>5} turns  {r.chars:>9,} chars  {when}")


@stories_app.command("show")
def stories_show(
    name: Annotated[str, typer.Argument(help="Story name.")],
    tree: Annotated[bool, typer.Option("--tree", help="Every turn, the branches too; * marks the story's.")] = False,
) -> None:
    """Print a story's text (the current path of its turns)."""
    store, story = _story(name)
    if tree:
        from charterm.store import tree_lines

        print("\n".join(tree_lines(store.tree(story.id), {t.id for t in story.turns})))
        return
    sys.stdout.write(story.text + ("\n" if story.text and not story.text.endswith("\n") else ""))


@stories_app.command("checkout")
def stories_checkout(
    name: Annotated[str, typer.Argument(help="Story name.")],
    turn: Annotated[int, typer.Argument(help="The turn to end the story at (0: before the first).", min=0)],
) -> None:
    """Make the path to a turn the story: what is written next starts a branch there (nothing is deleted)."""
    store, story = _story(name)
    store.move_head(story.id, story.revision, turn or None, story.branch_end(turn or None))
    story = store.load(story.name)
    shown = f"{len(story.turns)} turns, {len(story.text):,} chars"
    print(f"{story.name!r} now ends at turn {turn}: {shown}", file=sys.stderr)


@stories_app.command("export")
def stories_export(
    name: Annotated[str, typer.Argument(help="Story name.")],
    format: Annotated[Format, typer.Option("--format", help="txt, or md with your parts in bold.")] = Format.txt,
    out: Annotated[Path | None, typer.Option(help="Write to this file (atomically). [default: stdout]")] = None,
) -> None:
    """Write a story as text or markdown."""
    from charterm.fsutil import atomic_write_bytes
    from charterm.store import render

    _, story = _story(name)
    text = render(story.name, story.turns, format.value)
    if out is None:
        sys.stdout.write(text)
        return
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; pass a file name")
    atomic_write_bytes(out, text.encode())
    print(f"{out}: {len(story.turns)} turns, {len(story.text):,} chars", file=sys.stderr)


@stories_app.command("rm")
def stories_rm(name: Annotated[str, typer.Argument(help="Story name.")]) -> None:
    """Delete a story."""
    store, story = _story(name)
    store.delete(story.name)
    print(f"removed story {story.name!r} ({len(story.turns)} turns)", file=sys.stderr)


# --- eval and info -----------------------------------------------------------------------------


@app.command("eval")
def eval_(
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the model shipped in models/]")] = None,
    data: Annotated[Path, typer.Option(help="Text to score: a file or a folder of .txt files.")] = Path(
        "data/anna.txt"
    ),
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

    if adapt and (adapt_segment < 1 or not adapt_lr >= 0 or precision == Precision.int8):
        raise UsageError("--adapt needs --adapt-segment 1 or more, --adapt-lr 0 or more, and fp32 weights")
    if val_frac is not None and not 0 < val_frac < 1:
        raise UsageError(f"--val-frac must be between 0 and 1, exclusive (got {val_frac})")
    for name, v in (("batch-size", batch_size), ("seq-length", seq_length)):
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be at least 1 (got {v})")
    if not data.exists():
        hint = " (run `charterm data fetch anna` to get it)" if data.name == "anna.txt" else ""
        raise CharTermError(f"text {data} not found{hint}; or pass --data PATH")
    from charterm.corpus import SEPARATOR, open_corpus
    from charterm.evaluate import evaluate
    from charterm.text import split_train_val, windows_in

    loaded = _load(model)
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
        from charterm.evaluate import evaluate_adapting

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
    from charterm.checkpoint import model_card

    loaded = _load(model)
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


def _loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "unknown"


class StoreDtype(StrEnum):
    F32 = "F32"
    F16 = "F16"
    BF16 = "BF16"


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="Model file to convert.")],
    out: Annotated[Path, typer.Option(help="Where to write the converted model (atomically).")],
    dtype: Annotated[StoreDtype, typer.Option(help="Weight storage: F16 and BF16 halve the file.")] = StoreDtype.F16,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """Store a model's weights in another dtype; its metadata is kept and records the conversion."""
    from charterm.checkpoint import export_model

    if out.exists() and not force and out.resolve() != model.resolve():
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; pass a file name")
    command = _command_line("export")
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
    from charterm.notebook import FORMAT_NOTE, import_notebook
    from charterm.paths import default_out

    out = out or default_out(path.stem)
    command = _command_line("import")
    c = import_notebook(path, out, force, command).model.config
    print(
        f"{out}: LSTM {c.hidden}x{c.layers}, {c.vocab_size} chars, {out.stat().st_size / 1e6:.1f} MB, "
        f"{FORMAT_NOTE} ({path.name}); try it: charterm generate --model {shlex.quote(str(out))}",
        file=sys.stderr,
    )


# --- data --------------------------------------------------------------------------------------


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name: anna.")],
    dest: Annotated[Path | None, typer.Option(help="Where to write it. [default: data/<name>.txt]")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this URL instead (same checksum).")] = None,
) -> None:
    """Download a training text, verify its sha256, write it atomically."""
    from charterm.data import DATASETS, fetch

    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    ds = DATASETS[name]
    dest = dest or Path("data") / ds.filename
    show = sys.stderr.isatty()
    last = [0.0]

    def on_progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if show and (now - last[0] > 0.1 or done == total):
            last[0] = now
            pct = f" {100 * done / total:5.1f}%" if total else ""
            print(f"\rcharterm: {dest}: {done / 1e6:6.2f} MB{pct}", end="", file=sys.stderr, flush=True)

    fetched = fetch(url or ds.url, dest, ds.sha256, on_progress)
    if show and fetched:
        print(file=sys.stderr)
    print(
        f"{dest}: {'downloaded and verified' if fetched else 'already present and verified'} (sha256 {ds.sha256[:12]})"
    )


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    try:
        code = _run(argv)
    except BrokenPipeError:  # e.g. `charterm generate | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    if "charterm.distributed" in sys.modules:  # a torchrun worker: see exit_worker
        sys.modules["charterm.distributed"].exit_worker(code)
    sys.exit(code)


def _click_error(e: Exception, name: str) -> bool:
    """Whether `e` is Click's `name` error (Typer's own copy of Click from 0.26, the click
    package before): matched by class name, so no private module is imported."""
    return any(c.__name__ == name for c in type(e).__mro__)


def _run(argv: list[str] | None) -> int:
    debug = os.environ.get("CHARTERM_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="charterm", standalone_mode=False)
    except CharTermError as e:
        if debug:
            raise
        print(f"charterm: error: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("charterm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as e:
        if _click_error(e, "NoArgsIsHelpError"):
            print(e.format_message())
            return 0
        if _click_error(e, "UsageError"):
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            print(f"charterm: error: {e.format_message()}{hint}", file=sys.stderr)
            return 2
        if debug:
            raise
        print(f"charterm: error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    main()

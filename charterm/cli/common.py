"""What the command modules share: the root Typer app and its groups, the option types, and
small helpers. Imports no torch."""

import re
import shlex
import sys
from enum import StrEnum
from pathlib import Path

import typer

from charterm.config import TrainConfig
from charterm.errors import CharTermError
from charterm.settings import Settings

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
    help="Saved stories: list, show, export, import, remove.", no_args_is_help=True, rich_markup_mode=None
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


class StopAt(StrEnum):
    none = "none"
    sentence = "sentence"
    paragraph = "paragraph"


class Format(StrEnum):
    txt = "txt"
    md = "md"
    json = "json"



class StoreDtype(StrEnum):
    F32 = "F32"
    F16 = "F16"
    BF16 = "BF16"


def warn(msg: str) -> None:
    print(f"charterm: warning: {msg}", file=sys.stderr, flush=True)


def command_line(name: str) -> str:
    """The command as typed (recorded in the model file it writes), or `charterm NAME` when run
    some other way (from a test, or the app's job runner)."""
    return "charterm " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == [name] else f"charterm {name}"


def unescape(text: str) -> str:
    """\\n, \\t and \\\\ in a command-line value; everything else literal."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


# --- generate ----------------------------------------------------------------------------------


def load_model_or_default(model: Path | None):
    from charterm.engine.checkpoint import load_model
    from charterm.paths import default_model_path

    path = model or default_model_path()
    if model is None and not path.exists():
        raise CharTermError(f"no default model at {path}; train one with `charterm train` or pass --model PATH")
    return load_model(path)


def find_story(name: str):
    from charterm.story.store import Store

    store = Store()
    story = store.load(name)
    if story is None:
        raise CharTermError(f"no story named {name!r} (see `charterm stories list`)")
    return store, story


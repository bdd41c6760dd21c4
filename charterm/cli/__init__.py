"""The command line: a thin Typer front-end over the core. torch is imported inside commands,
so `charterm --help` stays fast."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from charterm import __version__
from charterm.cli.common import app
from charterm.errors import CharTermError, UsageError

# each command module adds its commands to `app`, in the order `charterm --help` lists them
# isort: off
from charterm.cli import training, writing, models, stories, data  # noqa: E402, F401
# isort: on


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
        from charterm.story.store import check_name

        check_name(story)
    if model is not None and not model.is_file():
        raise CharTermError(f"{model}: no such model file")
    from charterm.worker.client import start_worker

    # Textual waits this long after a lone Esc byte for the rest of a key sequence (100 ms unless
    # set); Esc is the stop key, and terminals send a sequence's bytes together
    os.environ.setdefault("ESCDELAY", "25")

    # started first: the worker imports torch and loads the model while this process imports Textual
    client = start_worker(story, str(model) if model else None)
    from charterm.app.app import CharTermApp

    for name in ("COLUMNS", "LINES"):  # a fixed size from the environment would make Textual ignore resizes
        os.environ.pop(name, None)
    CharTermApp(story=story, model=str(model) if model else None, client=client).run()


def main(argv: list[str] | None = None) -> None:
    try:
        code = _run(argv)
    except BrokenPipeError:  # e.g. `charterm generate | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    if "charterm.engine.distributed" in sys.modules:  # a torchrun worker: see exit_worker
        sys.modules["charterm.engine.distributed"].exit_worker(code)
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

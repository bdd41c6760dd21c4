"""`charterm data fetch`."""

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from charterm.cli.common import (
    data_app,
)
from charterm.errors import UsageError


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name: anna.")],
    dest: Annotated[Path | None, typer.Option(help="Where to write it. [default: data/<name>.txt]")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this URL instead (same checksum).")] = None,
) -> None:
    """Download a training text, verify its sha256, write it atomically."""
    from charterm.engine.data import DATASETS, fetch

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

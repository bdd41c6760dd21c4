"""`charterm data fetch`, and the download `charterm train` makes when its default text is nowhere."""

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from charterm.cli.common import (
    data_app,
)
from charterm.errors import CharTermError, UsageError

URL_ENV = "CHARTERM_DATA_URL"  # download the dataset from here instead (a mirror; the same sha256)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name: anna.")],
    dest: Annotated[
        Path | None,
        typer.Option(help="Where to write it. [default: data/<name>.txt in the checkout, else in the data dir]"),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help=f"Download from this URL instead (same checksum); also ${URL_ENV}.")
    ] = None,
) -> None:
    """Download a training text, verify its sha256, write it atomically."""
    from charterm.engine.data import DATASETS
    from charterm.paths import text_places

    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    ds = DATASETS[name]
    dest = dest or text_places(ds.filename)[0]
    fetched = download(name, dest, url)
    print(
        f"{dest}: {'downloaded and verified' if fetched else 'already present and verified'} (sha256 {ds.sha256[:12]})"
    )


def download(name: str, dest: Path, url: str | None = None) -> bool:
    """Fetch dataset `name` to dest (verified, atomic), with a progress line on a terminal's stderr.
    Returns False when dest was already there and verified."""
    from charterm.engine.data import DATASETS, fetch

    ds = DATASETS[name]
    show = sys.stderr.isatty()
    last = [0.0]

    def on_progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if show and (now - last[0] > 0.1 or done == total):
            last[0] = now
            pct = f" {100 * done / total:5.1f}%" if total else ""
            print(f"\rcharterm: {dest}: {done / 1e6:6.2f} MB{pct}", end="", file=sys.stderr, flush=True)

    fetched = fetch(url or os.environ.get(URL_ENV) or ds.url, dest, ds.sha256, on_progress)
    if show and fetched:
        print(file=sys.stderr)
    return fetched


def fetch_default_text() -> Path:
    """The default training text when it is nowhere (charterm.paths.default_text): downloaded to
    where `charterm data fetch anna` writes it. Offline, one line that names both ways on."""
    from charterm.engine.data import DATASETS
    from charterm.paths import DEFAULT_TEXT, text_places

    dest = text_places()[0]
    name = Path(DEFAULT_TEXT).stem
    try:
        download(name, dest)
    except CharTermError as e:
        reason = str(e).split("; ")[0].removeprefix("download failed").lstrip(": ")
        raise CharTermError(
            f"no training text, and downloading {DEFAULT_TEXT} to {dest} failed ({reason}); "
            f"run `charterm data fetch {name}` when online, or pass --data PATH"
        ) from None
    print(f"charterm: {dest}: downloaded and verified (sha256 {DATASETS[name].sha256[:12]})", file=sys.stderr)
    return dest


# --- entry point -------------------------------------------------------------------------------

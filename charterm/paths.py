"""Where charterm keeps its files: the one place that decides."""

import os
import re
from datetime import datetime
from pathlib import Path

DEFAULT_TEXT = "anna.txt"  # the book `charterm data fetch anna` gets: what training reads when not told


def home() -> Path:
    """The data dir (stories, models training writes): $CHARTERM_HOME, else the platform's."""
    env = os.environ.get("CHARTERM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("charterm", appauthor=False))


def preferences_path() -> Path:
    """The app's preferences (the theme, soft or hard wrap): a small JSON object in the data dir."""
    return home() / "preferences.json"


def history_path() -> Path:
    """What the person sent in the app, newest last (Up and Down recall it): a JSON list in the data dir."""
    return home() / "history.json"


def models_dir() -> Path:
    """Where a training run writes its model when not told where (see new_run_path)."""
    return home() / "models"


def cache_dir() -> Path:
    """$CHARTERM_CACHE, else the platform's user cache dir (both hold only derived data)."""
    env = os.environ.get("CHARTERM_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("charterm", appauthor=False))


def default_model_path() -> Path:
    """The model shipped in models/: beside the package (editable install) or installed with it
    under <prefix>/share/charterm/models (wheel). $CHARTERM_MODEL overrides."""
    import sys

    env = os.environ.get("CHARTERM_MODEL")
    if env:
        return Path(env)
    name = "anna.safetensors"
    beside = Path(__file__).resolve().parent.parent / "models" / name
    for candidate in (beside, Path(sys.prefix) / "share" / "charterm" / "models" / name):
        if candidate.exists():
            return candidate
    return beside


def default_out(stem: str) -> Path:
    """Where `charterm import` writes a model when --out is not given."""
    return Path("models") / f"{stem}.safetensors"


def checkout() -> Path | None:
    """The source checkout charterm runs from (an editable install, or the repo on the path), or
    None when it is installed from a wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "charterm").is_dir() else None


def text_places(name: str = DEFAULT_TEXT) -> list[Path]:
    """Where a training text of this name is looked for, in order: the checkout's data/ (when
    charterm runs from one), then data/ in the data dir. `charterm data fetch` writes to the first."""
    root = checkout()
    return [*([root / "data" / name] if root else []), home() / "data" / name]


def default_text() -> Path | None:
    """The default training text of `charterm train`, `eval` and the app's /train, where it is (None:
    nowhere yet; `train` then fetches it to text_places()[0])."""
    return next((p for p in text_places() if p.is_file()), None)


def training_text(data: str | os.PathLike | None = None) -> Path:
    """The text to train on or score: `data`, else the default text where it is. A missing one is
    one line saying how to get it."""
    from charterm.errors import CharTermError

    get = "run `charterm data fetch anna`, or pass --data PATH"
    if not data:
        found = default_text()
        if found is None:
            folders = " or ".join(str(p.parent) for p in text_places())
            raise CharTermError(f"no training text: {DEFAULT_TEXT} is not in {folders}; {get}")
        return found
    path = Path(data)
    if not path.exists():
        raise CharTermError(f"text {path} not found" + (f"; {get}" if path.name == DEFAULT_TEXT else ""))
    return path


def new_run_path(stem: str) -> Path:
    """Where a training run writes its model when not told (--out): a new file in models_dir() named
    by its text and the time, e.g. anna-20261203-141502.safetensors (-2, -3, ... when that is taken),
    so it never replaces the shipped model or an earlier run."""
    base = f"{stem or 'text'}-{datetime.now():%Y%m%d-%H%M%S}"
    n = 1
    while True:
        path = models_dir() / f"{base}{f'-{n}' if n > 1 else ''}.safetensors"
        if not path.exists() and not path.with_name(path.stem + ".resume.pt").exists():
            return path
        n += 1


def last_run_path(stem: str) -> Path | None:
    """The newest run of this text in models_dir() that left a resume state: what `--resume`
    without --out continues."""
    name = re.compile(rf"{re.escape(stem or 'text')}-\d{{8}}-\d{{6}}(-\d+)?\.resume\.pt")
    folder = models_dir()
    states = [p for p in folder.glob("*.resume.pt") if name.fullmatch(p.name)] if folder.is_dir() else []
    if not states:
        return None
    newest = max(states, key=lambda p: (p.stat().st_mtime, p.name))
    return newest.with_name(newest.name.removesuffix(".resume.pt") + ".safetensors")


def training_out(stem: str, resume: bool = False) -> Path:
    """A training run's model file when --out is not given: a new one (new_run_path), or on --resume
    the newest run of this text that can go on (last_run_path)."""
    from charterm.errors import CharTermError

    if not resume:
        return new_run_path(stem)
    last = last_run_path(stem)
    if last is None:
        raise CharTermError(f"no run of {stem} to resume in {models_dir()}; pass --out PATH (the run's model file)")
    return last

"""Where charterm keeps its files: the one place that decides."""

import os
from pathlib import Path


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
    """Where a training run started from the app writes its model."""
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
    """Where `charterm train` and `charterm import` write a model when --out is not given."""
    return Path("models") / f"{stem}.safetensors"

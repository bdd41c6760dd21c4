"""What the app remembers across runs: its preferences (the theme, the wrap) and the inputs sent (Up/Down).

Both are small JSON files in the data dir (`charterm.paths`), written atomically and owner-only. A missing or
damaged file reads as empty: it never keeps charterm from starting. No widgets here.
"""

import json
from pathlib import Path

from charterm import paths
from charterm.files import atomic_write_bytes

HISTORY_LIMIT = 500  # inputs kept, newest last


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"))


def load_preferences() -> dict:
    """The saved preferences (an empty dict if there are none)."""
    data = _read_json(paths.preferences_path())
    return data if isinstance(data, dict) else {}


def save_preference(key: str, value: object) -> None:
    """Save one preference, keeping the others (another window may have saved some meanwhile)."""
    preferences = load_preferences()
    if preferences.get(key) != value:
        _write_json(paths.preferences_path(), {**preferences, key: value})


def _entries(data: object) -> list[str]:
    return [e for e in data if isinstance(e, str)] if isinstance(data, list) else []


class InputHistory:
    """The inputs sent, oldest first, and where Up and Down are in them.

    `path`: the file that keeps them across runs (None: this run only). Going back starts from what the prompt
    holds, which going forward past the newest input brings back.
    """

    def __init__(self, path: Path | None = None, limit: int = HISTORY_LIMIT) -> None:
        self.path = path
        self.limit = limit
        self.entries = _entries(_read_json(path))[-limit:] if path else []
        self._index = len(self.entries)  # the entry shown; len(entries): what the person was typing
        self._draft = ""

    def add(self, entry: str) -> None:
        """Remember an input sent (not a blank one, nor the newest again), here and in the file."""
        self._index, self._draft = len(self.entries), ""
        if not entry.strip() or (self.entries and self.entries[-1] == entry):
            return
        self.entries = [*self.entries, entry][-self.limit :]
        self._index = len(self.entries)
        if self.path is not None:
            saved = _entries(_read_json(self.path))  # another window's inputs are kept too
            if not saved or saved[-1] != entry:
                _write_json(self.path, [*saved, entry][-self.limit :])

    def older(self, current: str) -> str | None:
        """The input before the one shown, or None if there is none; `current` is what the prompt holds."""
        if self._index == 0:
            return None
        if self._index == len(self.entries):
            self._draft = current
        self._index -= 1
        return self.entries[self._index]

    def newer(self) -> str | None:
        """The input after the one shown (past the newest: what the person was typing), or None."""
        if self._index >= len(self.entries):
            return None
        self._index += 1
        return self._draft if self._index == len(self.entries) else self.entries[self._index]

"""The messages between the app and its model worker: JSON, one object per line.

The app writes requests to the worker's stdin; each carries an `id` (1, 2, ... per app). The
worker writes events to its stdout; an event caused by a request names it in `id` (0: the
worker's own, e.g. a reload after another window changed the story). Every request ends with
a `Done` carrying its id, after all the events it caused. The first line the worker writes is
`Hello` with its `PROTOCOL` version; the app refuses any other. No torch, no Textual.
"""

import json
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

PROTOCOL = 1


class ProtocolError(ValueError):
    """A line that is not a message of this protocol version."""


@dataclass(frozen=True)
class Message:
    KIND: ClassVar[str] = ""
    id: int = 0

    def to_line(self) -> str:
        return json.dumps({"type": self.KIND, **asdict(self)}, ensure_ascii=False) + "\n"


class Request(Message):
    """App -> worker."""


class Event(Message):
    """Worker -> app."""


KINDS: dict[str, type[Message]] = {}


def message(cls):
    """Register a message class under its KIND."""
    cls = dataclass(frozen=True)(cls)
    KINDS[cls.KIND] = cls
    return cls


def decode(line: str) -> Message:
    try:
        obj = json.loads(line)
        cls = KINDS[obj.pop("type")]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ProtocolError(f"not a charterm worker message: {line[:80]!r} ({e})") from None


# --- requests: app -> worker ---------------------------------------------------------------------


@message
class Open(Request):
    """Open a story (None: the last one, else "untitled") with a model (None: the story's)."""

    KIND: ClassVar[str] = "open"
    story: str | None = None
    model: str | None = None
    precision: str = "int8"


@message
class Write(Request):
    """Add the person's text (may be empty) as a turn, then let the model continue."""

    KIND: ClassVar[str] = "write"
    text: str = ""


@message
class Stop(Request):
    """Stop the model before its next char: every generation a request before this one started."""

    KIND: ClassVar[str] = "stop"


@message
class Undo(Request):
    """Go back one turn (the state goes back exactly; the turn is kept for `redo`)."""

    KIND: ClassVar[str] = "undo"


@message
class Redo(Request):
    """Go forward one turn, towards where `undo` came back from."""

    KIND: ClassVar[str] = "redo"


@message
class Retry(Request):
    """Write the model's last turn again, as a new version beside the old one."""

    KIND: ClassVar[str] = "retry"


@message
class Version(Request):
    """Show the version of the last turn `step` (-1, +1) from the one shown, with the branch under it."""

    KIND: ClassVar[str] = "version"
    step: int = 1


@message
class Checkout(Request):
    """Make the path to turn `turn` the story (0: before the first turn): what is written next forks there."""

    KIND: ClassVar[str] = "checkout"
    turn: int = 0


@message
class Edit(Request):
    """A new version of turn `turn` with `text`, as a branch from the turn before it; it becomes the story."""

    KIND: ClassVar[str] = "edit"
    turn: int = 0
    text: str = ""


@message
class Tree(Request):
    """Every turn of the story (answered with `turns`)."""

    KIND: ClassVar[str] = "tree"


@message
class SetSetting(Request):
    """A setting as typed (`field` of charterm.settings.RULES); the worker checks it again."""

    KIND: ClassVar[str] = "set"
    field: str = ""
    value: str = ""


@message
class SwitchModel(Request):
    """Write with another model file; the story's state is rebuilt from its text."""

    KIND: ClassVar[str] = "model"
    path: str = ""


@message
class ListStories(Request):
    """Which stories there are (answered with `stories`)."""

    KIND: ClassVar[str] = "list"


@message
class Export(Request):
    """Write the story to a file, as text (`txt`), markdown (`md`) or whole (`json`: charterm-story/1)."""

    KIND: ClassVar[str] = "export"
    path: str = ""
    format: str = "txt"


@message
class ResetAdaptation(Request):
    """Forget what the model learned of the story: the base weights again."""

    KIND: ClassVar[str] = "adapt_reset"


@message
class Next(Request):
    """The model's `words` (1-9) most likely next words at the end of the story (answered with `candidates`)."""

    KIND: ClassVar[str] = "next"
    words: int = 5


@message
class Pick(Request):
    """Add `text` (a word `candidates` offered) as the model's turn, answered as a turn is: `appended`, `committed`."""

    KIND: ClassVar[str] = "pick"
    text: str = ""


@message
class Choices(Request):
    """The model writes `k` (2-9) continuations at once (answered with `choice` events as they are written, then
    `kept` and `reset`: they are versions of one turn, the first shown)."""

    KIND: ClassVar[str] = "choices"
    k: int = 3


@message
class PickChoice(Request):
    """Show the choice whose turn id is `turn` (one `kept` named) as the model's turn (the others stay versions)."""

    KIND: ClassVar[str] = "pick_choice"
    turn: int = 0


@message
class Typing(Request):
    """The prompt's text as the person types it: the worker learns its whole segments ahead of the
    `write` it may become; nothing changes in the story."""

    KIND: ClassVar[str] = "typing"
    text: str = ""


@message
class Quit(Request):
    """Stop, commit what was shown, close the store and exit."""

    KIND: ClassVar[str] = "quit"


# --- events: worker -> app -----------------------------------------------------------------------


@message
class Hello(Event):
    """The worker's first line: its protocol version and process id."""

    KIND: ClassVar[str] = "hello"
    protocol: int = PROTOCOL
    pid: int = 0


@message
class Snapshot(Event):
    """What the title and side pane show: the story, its settings, the model card, and what the
    model has learned of the story (`on`, `chars`, `gain`: 1 - adapted/base loss on the learned
    turns, each scored before learning it; `last_base`, `last_adapted`: the last turn's)."""

    KIND: ClassVar[str] = "snapshot"
    story: str = ""
    turns: int = 0
    chars: int = 0
    settings: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    adaptation: dict = field(default_factory=dict)


@message
class Reset(Event):
    """The story (the path to its head) as (author, text) runs, one per turn, after opening, a reload, undo,
    redo, retry or a move in the tree; `ids`: each turn's id; `versions`: each turn's [k, n] (version k of n)."""

    KIND: ClassVar[str] = "reset"
    runs: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    versions: list = field(default_factory=list)


@message
class Appended(Event):
    """Text added at the end of the story (the person's turn, or chars the model just wrote); `probs`: the
    model's probability of each char it wrote (3 decimals; empty for the person's text)."""

    KIND: ClassVar[str] = "appended"
    author: str = "model"
    text: str = ""
    probs: list = field(default_factory=list)


@message
class Generating(Event):
    """The model starts a turn."""

    KIND: ClassVar[str] = "generating"


@message
class Committed(Event):
    """A turn is saved; the story now has `turns` turns and `chars` chars; `turn`: its id; `version`: its [k, n]."""

    KIND: ClassVar[str] = "committed"
    author: str = "model"
    length: int = 0
    turns: int = 0
    chars: int = 0
    turn: int = 0
    version: list = field(default_factory=lambda: [1, 1])


@message
class Notice(Event):
    """Something to tell the person (a reload, a recovered draft); `severity` as Textual's."""

    KIND: ClassVar[str] = "notice"
    text: str = ""
    severity: str = "information"


@message
class Error(Event):
    """A request failed; `text` is one line for the person."""

    KIND: ClassVar[str] = "error"
    text: str = ""


@message
class Stories(Event):
    """The stories there are: `name`, `turns`, `chars` each."""

    KIND: ClassVar[str] = "stories"
    stories: list = field(default_factory=list)


@message
class Candidates(Event):
    """The answer to `next`: `words`, each `text` and `p` (the chance that the model's next word is exactly it)."""

    KIND: ClassVar[str] = "candidates"
    words: list = field(default_factory=list)


@message
class Turns(Event):
    """The answer to `tree`: every turn, oldest first: `id`, `parent` (0: none), `author`, `start` (its first
    chars), `chars`, `current` (on the story's path)."""

    KIND: ClassVar[str] = "turns"
    turns: list = field(default_factory=list)


@message
class Choice(Event):
    """Chars choice `row` (0-based) of a `choices` request just wrote, with the model's probability of each."""

    KIND: ClassVar[str] = "choice"
    row: int = 0
    text: str = ""
    probs: list = field(default_factory=list)


@message
class Kept(Event):
    """The choices are saved as versions of one turn: `turns`, each row's turn id (0: the row wrote nothing)."""

    KIND: ClassVar[str] = "kept"
    turns: list = field(default_factory=list)


@message
class Done(Event):
    """The request `id` has ended (every event it caused came before this)."""

    KIND: ClassVar[str] = "done"


def table() -> str:
    """Every message as a Markdown table (docs/worker-protocol.md's copy is checked against it)."""
    rows = ["| message | way | fields (besides `id`) | what it is |", "|---|---|---|---|"]
    for kind, cls in KINDS.items():
        names = ", ".join(f"`{f.name}`" for f in fields(cls) if f.name != "id") or "none"
        way = "app -> worker" if issubclass(cls, Request) else "worker -> app"
        doc = " ".join((cls.__doc__ or "").split())
        rows.append(f"| `{kind}` | {way} | {names} | {doc} |")
    return "\n".join(rows) + "\n"


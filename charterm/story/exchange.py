"""Stories as files: a whole story out as `charterm-story/1` JSON and back in, and a text file
in as a new story (docs/story-file.md; docs/charterm-story-1.schema.json is the format's schema).

The file carries the story's name, when it was made, its settings, the model (path, fingerprint,
a short card), `head` and `tip`, every turn of the tree (id, parent, author, text, when it was
written, its version among the turns after the same parent) and an unfinished draft. It leaves out
the LSTM states and the learned weights: both are caches of the text, rebuilt when the story opens
(the states by feeding the text, the weights by the rule of charterm.story.learning, as after a
model change). An import is checked whole before anything is stored, then stored in one
transaction; turn ids are renumbered (the store's ids are unique across stories). No UI code.
"""

import codecs
import heapq
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from charterm import __version__
from charterm.errors import CharTermError, UsageError
from charterm.settings import BY_FIELD, Settings, check
from charterm.story.store import MODEL, PERSON, Store, Story, Turn, check_name

FORMAT = "charterm-story/1"
MAX_BYTES = 50_000_000  # the biggest file `stories import` reads: 50 MB, some 25 novels
CARD = (
    "name", "cell", "hidden", "layers", "embed", "vocab_size", "val_loss", "data", "epochs", "steps", "created",
    "charterm_version",
)  # fmt: skip
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")  # what ends a paragraph of a text file


@dataclass
class StoryFile:
    """A story read from a file and checked, with the file's own turn ids (parents first)."""

    name: str
    turns: list[Turn]
    head: int | None = None
    tip: int | None = None
    settings: dict = field(default_factory=dict)
    model_path: str | None = None
    created: float | None = None
    draft: Turn | None = None


# --- out ---------------------------------------------------------------------------------------------


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def story_dict(store: Store, story: Story, model: dict) -> dict:
    """The whole story as one `charterm-story/1` object; `model` from `model_info` or `model_from_card`."""
    versions: dict[int | None, int] = {}
    turns = []
    for t in store.all_turns(story.id):  # oldest first, as the versions of a place are ordered
        versions[t.parent] = versions.get(t.parent, 0) + 1
        turns.append(
            {"id": t.id, "parent": t.parent, "author": t.author, "text": t.text, "created": iso(t.created),
             "version": versions[t.parent]}
        )  # fmt: skip
    draft = {"author": story.draft.author, "text": story.draft.text} if story.draft else None
    return {
        "format": FORMAT,
        "charterm_version": __version__,
        "name": story.name,
        "created": iso(story.created),
        "settings": Settings.from_dict(story.settings).to_dict(),
        "model": model,
        "head": story.turns[-1].id if story.turns else None,
        "tip": story.tip,
        "turns": turns,
        "draft": draft,
    }


def export_text(store: Store, story: Story, model: dict) -> str:
    return json.dumps(story_dict(store, story, model), ensure_ascii=False, indent=1) + "\n"


def model_info(path: str | None, fingerprint: str | None = None) -> dict:
    """The model block for a model file, from its header alone (no weights are read). A file that
    is gone or unreadable gives its path, `fingerprint` (that of the story's cached states) and no card."""
    out = {"path": path, "fingerprint": fingerprint, "card": None}
    if not path or not Path(path).is_file():
        return out
    from charterm.engine.checkpoint import read_header

    try:
        meta = read_header(Path(path))[0]
        config, info = json.loads(meta["model"]), json.loads(meta.get("info", "{}"))
        if not (isinstance(config, dict) and isinstance(info, dict)):
            return out
    except (CharTermError, OSError, ValueError, KeyError):
        return out
    card = {k: info.get(k) for k in CARD} | {k: config.get(k) for k in CARD if k in config}
    card["name"] = Path(path).name
    return model_from_card({**card, "path": path, "fingerprint": info.get("fingerprint") or fingerprint})


def model_from_card(card: dict) -> dict:
    """The model block from `charterm.engine.checkpoint.model_card` (the worker has the model loaded)."""
    short = {k: card.get(k) for k in CARD}
    if not isinstance(short["val_loss"], int | float):
        short["val_loss"] = None
    return {"path": card.get("path") or None, "fingerprint": card.get("fingerprint") or None, "card": short}


# --- in ----------------------------------------------------------------------------------------------


def read_file(path: Path) -> StoryFile:
    """A story file (JSON) or a text file (.txt, .md: one person turn per paragraph), checked whole;
    refused with one line. A `.json` file, or one of another name whose text starts with `{`, is
    read as a story file."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path} is not a file; pass a story file (.json) or a text (.txt, .md)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1) if size <= MAX_BYTES else b""
    except OSError as e:
        raise CharTermError(f"{path}: cannot read it ({e.strerror or e})") from None
    if size > MAX_BYTES or len(data) > MAX_BYTES:
        raise CharTermError(f"{path} is over {MAX_BYTES / 1e6:.0f} MB, the most a story file may be")
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix not in TEXT_SUFFIXES and data.lstrip()[:1] == b"{"):
        return parse_story(data, str(path))
    return parse_text(data, str(path), path.stem)


def parse_text(data: bytes, source: str, name: str) -> StoryFile:
    """A text as a new story: the person's turns are its paragraphs (each with the blank lines
    after it), so the story's text is the file's exactly (with CRLF and CR as LF)."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = e.start + bom
        raise CharTermError(
            f"{source}: not valid UTF-8 at byte offset {at} ({data[at : at + 4]!r}); convert it to UTF-8 first "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None
    paragraphs = split_paragraphs(text.replace("\r\n", "\n").replace("\r", "\n"))
    if not paragraphs:
        raise CharTermError(f"{source} has no text to import")
    now = time.time()
    turns = [Turn(PERSON, p, id=i + 1, created=now, parent=i or None) for i, p in enumerate(paragraphs)]
    return StoryFile(name, turns, head=len(turns), tip=len(turns))


def split_paragraphs(text: str) -> list[str]:
    """The paragraphs of a text, each with the blank lines after it; blank lines before the first
    go with it. Joined, they are the text; a text of only whitespace has none."""
    pieces, start = [], 0
    for m in BLANK_LINES.finditer(text):
        pieces.append(text[start : m.end()])
        start = m.end()
    pieces.append(text[start:])
    out: list[str] = []
    lead = ""
    for piece in pieces:
        if not piece.strip():
            lead += piece
        else:
            out.append(lead + piece)
            lead = ""
    if out and lead:
        out[-1] += lead
    return out


class Damaged(CharTermError):
    """A story file that cannot be a story: says where."""


def parse_story(data: bytes, source: str) -> StoryFile:
    """A `charterm-story/1` file, checked whole: refused with one line if it is not JSON, is of a
    newer format, or is not a tree of known authors' turns."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CharTermError(f"{source}: not a charterm story file (not UTF-8 at byte offset {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise CharTermError(f"{source}: not a charterm story file (not JSON: {str(e)[:80]})") from None
    _check_format(obj, source)
    try:
        return _story(obj)
    except Damaged as e:
        raise CharTermError(f"{source}: damaged story file: {e}") from None


def _check_format(obj, source: str) -> None:
    kind = obj.get("format") if isinstance(obj, dict) else None
    if not (isinstance(kind, str) and kind.startswith("charterm-story/")):
        raise CharTermError(f'{source}: not a charterm story file (no "format": "{FORMAT}")')
    version = kind.removeprefix("charterm-story/")
    if version.isdigit() and int(version) > 1:
        raise CharTermError(f"{source} was written by a newer charterm ({kind}); upgrade charterm to import it")
    if kind != FORMAT:
        raise CharTermError(f"{source}: not a charterm story file (format {kind!r}; this charterm reads {FORMAT})")


def _story(obj: dict) -> StoryFile:
    name = _get(obj, "name", str, "the story")
    turns, versions = _turns(_get(obj, "turns", list, "the story"))
    by_id = {t.id: t for t in turns}
    _refuse_cycles(by_id)
    turns = _parents_first(turns)
    _check_versions(turns, versions)
    ends = {}
    for key in ("head", "tip"):
        ends[key] = _get(obj, key, int | None, "the story")
        if ends[key] is not None and ends[key] not in by_id:
            raise Damaged(f"{key} {ends[key]} is not a turn of the file")
    model = _get(obj, "model", dict | None, "the story") or {}
    draft = _get(obj, "draft", dict | None, "the story", required=False)
    if draft is not None:
        draft = Turn(_author(draft, "the draft"), _get(draft, "text", str, "the draft"))
    return StoryFile(
        name, turns, ends["head"], ends["tip"], _settings(_get(obj, "settings", dict, "the story")),
        _get(model, "path", str | None, "the model", required=False), _time(obj, "the story"), draft,
    )  # fmt: skip


def _turns(raw: list) -> tuple[list[Turn], dict[int, int]]:
    """The turns as listed, and the version each says it is; every parent is one of them."""
    turns, versions = [], {}
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise Damaged(f"turns[{i}] is not an object")
        tid = _get(t, "id", int, f"turns[{i}]")
        where = f"turn {tid}"
        if tid < 1 or tid in versions:
            raise Damaged(f"{where}: " + ("ids count from 1" if tid < 1 else "two turns have this id"))
        parent = _get(t, "parent", int | None, where)
        versions[tid] = _get(t, "version", int, where)
        text = _get(t, "text", str, where)
        turns.append(Turn(_author(t, where), text, id=tid, created=_time(t, where), parent=parent))
    for t in turns:
        if t.parent is not None and t.parent not in versions:
            raise Damaged(f"turn {t.id}: its parent {t.parent} is not in the file")
    return turns, versions


def _refuse_cycles(by_id: dict[int, Turn]) -> None:
    done: set[int] = set()
    for start in by_id:
        path, on_path, at = [], set(), start
        while at is not None and at not in done:
            if at in on_path:
                loop = path[path.index(at) :] + [at]
                raise Damaged("the turns' parents go round in a cycle: " + " -> ".join(map(str, loop)))
            path.append(at)
            on_path.add(at)
            at = by_id[at].parent
        done.update(path)


def _parents_first(turns: list[Turn]) -> list[Turn]:
    """The turns in the file's order, except that a turn listed before its parent goes after it."""
    index = {t.id: i for i, t in enumerate(turns)}
    kids: dict[int | None, list[Turn]] = {}
    for t in turns:
        kids.setdefault(t.parent, []).append(t)
    ready = [(index[t.id], t.id) for t in kids.get(None, [])]
    heapq.heapify(ready)
    out = []
    while ready:
        i, tid = heapq.heappop(ready)
        out.append(turns[i])
        for kid in kids.get(tid, []):
            heapq.heappush(ready, (index[kid.id], kid.id))
    return out


def _check_versions(turns: list[Turn], versions: dict[int, int]) -> None:
    """The versions of a place are the turns after the same parent, in the file's order, from 1."""
    seen: dict[int | None, int] = {}
    for t in turns:
        seen[t.parent] = seen.get(t.parent, 0) + 1
        if versions[t.id] != seen[t.parent]:
            after = f"turn {t.parent}" if t.parent is not None else "the start"
            k = seen[t.parent]
            raise Damaged(f"turn {t.id}: version {versions[t.id]}, but it is no. {k} of the turns after {after}")


def _settings(raw: dict) -> dict:
    """All the settings, each checked by its one rule (charterm.settings); keys it does not know are left out."""
    known = {}
    for key, value in raw.items():
        if key in BY_FIELD:
            try:
                known[key] = check(BY_FIELD[key], value)
            except UsageError as e:
                raise Damaged(f"settings: {e}") from None
    return Settings(**known).to_dict()


def _author(obj: dict, where: str) -> str:
    author = obj.get("author")
    if author not in (PERSON, MODEL):
        raise Damaged(f"{where}: unknown author {author!r} (person or model)")
    return author


def _time(obj: dict, where: str) -> float:
    raw = _get(obj, "created", str, where)
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        raise Damaged(f"{where}: created is not an ISO 8601 time ({raw[:40]!r})") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


TYPE_NAMES = {str: "a string", int: "a whole number", list: "a list", dict: "an object"}


def _get(obj: dict, key: str, kind, where: str, required: bool = True):
    """obj[key] if it is of `kind` (a type, or `type | None`), else Damaged."""
    if key not in obj and not required:
        return None
    value = obj.get(key)
    kinds = getattr(kind, "__args__", (kind,))
    if key not in obj or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        what = " or ".join("null" if k is type(None) else TYPE_NAMES[k] for k in kinds)
        raise Damaged(f"{where}: {key} must be {what}" + ("" if key in obj else " (it is missing)"))
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Damaged(f"{where}: {key} holds a lone surrogate ({value[e.start]!r}), which is not text") from None
    return value


def import_story(store: Store, story: StoryFile, name: str | None = None, replace: bool = False) -> str:
    """Store a checked story under `name` (default: its own) in one transaction; a story of that
    name is refused unless `replace`, which replaces it in the same transaction. Returns the name."""
    try:
        name = check_name(name if name is not None else story.name)
    except UsageError as e:
        raise UsageError(f"{e} (pass --name NEW)") from None
    store.add_story(
        name, story.turns, story.head, story.tip, model_path=story.model_path, settings=story.settings,
        created=story.created, draft=story.draft, replace=replace,
    )  # fmt: skip
    return name

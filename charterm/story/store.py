"""Stories on disk: one SQLite database (WAL) in the data dir, one transaction per turn.

A story is a tree of turns (who wrote it, the text, its parent turn, and a cache of the LSTM
state after it, tagged with the model's fingerprint). The story's `head` is the turn it is at:
the path from the root to it is the story as shown; `tip` is the end of the branch the head
came back along (undo moves the head back, redo forward towards the tip). Nothing is deleted
but a whole story. Every change bumps the story's `revision`; a writer
passes the revision it last saw, and a mismatch raises `StoryChanged` instead of silently
interleaving two windows' turns. The text a generation has shown so far is kept in `drafts`
(rewritten every half second or so) so a kill -9 loses at most the last moment of it.
"""

import contextlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from charterm.errors import CharTermError, UsageError
from charterm.paths import home

PERSON, MODEL = "person", "model"
MAX_NAME = 100
SCHEMA = """
CREATE TABLE IF NOT EXISTS stories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model_path TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: caches are keyed by turn id
    story_id INTEGER NOT NULL REFERENCES stories(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    author TEXT NOT NULL CHECK (author IN ('person', 'model')),
    text TEXT NOT NULL,
    created REAL NOT NULL,
    state BLOB,
    fingerprint TEXT,
    UNIQUE (story_id, seq)
);
CREATE TABLE IF NOT EXISTS drafts (
    story_id INTEGER PRIMARY KEY REFERENCES stories(id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    updated REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''  -- host:pid of the writer, so a live generation is not taken over
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""  # schema 1; later versions are MIGRATIONS applied on top of it

MIGRATIONS = {  # version: the statements that take a database from the version before to it
    2: [
        "ALTER TABLE turns ADD COLUMN parent INTEGER REFERENCES turns(id) ON DELETE CASCADE",  # NULL: a first turn
        """UPDATE turns SET parent = (SELECT p.id FROM turns p WHERE p.story_id = turns.story_id
            AND p.seq < turns.seq ORDER BY p.seq DESC LIMIT 1)""",
        "ALTER TABLE stories ADD COLUMN head INTEGER",  # the turn the story is at (NULL: before the first)
        "ALTER TABLE stories ADD COLUMN tip INTEGER",  # where redo goes back to
        """UPDATE stories SET head = (SELECT t.id FROM turns t WHERE t.story_id = stories.id ORDER BY t.seq DESC
            LIMIT 1)""",
        "UPDATE stories SET tip = head",
        "CREATE INDEX turns_by_parent ON turns (story_id, parent)",
        """CREATE TABLE adaptations (
            story_id INTEGER PRIMARY KEY REFERENCES stories(id) ON DELETE CASCADE,
            base TEXT NOT NULL,  -- fingerprint of the model that adapted
            since INTEGER NOT NULL,  -- learning covers the person's turns after this turn id (0: all)
            after INTEGER NOT NULL,  -- the last turn id the weights have learned (0: none)
            data BLOB NOT NULL  -- charterm.engine.adapt snapshot: weights, moments, steps
        )"""
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)


class StoryChanged(CharTermError):
    """Another window (or `charterm generate --story`) changed the story since we last read it."""


LIVE_WRITERS: set[str] = set()  # the draft owners of this process still generating


def new_owner() -> str:
    """A draft owner id: host, pid and a token for one generation."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_alive(owner: str) -> bool:
    """Whether the generation that wrote a draft may still be running: in this process, if it has
    not finished; on this host, if its process is alive; on another host, unknown: no."""
    host, pid, token = (owner.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner in LIVE_WRITERS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_name(name: str) -> str:
    """A story name is a label, never a path: printable, 1-100 chars, trimmed."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise UsageError("a story name cannot be empty")
    if len(name) > MAX_NAME:
        raise UsageError(f"a story name can be at most {MAX_NAME} characters (got {len(name)})")
    if any(unicodedata.category(c) in ("Cc", "Cs", "Cn") for c in name):
        raise UsageError("a story name cannot contain control characters (tabs, newlines, NUL) or unassigned ones")
    return name


def slug(name: str) -> str:
    """A file name for exporting a story: letters, digits, '-', '_' and '.' only, no leading dot."""
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-") or "story"
    out = out[:80]
    while len(out.encode()) > 200:  # file names are limited in bytes, not chars
        out = out[:-1]
    return out


@dataclass
class Turn:
    author: str
    text: str
    state: bytes | None = None  # the LSTM state after this turn (see checkpoint.pack_state)
    fingerprint: str | None = None  # the model the state belongs to
    id: int | None = None
    created: float = 0.0
    parent: int | None = None  # the turn before it (None: a first turn)


@dataclass
class Story:
    id: int
    name: str
    model_path: str | None
    settings: dict
    created: float
    updated: float
    revision: int
    turns: list[Turn] = field(default_factory=list)  # the path from the first turn to the head
    draft: Turn | None = None  # text a generation showed but never finished (recovered on open)
    draft_owner: str = ""
    tip: int | None = None  # where redo goes: the end of the branch the head came back along
    children: dict[int | None, list[int]] = field(default_factory=dict)  # the tree: parent -> child ids, oldest first

    def versions(self, turn: Turn) -> list[int]:
        """The turn and its siblings (the versions of that place in the story), oldest first."""
        return self.children.get(turn.parent, [turn.id])

    def branch_end(self, turn_id: int | None) -> int | None:
        """The end of the branch under a turn, following the newest child at each step."""
        while self.children.get(turn_id):
            turn_id = self.children[turn_id][-1]
        return turn_id

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.turns)


@dataclass
class StorySummary:
    name: str
    turns: int
    chars: int
    updated: float
    model_path: str | None


class Store:
    """The stories database. Thread-safe: the app writes from a worker thread."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else home() / "stories.db"
        _private_dir(self.path.parent)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(self.path, timeout=15, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout = 15000")
            self._refuse_newer()
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._upgrade()
        except sqlite3.DatabaseError as e:
            raise CharTermError(f"{self.path}: cannot open the stories database ({e})") from None
        if mode.lower() != "wal":
            raise CharTermError(f"{self.path}: SQLite refused WAL mode ({mode}); is it on a network file system?")
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)

    def _refuse_newer(self) -> int:
        """The schema version; a newer one than ours is refused before anything is written."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self.db.close()
            raise CharTermError(f"{self.path} was written by a newer charterm (schema {version}); upgrade charterm")
        return version

    def _upgrade(self) -> None:
        """Create a new database, or bring an older one to SCHEMA_VERSION in one transaction
        after keeping a copy of it (`stories.db.schema1.bak`). A newer one is refused, untouched."""
        version = self._refuse_newer()
        if version == SCHEMA_VERSION:
            return
        backup = self.path.with_name(f"{self.path.name}.schema{version}.bak")
        if version and not backup.exists():
            with contextlib.closing(sqlite3.connect(backup)) as copy:
                self.db.backup(copy)
            os.chmod(backup, 0o600)
        with self.transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            if version == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                version = 1
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[v]:
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextlib.contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT: the write lock is taken up front, so two writers queue."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # --- stories ------------------------------------------------------------------------------

    def list_stories(self) -> list[StorySummary]:
        """Each story's current path: turns and chars."""
        with self.transaction() as db:
            rows = db.execute("SELECT id, name, updated, model_path FROM stories ORDER BY updated DESC").fetchall()
            out = []
            for story_id, name, updated, model_path in rows:
                path = db.execute(PATH.format(cols="LENGTH(t.text)"), (story_id,)).fetchall()
                out.append(StorySummary(name, len(path), sum(n for (n,) in path), updated, model_path))
        return out

    def load(self, name: str) -> Story | None:
        """The story with its turns (and any unfinished draft), read in one snapshot."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id, name, model_path, settings, created, updated, revision FROM stories WHERE name = ?",
                (check_name(name),),
            ).fetchone()
            if row is None:
                return None
            story = Story(*row[:3], _json(row[3]), *row[4:])
            cols = "t.id, t.author, t.text, t.created, t.state, t.fingerprint, t.parent"
            story.turns = [
                Turn(author, text, state, fp, tid, created, parent)
                for tid, author, text, created, state, fp, parent in db.execute(PATH.format(cols=cols), (story.id,))
            ]
            story.tip = db.execute("SELECT tip FROM stories WHERE id = ?", (story.id,)).fetchone()[0]
            for tid, parent in db.execute("SELECT id, parent FROM turns WHERE story_id = ? ORDER BY id", (story.id,)):
                story.children.setdefault(parent, []).append(tid)
            draft = db.execute(
                "SELECT author, text, updated, owner FROM drafts WHERE story_id = ?", (story.id,)
            ).fetchone()
            if draft and draft[1]:
                story.draft, story.draft_owner = Turn(draft[0], draft[1], created=draft[2]), draft[3]
        return story

    def create(self, name: str, model_path: str | None = None, settings: dict | None = None) -> Story:
        name = check_name(name)
        now = time.time()
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO stories (name, model_path, settings, created, updated) VALUES (?, ?, ?, ?, ?)",
                    (name, model_path, json.dumps(settings or {}), now, now),
                )
        except sqlite3.IntegrityError:
            raise CharTermError(f"a story named {name!r} already exists") from None
        return self.load(name)

    def open(self, name: str, model_path: str | None = None) -> Story:
        """Load the story, creating it (with `model_path`) if there is none of that name."""
        story = self.load(name)
        if story is None:
            with contextlib.suppress(CharTermError):
                return self.create(name, model_path)
            story = self.load(name)  # created by another process in between
        return story

    def delete(self, name: str) -> None:
        name = check_name(name)
        with self.transaction() as db:
            cur = db.execute("DELETE FROM stories WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise CharTermError(f"no story named {name!r} (see `charterm stories list`)")
            db.execute("DELETE FROM meta WHERE key = 'last_story' AND value = ?", (name,))

    def revision(self, story_id: int) -> int:
        with self._lock:
            row = self.db.execute("SELECT revision FROM stories WHERE id = ?", (story_id,)).fetchone()
        if row is None:
            raise StoryChanged("the story was deleted by another window")
        return row[0]

    def set_model(self, story_id: int, model_path: str | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE stories SET model_path = ? WHERE id = ?", (model_path, story_id))

    def set_settings(self, story_id: int, settings: dict) -> None:
        with self.transaction() as db:
            db.execute("UPDATE stories SET settings = ? WHERE id = ?", (json.dumps(settings), story_id))

    def last_story(self) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'last_story'").fetchone()
        return row[0] if row else None

    def set_last_story(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_story', ?)", (name,))

    # --- turns --------------------------------------------------------------------------------

    def append_turn(self, story_id: int, revision: int, turn: Turn, parent: int | None | str = "head") -> int:
        """Add a turn after `parent` (by default the head; an earlier turn, or None, makes a branch) and make it
        the head, dropping the draft it finishes, in one transaction; returns the new revision."""
        with self.transaction() as db:
            self._check(db, story_id, revision)
            self._insert(db, story_id, turn, parent)
            db.execute("DELETE FROM drafts WHERE story_id = ?", (story_id,))
            return self._bump(db, story_id, revision)

    def append_versions(self, story_id: int, revision: int, turns: list[Turn]) -> int:
        """Add turns as versions of one place, each after the head, and make the first the head, dropping the
        draft they finish, in one transaction; returns the new revision."""
        with self.transaction() as db:
            self._check(db, story_id, revision)
            head = db.execute("SELECT head FROM stories WHERE id = ?", (story_id,)).fetchone()[0]
            for turn in turns:
                self._insert(db, story_id, turn, head)
            db.execute("UPDATE stories SET head = ?, tip = ? WHERE id = ?", (turns[0].id, turns[0].id, story_id))
            db.execute("DELETE FROM drafts WHERE story_id = ?", (story_id,))
            return self._bump(db, story_id, revision)

    def move_head(self, story_id: int, revision: int, head: int | None, tip: int | None) -> int:
        """Make the path to `head` (None: before the first turn) the story; redo goes towards `tip`. No turn is
        deleted. Returns the new revision."""
        with self.transaction() as db:
            self._check(db, story_id, revision)
            for turn_id in {head, tip} - {None}:
                found = db.execute("SELECT 1 FROM turns WHERE id = ? AND story_id = ?", (turn_id, story_id))
                if found.fetchone() is None:
                    raise UsageError(f"the story has no turn {turn_id} (`stories show NAME --tree` lists them)")
            db.execute("UPDATE stories SET head = ?, tip = ? WHERE id = ?", (head, tip, story_id))
            return self._bump(db, story_id, revision)

    @staticmethod
    def _insert(db, story_id: int, turn: Turn, parent: int | None | str = "head") -> None:
        if parent == "head":
            parent = db.execute("SELECT head FROM stories WHERE id = ?", (story_id,)).fetchone()[0]
        seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM turns WHERE story_id = ?", (story_id,))
        turn.created, turn.parent = turn.created or time.time(), parent
        cur = db.execute(
            "INSERT INTO turns (story_id, seq, author, text, created, state, fingerprint, parent) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (story_id, seq.fetchone()[0], turn.author, turn.text, turn.created, turn.state, turn.fingerprint, parent),
        )
        turn.id = cur.lastrowid
        db.execute("UPDATE stories SET head = ?, tip = ? WHERE id = ?", (turn.id, turn.id, story_id))

    def save_state(self, turn_id: int, state: bytes, fingerprint: str) -> None:
        """Cache the LSTM state after a turn (not a change to the story: no revision bump)."""
        with self.transaction() as db:
            db.execute("UPDATE turns SET state = ?, fingerprint = ? WHERE id = ?", (state, fingerprint, turn_id))

    def tree(self, story_id: int, start: int = 40) -> list[tuple[int, int | None, str, str, int]]:
        """Every turn of a story, oldest first: (id, parent, author, its first `start` chars, its length)."""
        with self._lock:
            return self.db.execute(
                "SELECT id, parent, author, SUBSTR(text, 1, ?), LENGTH(text) FROM turns WHERE story_id = ? ORDER BY id",
                (start, story_id),
            ).fetchall()

    def all_turns(self, story_id: int) -> list[Turn]:
        """Every turn of a story with its text, oldest first (no states)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, author, text, created, parent FROM turns WHERE story_id = ? ORDER BY id", (story_id,)
            ).fetchall()
        return [Turn(author, text, None, None, tid, created, parent) for tid, author, text, created, parent in rows]

    def add_story(self, name: str, turns: list[Turn], head: int | None, tip: int | None, **story) -> dict[int, int]:
        """A whole story in one transaction: `turns` in order, each after its parent (an earlier one); their ids,
        parents, `head` and `tip` are the caller's, renumbered here (returns old id -> new id). `story`: model_path,
        settings, created, draft (a Turn), replace (else a story of that name is refused). No states are stored."""
        name, now = check_name(name), time.time()
        with self.transaction() as db:
            old = db.execute("SELECT id FROM stories WHERE name = ?", (name,)).fetchone()
            if old and not story.get("replace"):
                raise UsageError(f"a story named {name!r} already exists; pass --name NEW, or --force to replace it")
            if old:
                db.execute("DELETE FROM stories WHERE id = ?", old)
            story_id = db.execute(
                "INSERT INTO stories (name, model_path, settings, created, updated) VALUES (?, ?, ?, ?, ?)",
                (name, story.get("model_path"), json.dumps(story.get("settings") or {}), story.get("created") or now,
                 now),
            ).lastrowid  # fmt: skip
            ids: dict[int, int] = {}
            for seq, t in enumerate(turns):
                ids[t.id] = db.execute(
                    "INSERT INTO turns (story_id, seq, author, text, created, parent) VALUES (?, ?, ?, ?, ?, ?)",
                    (story_id, seq, t.author, t.text, t.created or now, None if t.parent is None else ids[t.parent]),
                ).lastrowid
            db.execute("UPDATE stories SET head = ?, tip = ? WHERE id = ?", (ids.get(head), ids.get(tip), story_id))
            draft = story.get("draft")
            if draft is not None:
                db.execute(
                    "INSERT INTO drafts (story_id, author, text, updated, owner) VALUES (?, ?, ?, ?, '')",
                    (story_id, draft.author, draft.text, now),
                )
        return ids

    def load_adaptation(self, story_id: int) -> tuple[str, int, int, bytes] | None:
        """(base fingerprint, since, after, snapshot bytes) of the story's adapted weights."""
        with self._lock:
            return self.db.execute(
                "SELECT base, since, after, data FROM adaptations WHERE story_id = ?", (story_id,)
            ).fetchone()

    def save_adaptation(self, story_id: int, base: str, since: int, after: int, data: bytes) -> None:
        """Keep the story's adapted weights (a cache: they can be re-learned from the text)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO adaptations (story_id, base, since, after, data) VALUES (?, ?, ?, ?, ?)",
                (story_id, base, since, after, data),
            )

    def save_draft(self, story_id: int, author: str, text: str, owner: str = "") -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO drafts (story_id, author, text, updated, owner) VALUES (?, ?, ?, ?, ?)",
                (story_id, author, text, time.time(), owner),
            )

    def recover_draft(self, story_id: int) -> Turn | None:
        """Turn an abandoned draft into a turn, atomically: of two windows opening the story at
        once, one recovers it and the other finds it gone."""
        with self.transaction() as db:
            row = db.execute("SELECT author, text FROM drafts WHERE story_id = ?", (story_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM drafts WHERE story_id = ?", (story_id,))
            if not row[1]:
                return None
            (revision,) = db.execute("SELECT revision FROM stories WHERE id = ?", (story_id,)).fetchone()
            turn = Turn(row[0], row[1], created=time.time())
            self._insert(db, story_id, turn)
            self._bump(db, story_id, revision)
            return turn

    def drop_draft(self, story_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM drafts WHERE story_id = ?", (story_id,))

    def integrity_check(self) -> str:
        with self._lock:
            return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    @staticmethod
    def _check(db, story_id: int, revision: int) -> None:
        row = db.execute("SELECT revision FROM stories WHERE id = ?", (story_id,)).fetchone()
        if row is None:
            raise StoryChanged("the story was deleted by another window")
        if row[0] != revision:
            raise StoryChanged("the story was changed by another window")

    @staticmethod
    def _bump(db, story_id: int, revision: int) -> int:
        db.execute("UPDATE stories SET revision = ?, updated = ? WHERE id = ?", (revision + 1, time.time(), story_id))
        return revision + 1


PATH = """
WITH RECURSIVE path(id, depth) AS (
    SELECT head, 0 FROM stories WHERE id = ? AND head IS NOT NULL
    UNION ALL SELECT t.parent, path.depth + 1 FROM turns t JOIN path ON t.id = path.id WHERE t.parent IS NOT NULL
)
SELECT {cols} FROM path JOIN turns t ON t.id = path.id ORDER BY path.depth DESC
"""  # the turns from the first to the story's head


def _json(s: str) -> dict:
    try:
        d = json.loads(s)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _private_dir(path: Path) -> None:
    """Create the data dir owner-only (0700); an existing dir is tightened, not loosened."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077 and path == home():
        os.chmod(path, 0o700)


def tree_lines(rows: list[tuple], current: set[int]) -> list[str]:
    """`Store.tree` rows as text, depth-first, oldest branch first: turn id, author, length, the version (k/n)
    of a turn that has others beside it, its first chars; a branch is indented under the turn it leaves; `*`
    marks the turns of the story's path."""
    kids: dict[int | None, list[tuple]] = {}
    for row in rows:
        kids.setdefault(row[1], []).append(row)
    out = [f"  {'turn':>5}  {'author':<6}  {'chars':>6}  text"]
    stack = [(row, 0) for row in reversed(kids.get(None, []))]
    while stack:
        row, indent = stack.pop()
        tid, parent, author, start, length = row
        siblings = kids[parent]
        version = f"[{siblings.index(row) + 1}/{len(siblings)}] " if len(siblings) > 1 else ""
        mark = "*" if tid in current else " "
        out.append(f"{mark} {tid:>5}  {author:<6}  {length:>6,}  {'  ' * indent}{version}{start!r}")
        children = kids.get(tid, [])
        stack.extend((child, indent + (len(children) > 1)) for child in reversed(children))
    return out


def render(name: str, turns: list[Turn], fmt: str = "txt") -> str:
    """A story as plain text, or as markdown with the person's parts in bold."""
    if fmt == "txt":
        return "".join(t.text for t in turns)
    if fmt != "md":
        raise UsageError(f"unknown format {fmt!r}; use txt or md")
    out = [f"# {_md_escape(name)}\n\n"]
    runs: list[list] = []  # consecutive turns by one author, as one run
    for t in turns:
        if runs and runs[-1][0] == t.author:
            runs[-1][1] += t.text
        else:
            runs.append([t.author, t.text])
    for author, text in runs:
        lines = _md_escape(text, out[-1].endswith("\n")).split("\n")
        if author == PERSON:  # bold per line (it cannot span a blank line), spaces outside the tags
            lines = [_STRONG.sub(r"\1<strong>\2</strong>\3", line) if line.strip() else line for line in lines]
        out.append("\n".join(lines))
    return "".join(out).rstrip("\n") + "\n"


_STRONG = re.compile(r"^((?:&#32;|\s)*)(.*?)(\s*)$")  # spaces (or their entities) stay outside the tags


def _md_escape(text: str, at_line_start: bool = True) -> str:
    """Backslash-escape what markdown would read as syntax: inline markers anywhere, and at the
    start of a line block markers (headings, quotes, lists) and indentation (a code block)."""
    lines = re.sub(r"([\\`*_\[\]<>|~&=])", r"\\\1", text).split("\n")
    for i, line in enumerate(lines):
        if i or at_line_start:
            line = re.sub(r"^[ \t]+", lambda m: "&#32;" * len(m.group(0).expandtabs(4)), line)
            line = re.sub(r"^([#>+-])", r"\\\1", line)
            lines[i] = re.sub(r"^(\d+)([.)])", r"\1\\\2", line)
    return "\n".join(lines)

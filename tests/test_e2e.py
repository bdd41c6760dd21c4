"""The real `charterm` app in a real terminal (tmux): write, quit, reopen, kill -9, Esc, resize, colours.

Each test runs its own tmux server (`tmux -L <unique socket>`) and kills only that server.
"""

import fcntl
import itertools
import os
import re
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli, stored_turns

from charterm.story.session import WORD_SLACK

CHARTERM = Path(sys.executable).parent / "charterm"
WINCH_GATE = Path(__file__).with_name("winch_gate.py")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (it drives the full-screen app)"),
    pytest.mark.skipif(not CHARTERM.exists(), reason=f"no console script at {CHARTERM} (pip install -e .)"),
]
LOAD_TIMEOUT = 40.0  # starting python, importing torch and textual, loading the model: slow on a busy machine
_ids = itertools.count()

SGR = re.compile(r"\x1b\[([0-9;:]*)m")
OTHER_ESC = re.compile(r"\x1b(\[[0-9;?:]*[A-Za-ln-z@`]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")
DECORATION = re.compile("[\u2500-\u259f]")  # box drawing and block elements: borders and scrollbars


def squash(text: str) -> str:
    """Text without any whitespace: screen lines wrap where the story has spaces (or nothing)."""
    return re.sub(r"\s+", "", text)


NOTICE_BORDER = "\u258c"  # a notice's left border (charterm.tcss: border-left outer)


def story_lines(screen: str) -> list[str]:
    """The story pane's lines: below the title, above status/prompt/footer, left of the side pane."""
    lines = screen.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for line in lines[1:-3]:
        if line.startswith(NOTICE_BORDER):  # the notices' rows, above the status line: not the story
            break
        line = line.split("\u258f", 1)[0]  # the side pane's left border
        out.append(DECORATION.sub(" ", line))
    return out


def shown_story(screen: str) -> str:
    return squash("".join(story_lines(screen)))


def status_line(screen: str) -> str:
    lines = screen.rstrip("\n").split("\n")
    return lines[-3] if len(lines) >= 3 else ""


TITLE = re.compile(r"^ charterm  story: ")
FOOTER = "^q Quit"
SIDE_BORDER = "\u258f"


def drawn_whole(screen: str, cols: int, lines: int) -> str | None:
    """Why `screen` is not the whole app drawn at cols x lines (None when it is): the title on the first
    row and only there, the footer on the last row and only there, the side pane's border in one column."""
    rows = screen.rstrip("\n").split("\n") if screen.strip() else []
    rows += [""] * (lines - len(rows))
    if len(rows) != lines or any(len(row) > cols for row in rows):
        return f"not {cols}x{lines}"
    if not TITLE.match(rows[0]):
        return "no title on the first row"
    if sum(bool(TITLE.match(row)) for row in rows) != 1 or sum(FOOTER in row for row in rows) != 1:
        return "the title or the footer is drawn twice"
    if FOOTER not in rows[-1]:
        return "the footer is not on the last row"
    borders = {row.index(SIDE_BORDER) for row in rows[1:-3] if SIDE_BORDER in row}
    if len(borders) > 1:
        return f"the side pane's border is in columns {sorted(borders)}"
    return None


class Term:
    """One tmux server with one session `s` running `charterm` (relaunched as needed)."""

    def __init__(self, tmp_path: Path, model: Path):
        self.dir = tmp_path
        self.home = tmp_path / "home"
        self.model = model
        self.sock = f"charterm-e2e-{os.getpid()}-{next(_ids)}"
        self.runs = 0
        self.pids: list[int] = []
        self.socket_path = ""

    def tmux(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(
            ["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True, text=True, timeout=15
        )
        if check and r.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def launch(self, *args: str, model: bool = True, size=(80, 24), env: dict | None = None, gate=False) -> None:
        """Start `charterm ARGS` in the session (replacing whatever ran there before); `gate`: behind
        tests/winch_gate.py (then `pid` is the gate's; see `hold_winch`)."""
        self.runs += 1
        n = self.runs
        base = {"TERM": "xterm-256color", "CHARTERM_HOME": str(self.home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        env = {**base, **({"WINCH_GATE_STATE": str(self.dir / f"gate{n}")} if gate else {}), **(env or {})}
        argv = [str(CHARTERM), *(["--model", str(self.model)] if model else []), *args]
        argv = [sys.executable, str(WINCH_GATE), *argv] if gate else argv
        script = self.dir / f"run{n}.sh"
        script.write_text(
            # pytest exports COLUMNS/LINES; Textual would take them as the terminal's size and ignore resizes
            "unset COLORTERM NO_COLOR TEXTUAL_COLOR_SYSTEM CHARTERM_DEBUG FORCE_COLOR COLUMNS LINES\n"
            + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
            + "clear\n"
            + f'sh -c \'echo $$ > "$0"; exec "$@"\' {shlex.quote(str(self.pidfile(n)))} {shlex.join(argv)}\n'
            + f"code=$?; echo $code > {shlex.quote(str(self.dir / f'exit{n}'))}\n"
            + f'printf "\\033[?1049l\\033c"; echo "EXITED-{n} $code"\n'
            + "exec sleep 3600\n"
        )
        if n > 1:
            self.tmux("kill-session", "-t", "s", check=False)
        self.tmux("new-session", "-d", "-s", "s", "-x", str(size[0]), "-y", str(size[1]), f"sh {script}")
        self.socket_path = self.socket_path or self.tmux("display-message", "-p", "#{socket_path}").strip()
        pid = self.wait_for(lambda: self._read_pid(n), 10, "the pid file")
        self.pids.append(pid)

    def pidfile(self, n: int) -> Path:
        return self.dir / f"pid{n}"

    def _read_pid(self, n: int) -> int | None:
        try:
            return int(self.pidfile(n).read_text())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def pid(self) -> int:
        return self.pids[-1]

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split(") ", 1)[1][0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def capture(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "s")

    def stable_capture(self, timeout: float = 3.0) -> str:
        """A capture equal to the one right after it: not torn between two frames the app is drawing."""
        deadline = time.monotonic() + timeout
        a = self.capture()
        while True:
            b = self.capture()
            if a == b or time.monotonic() > deadline:
                return b
            a = b

    def _gate(self, sig: int, state: str) -> None:
        path = self.dir / f"gate{self.runs}"
        path.unlink(missing_ok=True)
        os.kill(self.pid, sig)
        self.wait_for(lambda: path.exists() and path.read_text() == state, 5, f"the gate {state}")

    def hold_winch(self) -> None:
        """From now on the app hears of no resize (launched with `gate`)."""
        self._gate(signal.SIGUSR1, "held")

    def free_winch(self) -> None:
        """The app hears of the resizes since `hold_winch`, once: it reads the size its tty has now."""
        self._gate(signal.SIGUSR2, "free")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "s", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "s", "-l", text)
        self.keys("Enter")

    def wait_for(self, what: str | Callable, timeout: float, desc: str | None = None):
        """Poll every 0.1 s until `what` (text on the screen, or a predicate) holds; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = (what in self.capture()) if isinstance(what, str) else what()
            if value:
                return value
            if time.monotonic() > deadline:
                screen = self.capture()
                size = self.tmux("display-message", "-p", "-t", "s", "#{window_width}x#{window_height}", check=False)
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {desc or what!r} (window {size.strip()}, "
                    f"charterm {'running' if self.alive() else 'gone'}); screen:\n{screen}"
                )
            time.sleep(0.1)

    def wait_screen(self, pred: Callable[[str], object], timeout: float, desc: str) -> str:
        """Poll until pred(screen) holds; returns that screen."""

        def check():
            screen = self.capture()
            return screen if pred(screen) else None

        return self.wait_for(check, timeout, desc)

    def wait_ready(self) -> str:
        """Wait until the model is loaded: the title names the story and the status counts turns."""
        return self.wait_screen(
            lambda s: "story: " in s and re.search(r"\d+ turns", status_line(s)), LOAD_TIMEOUT, "the app to load"
        )

    def wait_status(self, pattern: str, timeout: float = 30.0) -> str:
        return self.wait_for(lambda: re.search(pattern, status_line(self.capture())), timeout, f"status /{pattern}/")

    def set_chars(self, n: int) -> None:
        """`/chars N`, confirmed by the settings panel (the status line can be overwritten at once)."""
        self.type(f"/chars {n}")
        self.wait_screen(lambda s: re.search(rf"\bchars +{n}\b", s), 10, f"chars {n} in the settings")

    def quit(self, timeout: float = 20.0) -> None:
        """Ctrl+Q, then the pane shows the marker with exit status 0."""
        self.keys("C-q")
        n = self.runs
        self.wait_for(f"EXITED-{n} ", timeout)
        assert f"EXITED-{n} 0" in self.capture(), self.capture()
        assert (self.dir / f"exit{n}").read_text().strip() == "0"

    def close(self) -> None:
        """Kill a charterm this helper started that is still running (no exit file yet), then the tmux server."""
        for n, pid in enumerate(self.pids, start=1):
            if (self.dir / f"exit{n}").exists():
                continue  # it ended: the pid may belong to someone else by now
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"charterm" in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        self.tmux("kill-server", check=False)
        if self.socket_path.endswith(self.sock):  # tmux 3.3 leaves its socket file behind
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def term(tmp_path, tiny_model):
    t = Term(tmp_path, tiny_model)
    yield t
    t.close()


def story_of(home: Path, name: str = "untitled") -> str:
    r = run_cli("stories", "show", name, env={"CHARTERM_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    return r.stdout


def start_streaming(term: Term) -> None:
    """Ask for a very long turn and wait until the model is writing."""
    term.set_chars(100000)
    term.type("Anna")
    term.wait_status(r"writing\.\.\. [\d,]+ chars", 20)


def test_write_quit_and_reopen_the_last_story(term):
    term.launch()
    screen = term.wait_ready()
    assert "story: untitled" in screen
    term.set_chars(120)  # the whole story fits on the screen, whatever the model's line lengths
    term.type("Anna")
    screen = term.wait_screen(lambda s: "2 turns" in status_line(s), 30, "2 turns")
    shown = shown_story(screen)
    assert shown.startswith("Anna") and len(shown) > len("Anna") + 50  # the model's continuation
    term.quit()

    text = story_of(term.home)
    assert text.startswith("Anna")
    assert shown == squash(text)  # the whole (short) story was on screen

    term.launch(model=False)  # no --story: the last one; no --model: the story's own
    screen = term.wait_ready()
    assert "story: untitled" in screen and "2 turns" in status_line(screen)
    screen = term.wait_screen(lambda s: shown_story(s) == squash(text), 10, "the story, reopened")
    first = text.splitlines()[0]
    assert squash(first) in shown_story(screen)
    term.quit()


def workers_of(home: Path) -> list[int]:
    """The pids of live model workers serving this CHARTERM_HOME."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if b"charterm.worker" in cmd and f"CHARTERM_HOME={home}".encode() in env and state != "Z":
            pids.append(int(proc.name))
    return pids


def stream_then_look(term: Term) -> str:
    """Two turns, then a long one being written; what was on screen a second before now."""
    term.set_chars(30)
    term.type("Levin")
    term.wait_status(r"\b2 turns", 30)
    start_streaming(term)  # turn 3 ("Anna") is committed, turn 4 is being written
    started = time.monotonic()
    time.sleep(0.5)
    reference = shown_story(term.stable_capture())
    ref_time = time.monotonic()
    later = term.wait_for(
        lambda: time.monotonic() - ref_time > 1.0 and time.monotonic() - started > 1.5 and shown_story(term.capture()),
        10,
    )
    assert len(reference) > 50 and later != reference, "the text stopped streaming"
    assert "writing" in status_line(term.capture())
    return reference


def test_kill_9_of_the_app_while_writing_the_worker_commits_what_was_shown(term):
    term.launch()
    term.wait_ready()
    reference = stream_then_look(term)
    [worker] = workers_of(term.home)
    os.kill(term.pid, signal.SIGKILL)
    term.wait_for(lambda: (term.dir / "exit1").exists(), 10, "the shell to see the kill")
    assert (term.dir / "exit1").read_text().strip() == "137"
    term.wait_for(lambda: not workers_of(term.home), 10, "the worker to commit and exit")
    turns, drafts = stored_turns(term.home)
    assert [a for a, _ in turns] == ["person", "model", "person", "model"] and drafts == []
    assert turns[0][1] == "Levin" and 30 <= len(turns[1][1]) <= 30 + WORD_SLACK and turns[2][1] == "Anna"
    committed = "".join(t for _, t in turns)
    assert reference in squash(committed)

    term.launch()
    screen = term.wait_ready()
    assert "4 turns" in status_line(screen) and "recovered" not in screen
    term.quit()
    assert squash(story_of(term.home)) == squash(committed)


def test_kill_9_of_the_worker_while_writing_the_app_restarts_it(term):
    term.launch()
    term.wait_ready()
    reference = stream_then_look(term)
    [worker] = workers_of(term.home)
    os.kill(worker, signal.SIGKILL)
    screen = term.wait_screen(lambda s: "restarting it" in s, 15, "the app to say the worker stopped")
    assert "signal9);restartingit" in squash(screen)  # the toast: "the model worker stopped (killed by ...)"
    screen = term.wait_screen(lambda s: "recovered" in s, LOAD_TIMEOUT, "the new worker to recover the draft")
    assert term.alive() and workers_of(term.home) not in ([], [worker])
    turns, drafts = stored_turns(term.home)
    assert [a for a, _ in turns] == ["person", "model", "person", "model"] and drafts == []
    assert reference in squash("".join(t for _, t in turns))
    term.wait_screen(lambda s: re.search(r"\b4 turns", status_line(s)), 15, "4 turns")
    term.keys("Escape")
    term.set_chars(20)
    term.type("Kitty")  # writing goes on with the new worker
    term.wait_status(r"\b6 turns", 30)
    term.quit()
    text = squash(story_of(term.home))
    assert reference in text and "Kitty" in text


def test_escape_stops_the_model(term):
    term.launch()
    term.wait_ready()
    start_streaming(term)
    time.sleep(0.3)
    term.keys("Escape")
    sent = time.monotonic()
    term.wait_for(lambda: "writing" not in status_line(term.capture()), 5, "the status to stop saying writing")
    assert time.monotonic() - sent < 1.5  # about a second, with room for a busy machine
    term.wait_for(lambda: re.search(r"\b2 turns", status_line(term.capture())), 10, "the stopped turn saved")
    a = term.capture()
    time.sleep(0.5)
    b = term.capture()
    assert a == b  # nothing more is written
    term.quit()
    text = story_of(term.home)
    assert text.startswith("Anna") and 1 < len(text) - 4 < 100_000


def test_resize_mid_story(term):
    term.launch()
    term.wait_ready()
    term.set_chars(120)
    term.type("Anna")
    term.wait_status(r"\b2 turns", 30)
    term.type("Levin")  # resize while the model writes (or just after)
    for width, height in ((100, 30), (80, 24)):
        term.tmux("resize-window", "-t", "s", "-x", str(width), "-y", str(height))
        term.wait_for(lambda h=height: len(term.capture().rstrip("\n").split("\n")) == h, 10, f"{height} rows")
    # tmux resizes its own screen at once but tells the app (at most one size per 250 ms) later, and a busy
    # app takes a while to follow: until then its frames are drawn at the size it was told before
    screen = term.wait_screen(
        lambda s: "4 turns" in status_line(s) and drawn_whole(s, 80, 24) is None, 30, "4 turns, the app at 80x24"
    )
    assert term.alive()
    assert "story: untitled" in screen
    text = story_of(term.home)
    assert squash(text).endswith(shown_story(screen)) and len(shown_story(screen)) > 100
    term.tmux("resize-window", "-t", "s", "-x", "100", "-y", "30")
    screen = term.wait_screen(
        lambda s: drawn_whole(s, 100, 30) is None and shown_story(s) == squash(text), 10, "the story at 100x30"
    )
    assert term.alive()
    term.quit()


def pane_size(term: Term) -> tuple[int, int]:
    """The size the pane's tty tells the app (tmux sends its own size there later, at most once per 250 ms)."""
    tty = term.tmux("display-message", "-p", "-t", "s", "#{pane_tty}").strip()
    fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY)
    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))[:2]
    finally:
        os.close(fd)
    return cols, rows


def test_a_resize_and_back_the_app_could_not_follow_redraws_the_whole_screen(term):
    """tmux drops lines as the window shrinks and keeps them lost as it grows back; the app, hearing of the
    two sizes only once it is back (a busy machine, a slow link), reads the size it is laid out for and
    must still repaint it all."""
    term.launch(size=(100, 30), gate=True)
    term.wait_ready()
    start_streaming(term)  # and the model writes on
    term.hold_winch()
    for size in ((80, 24), (100, 30)):
        term.tmux("resize-window", "-t", "s", "-x", str(size[0]), "-y", str(size[1]))
        term.wait_for(lambda size=size: pane_size(term) == size, 5, f"the pane's tty at {size}")
    assert drawn_whole(term.capture(), 100, 30) is not None  # the resizes damaged the screen
    term.free_winch()
    term.wait_screen(lambda s: drawn_whole(s, 100, 30) is None, 10, "the whole app at 100x30")
    term.keys("Escape")
    term.wait_status(r"\b2 turns", 20)
    screen = term.wait_screen(lambda s: drawn_whole(s, 100, 30) is None, 10, "the whole app after Esc")
    assert squash(story_of(term.home)).endswith(shown_story(screen)) and len(shown_story(screen)) > 100
    term.quit()


def bold_map(line: str) -> list[tuple[str, bool]]:
    """The characters of one `capture-pane -e` line, each with whether it is drawn bold."""
    line = OTHER_ESC.sub("", line)
    out, bold, pos = [], False, 0
    for m in SGR.finditer(line):
        out += [(c, bold) for c in line[pos : m.start()]]
        pos = m.end()
        params = [p for p in re.split("[;:]", m.group(1))] or [""]
        i = 0
        while i < len(params):
            p = params[i]
            if p in ("", "0"):
                bold = False
            elif p == "1":
                bold = True
            elif p in ("21", "22"):
                bold = False
            elif p in ("38", "48", "58"):  # extended colour: skip its arguments
                i += 2 if params[i + 1 : i + 2] == ["5"] else 4
            i += 1
    out += [(c, bold) for c in line[pos:]]
    return out


def test_16_colours_and_no_color(term):
    term.launch(env={"TERM": "xterm"})
    term.wait_ready()
    term.set_chars(120)
    term.type("Anna")
    screen = term.wait_screen(lambda s: "2 turns" in status_line(s), 30, "2 turns")
    assert shown_story(screen).startswith("Anna") and len(shown_story(screen)) > 60
    coloured = term.capture(escapes=True)
    assert re.search(r"\x1b\[(?:3[0-7]|9[0-7]|4[0-7]|10[0-7])m", coloured), "no colours at all with TERM=xterm"
    assert not re.search(r"\x1b\[[0-9;]*[34]8;[25];", coloured), "more than 16 colours with TERM=xterm"
    term.quit()
    text = story_of(term.home)

    term.launch(env={"NO_COLOR": "1"})
    term.wait_ready()
    term.wait_screen(lambda s: shown_story(s) == squash(text), 10, "the story, reopened")
    cells: list[tuple[str, bool]] = []
    for line in story_lines(term.capture(escapes=True)):
        cells += [(c, b) for c, b in bold_map(line) if not c.isspace() and not DECORATION.match(c)]
    shown = "".join(c for c, _ in cells)
    assert shown == squash(text) and shown.startswith("Anna")
    assert all(b for _, b in cells[:4]), "the person's text is not bold without colour"
    assert not any(b for _, b in cells[4:]), "the model's text is bold"
    term.quit()


def tree_of(home: Path) -> tuple[list[tuple[int, int | None, str, str]], int | None]:
    """Every turn as (id, parent, author, text), and the story's head, as the database has them."""
    db = sqlite3.connect(home / "stories.db")
    try:
        turns = db.execute("SELECT id, parent, author, text FROM turns ORDER BY id").fetchall()
        head = db.execute("SELECT head FROM stories").fetchone()[0]
    finally:
        db.close()
    return turns, head


def test_versions_and_a_fork_survive_quit_and_reopen(term):
    term.launch()
    term.wait_ready()
    term.set_chars(30)
    term.type("Anna")
    term.wait_status(r"\b2 turns")
    term.keys("C-r")
    term.wait_status(r"\b2 turns, .*, version 2/2$")
    term.keys("C-r")
    term.wait_status(r"\b2 turns, .*, version 3/3$")
    term.keys("M-Left")
    term.wait_status(r"version 2/3$")
    turns, head = tree_of(term.home)
    anna, first, second, third = turns
    assert head == second[0] and [t[1] for t in turns] == [None, anna[0], anna[0], anna[0]]
    term.wait_screen(lambda s: shown_story(s) == squash("Anna" + second[3]), 10, "the second version")
    term.type(" Levin")
    term.wait_status(r"\b4 turns")

    term.keys("C-f")  # the fork list: the story's last turn is highlighted; two rows up is the second version
    term.wait_for("(before the first turn)", 10)
    term.keys("Up", "Up", "Enter")
    term.wait_status(r"\b2 turns, .*, version 2/3$")
    assert tree_of(term.home)[1] == second[0]
    term.type(" Kitty")  # a branch beside " Levin"
    term.wait_status(r"\b4 turns")
    term.keys("C-r")
    term.wait_status(r"\b4 turns, .*, version 2/2$")
    before, head = tree_of(term.home)
    screen = term.stable_capture()
    term.quit()

    levin, kitty = (t for t in before if t[1] == second[0])
    assert (levin[3], kitty[3]) == (" Levin", " Kitty") and len(before) == 9
    assert [t[0] for t in before if t[1] == kitty[0]][-1] == head  # the retried answer to " Kitty" is shown
    term.launch(model=False)
    reopened = term.wait_ready()
    assert tree_of(term.home) == (before, head)
    assert re.search(r"\b4 turns, .*, version 2/2$", status_line(reopened))
    assert shown_story(term.wait_screen(lambda s: shown_story(s) == shown_story(screen), 10, "the same story"))
    term.keys("C-f")
    rows = term.wait_screen(lambda s: "(before the first turn)" in s, 10, "the fork list")
    term.keys("Escape")
    term.quit()
    listed = run_cli("stories", "show", "untitled", "--tree", env={"CHARTERM_HOME": str(term.home)})
    assert listed.returncode == 0, listed.stderr
    path = {tid for tid, _ in path_to(before, head)}
    for tid, _, author, _ in before:  # the fork list and the CLI list the same turns, marking the same path
        mark = "\\*" if tid in path else " "
        assert re.search(rf"^{mark} +{tid}  {author} ", listed.stdout, re.M), listed.stdout
        assert re.search(rf"{mark} +{tid}  {author} ", rows), rows


def path_to(turns: list[tuple], head: int) -> list[tuple[int, str]]:
    """(id, text) of the turns from the story's start to `head`."""
    by_id = {t[0]: t for t in turns}
    path = []
    while head is not None:
        path.insert(0, (head, by_id[head][3]))
        head = by_id[head][1]
    return path

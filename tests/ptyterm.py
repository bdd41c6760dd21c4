"""A terminal for tests (no tests here): the real `charterm` on a pty of its own, its output fed to a `pyte`
screen (a terminal emulator in pure Python).

The test is the terminal, so it decides the order of everything the app cannot see: when the screen changes
size, when the app is told (TIOCSWINSZ, which sends it SIGWINCH; tests/winch_gate.py can hold that back until
a burst is over), and when the bytes the app wrote reach the screen (`hold` keeps them in flight, as a slow
link does). Like many
terminals, pyte drops the top lines when it gets shorter and the right columns when it gets narrower.
"""

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte

WINCH_GATE = Path(__file__).with_name("winch_gate.py")


class CountingScreen(pyte.Screen):
    """A pyte screen that counts the times a line feed on its last line scrolled it."""

    scrolls = 0

    def index(self) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == bottom:
            self.scrolls += 1
        super().index()


class PtyTerminal:
    def __init__(self, home: Path, model: Path, size: tuple[int, int]) -> None:
        self.screen = CountingScreen(*size)
        self.stream = pyte.ByteStream(self.screen)
        self.held: list[bytes] = []
        self.hold = False
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARTERM_", "TEXTUAL", "PYTEST"))}
        for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "COLORTERM", "TMUX"):
            env.pop(name, None)
        env.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8", CHARTERM_HOME=str(home))
        argv = [sys.executable, str(WINCH_GATE), sys.executable, "-m", "charterm", "--model", str(model)]
        self.pid, self.fd = pty.fork()  # self.pid: the gate's, whose child is the app
        if self.pid == 0:  # the child: exec at once
            os.execvpe(argv[0], argv, env)
        self.tell(*size)
        self.exit_code: int | None = None

    # --- the terminal -------------------------------------------------------------------------

    def tell(self, cols: int, lines: int) -> None:
        """Set the pty's size: the kernel sends SIGWINCH to its foreground group (the app, unless held)."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, cols, 0, 0))

    def resize_screen(self, cols: int, lines: int) -> None:
        """The emulator's own size (what the app is told is up to the test)."""
        for y in range(self.screen.lines):  # pyte shifts up only the lines it holds: make it hold them all
            self.screen.buffer[y]
        self.screen.resize(lines, cols)

    def resize(self, cols: int, lines: int) -> None:
        """Resize the screen and tell the app."""
        self.resize_screen(cols, lines)
        self.tell(cols, lines)

    def _gate(self, sig: int, gate_in_front: bool) -> None:
        os.kill(self.pid, sig)
        deadline = time.monotonic() + 5
        while (os.tcgetpgrp(self.fd) == self.pid) != gate_in_front:
            assert time.monotonic() < deadline, "the gate did not switch the terminal's foreground group"
            time.sleep(0.001)

    def hold_winch(self) -> None:
        """From now on the app hears of no resize (see tests/winch_gate.py)."""
        self._gate(signal.SIGUSR1, True)

    def free_winch(self) -> None:
        """The app hears of the resizes since `hold_winch`, once: it reads the size the pty has now."""
        self._gate(signal.SIGUSR2, False)

    def burst(self, *sizes: tuple[int, int]) -> None:
        """The screen goes through `sizes` faster than the app can follow: it hears of them once, at the end."""
        self.hold_winch()
        for size in sizes:
            self.resize(*size)
        self.free_winch()

    def release(self) -> None:
        """Let the bytes held in flight reach the screen (at its size now)."""
        for data in self.held:
            self.stream.feed(data)
        self.held.clear()
        self.hold = False

    def pump(self, seconds: float = 0.0) -> None:
        """Read what the app writes for `seconds` (at least once), feeding it to the screen unless held."""
        end = time.monotonic() + seconds
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, end - time.monotonic()))
            if ready:
                try:
                    data = os.read(self.fd, 1 << 16)
                except OSError:  # the app is gone
                    data = b""
                if not data:
                    return
                (self.held.append if self.hold else self.stream.feed)(data)
            elif time.monotonic() >= end:
                return

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def type(self, text: str) -> None:
        self.send(text + "\r")

    # --- what it shows ------------------------------------------------------------------------

    def text(self) -> str:
        """The screen as `tmux capture-pane -p` gives it: a line per row, trailing spaces dropped."""
        return "\n".join(line.rstrip() for line in self.screen.display) + "\n"

    def wait_for(self, predicate: Callable[[str], object], timeout: float, what: str) -> str:
        """Pump until predicate(screen text) holds; return that text."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump(0.05)
            text = self.text()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                size = f"{self.screen.columns}x{self.screen.lines}"
                raise AssertionError(f"timed out after {timeout} s waiting for {what} (screen {size}):\n{text}")

    def close(self, timeout: float = 20.0) -> None:
        """Ctrl+Q and wait for the app to end (killed if it does not)."""
        if self.exit_code is not None:
            return
        try:
            self.send("\x11")
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                break
        else:
            os.kill(self.pid, signal.SIGKILL)
            self.exit_code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        os.close(self.fd)

"""The app's end of the model worker: start it, send requests, hand its events to a callback.

`WorkerClient` starts `python -m charterm.worker` in its own session (a terminal's Ctrl+C or
SIGHUP never reaches it; it exits when its stdin closes, i.e. when the app is gone) and reads
its stdout on a thread. With `in_thread=True` the same worker code serves over pipes on a
thread of this process instead (the tests' fast path; the app always uses a process).
Imports neither torch nor textual.
"""

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable

from charterm.worker import protocol as p

STDERR_LINES = 20
OPEN_ID = 1  # the id of the Open request `start_worker` sends first


class WorkerClient:
    """`start()` the worker and `send` requests at once; `listen(on_event, on_exit)` when ready
    for its events (until then they wait in the pipe, so the app can start the worker, and the
    worker load the model, while the app is still importing Textual). `on_event(event)` runs on
    a reader thread for every event after `Hello`; `on_exit(code, why)` runs once when the
    worker's stdout closes (`why`: its last stderr line, or what was wrong with its first line)."""

    def __init__(
        self,
        *,
        in_thread: bool = False,
        env: dict | None = None,
        argv: list[str] | None = None,
    ):
        self.on_event: Callable[[p.Message], None] = lambda event: None
        self.on_exit: Callable[[int | None, str], None] = lambda code, why: None
        self.in_thread = in_thread
        self.argv = argv or [sys.executable, "-m", "charterm.worker"]
        self.env = {**os.environ, **(env or {})}
        self.pid: int | None = None
        self.returncode: int | None = None
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def start(self) -> None:
        if self.in_thread:
            self._start_thread()
        else:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
            self.pid = self._proc.pid
            self._to, self._from = self._proc.stdin, self._proc.stdout
            threading.Thread(target=self._read_stderr, name="worker-stderr", daemon=True).start()

    def listen(self, on_event: Callable[[p.Message], None], on_exit: Callable[[int | None, str], None]) -> None:
        self.on_event, self.on_exit = on_event, on_exit
        threading.Thread(target=self._read_events, name="worker-events", daemon=True).start()

    def _start_thread(self) -> None:
        from charterm.worker.server import Worker

        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        worker = Worker(os.fdopen(to_r, "rb"), os.fdopen(from_w, "wb"))

        def serve() -> None:
            try:
                self.returncode = worker.serve()
            finally:
                worker.outbox.out.close()

        self.pid = os.getpid()
        self._to, self._from = os.fdopen(to_w, "wb"), os.fdopen(from_r, "rb")
        self._thread = threading.Thread(target=serve, name="charterm-worker", daemon=True)
        self._thread.start()

    def send(self, cls: type[p.Message], **fields) -> int:
        """Send a request; returns its id. A worker that is gone is reported by `on_exit`."""
        with self._send_lock:
            msg = cls(id=next(self._ids), **fields)
            try:
                self._to.write(msg.to_line().encode())
                self._to.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            return msg.id

    def _read_events(self) -> None:
        why = ""
        first = True
        for line in self._from:
            try:
                msg = p.decode(line.decode("utf-8", "replace"))
            except p.ProtocolError as e:
                why = str(e)
                break
            if first:
                first = False
                if not isinstance(msg, p.Hello) or msg.protocol != p.PROTOCOL:
                    why = f"the model worker speaks protocol {getattr(msg, 'protocol', '?')}, not {p.PROTOCOL}"
                    break
                continue
            self.on_event(msg)
        if why:
            self.kill()
        code = self._wait()
        self._done.set()
        self.on_exit(code, why or (self._stderr[-1] if self._stderr else ""))

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _wait(self) -> int | None:
        if self._proc is not None:
            self.returncode = self._proc.wait()
        elif self._thread is not None:
            self._thread.join()
        return self.returncode

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to commit and leave; after `timeout` s, SIGTERM it, then SIGKILL."""
        self.send(p.Quit)
        with self._send_lock:
            try:
                self._to.close()
            except OSError:
                pass
        if self._done.wait(timeout) or self._proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._signal(sig)
            if self._done.wait(2.0):
                return

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass


def start_worker(story: str | None, model: str | None, precision: str = "int8", in_thread: bool = False):
    """Start a model worker and ask it to open the story; its events wait until `listen`."""
    client = WorkerClient(in_thread=in_thread)
    client.start()
    client.send(p.Open, story=story, model=model, precision=precision)
    return client

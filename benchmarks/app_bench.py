"""How fast the story app is as a person sees it: the real `charterm` command in tmux, read off the screen.

    python benchmarks/app_bench.py [--model PATH] [--chars 4000] [--rounds 3] [--data ../shared/data/anna.txt]

Each round starts fresh apps (`python -m charterm --model M`, a temp CHARTERM_HOME each, in a tmux
server of this script's own) and, on the same machine in the same run, measures:

chars/s      one turn of --chars chars (`/chars N`, `/seed S`, then Enter), from Enter until the status
             line shows the idle form `N turns, M chars` again; the chars are the growth of M.
             At 80x24 and at 100x30, against `charterm generate` with the same model and settings,
             timed from its first stdout byte to its last (so both exclude loading the model).
busy         the same 80x24 turn while PgUp/PgDn go in every 50 ms and a training job started from
             inside the app (`/train ...`) runs in the background; as a ratio to the idle figure.
first frame  from launch until the title line "charterm" shows; "ready" until the model card shows
             "params"; next to the time `python -c "import torch"` takes.
key echo     while the model writes, from `send-keys` of one char until the prompt line shows it;
             the same once the model has stopped ("idle": what tmux and the polling cost alone).
Esc          while the model writes, from `send-keys Escape` until the story area stops changing
             (the time of its last change, read every 5 ms, once it has been still for 1 s).
first char   from Enter until the story area shows the model's first char (read every 2 ms), on an
             empty prompt (nothing learned: the base model writes) and after a typed turn.
typed        at 80x24, turns as a person writes them: a --typed-char turn of the book typed into the
             prompt, then Enter, twice, the worker left to finish its work in between (its CPU time
             still for half a second); the second is timed: the model writes with what it learned of
             the first. Its chars/s from Enter to the end, and its stream from the first char to the
             last against `generate`.
tail         from the model's last char on screen until the status line shows the turn committed.

The app must keep: the title line first, the status line above the prompt line above the footer
(the bottom three rows), the status forms `writing... N chars, R chars/s (Esc stops)` and
`N turns, M chars`, "params" on the model card, "training epoch E/N" in the training pane, the side
pane 34 columns at the right, and the slash commands /chars, /seed, /topk, /temp, /train.
Textual holds a lone Escape for $ESCDELAY ms (default 100) before it is a key; the bench leaves
the environment as a person's shell has it, so the Esc figure includes that wait.
"""

import argparse
import itertools
import os
import re
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = [sys.executable, "-m", "charterm"]
IDLE = re.compile(r"(\d[\d,]*) turns, (\d[\d,]*) chars")
WRITING = re.compile(r"writing\.\.\. ([\d,]+) chars, ([\d,]+) chars/s")
TRAINING = re.compile(r"training epoch \d+/\d+")  # the training pane once steps come in
SIDE_WIDTH = 34  # the side pane's columns at the right (shown from 70 columns up)
NARROW = 70
ECHO_KEYS = "zqxjvkwzqx"
NAN = float("nan")
UNITS = {
    "app": (",.0f", "chars/s"),
    "busy": (",.0f", "chars/s"),
    "generate": (",.0f", "chars/s"),
    "stream": (",.0f", "chars/s"),
    "page": (".1f", "/s"),
}
KEYS = ("app 80x24", "app 100x30", "busy 80x24", "frame 80x24", "ready 80x24")
TYPED = ("app typed 80x24", "stream typed", "first typed", "tail typed", "first empty", "tail empty")
_ids = itertools.count()


# --- one app in tmux --------------------------------------------------------------------------------


class TmuxApp:
    """`charterm` in a tmux server of its own, W x H, with a temp CHARTERM_HOME."""

    def __init__(self, model: str, width: int, height: int) -> None:
        self.model, self.width, self.height = model, width, height
        self.tmux = ["tmux", "-L", f"app-bench-{os.getpid()}-{next(_ids)}"]
        self.home = tempfile.mkdtemp(prefix="charterm-bench-")
        self.pane_pid: int | None = None

    def run(self, *args: str, timeout: float = 10) -> str:
        return subprocess.run([*self.tmux, *args], capture_output=True, text=True, timeout=timeout).stdout

    def start(self) -> float:
        """Start the server with a placeholder, then launch the app; returns the launch time."""
        self.run("new-session", "-d", "-s", "b", "-x", str(self.width), "-y", str(self.height), "sleep 3600")
        self.run("set-option", "-t", "b", "remain-on-exit", "on")
        env = f"CHARTERM_HOME={shlex.quote(self.home)} TERM=xterm-256color"
        app = shlex.join([*APP, "--model", self.model])
        t0 = time.perf_counter()
        self.run("respawn-pane", "-k", "-t", "b", f"{env} exec {app}")
        self.pane_pid = int(self.run("display-message", "-p", "-t", "b", "#{pane_pid}").strip() or 0) or None
        return t0

    def screen(self) -> list[str]:
        lines = self.run("capture-pane", "-p", "-t", "b").split("\n")[: self.height]
        return lines + [""] * (self.height - len(lines))

    def status(self, lines: list[str] | None = None) -> str:
        return (lines or self.screen())[-3].strip()

    def prompt(self, lines: list[str] | None = None) -> str:
        return (lines or self.screen())[-2].strip()

    def story(self, lines: list[str]) -> list[str]:
        """The story area: between the title and the status line, left of the side pane."""
        cols = self.width - SIDE_WIDTH if self.width >= NARROW else self.width
        return [line[:cols] for line in lines[1:-3]]

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", "b", *keys)

    def type_line(self, text: str) -> None:
        self.send("-l", text)
        self.send("Enter")

    def wait(self, test, timeout: float, poll: float = 0.01) -> tuple[float, list[str]] | None:
        """Poll the screen until test(lines) is true; (time, lines), or None on timeout."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            lines = self.screen()
            now = time.perf_counter()
            if test(lines):
                return now, lines
            time.sleep(poll)
        return None

    def close(self) -> None:
        """Quit the app (it cancels its training job), then kill the server and anything left."""
        left = descendants(self.pane_pid) if self.pane_pid else []
        try:
            self.send("C-q")
            self.wait(lambda _: not pid_alive(self.pane_pid), timeout=8, poll=0.1)
        except (subprocess.SubprocessError, OSError):
            pass
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=10)
        for pid in [*left, *(descendants(self.pane_pid) if self.pane_pid else [])]:
            kill_pid(pid)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "TmuxApp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def descendants(pid: int) -> list[int]:
    """Pids below `pid` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_pid(pid: int) -> None:
    """SIGKILL `pid` if it is still one of charterm's processes (not a reused pid)."""
    try:
        if b"charterm" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, 9)
    except OSError:
        pass


# --- measurements in the app ------------------------------------------------------------------------


def launch(app: TmuxApp, timeout: float = 120) -> tuple[float, float]:
    """Seconds from launch to the first frame (title line) and to the model card ("params")."""
    t0 = app.start()
    frame = app.wait(lambda lines: lines[0].strip().startswith("charterm"), timeout)
    ready = app.wait(lambda lines: any("params" in line for line in lines), timeout)
    if ready is None:
        raise RuntimeError("the app did not show its model card:\n" + "\n".join(app.screen()))
    return (frame[0] - t0 if frame else NAN), ready[0] - t0


def idle_counts(app: TmuxApp, lines: list[str] | None = None, prompt_rows: int = 1) -> tuple[int, int] | None:
    """The story's counts on the idle status line (above a prompt of `prompt_rows` rows: a typed
    turn makes it taller), or None while the model writes."""
    lines = lines or app.screen()
    m = IDLE.search(lines[-2 - prompt_rows].strip())
    return (int(m[1].replace(",", "")), int(m[2].replace(",", ""))) if m else None


def command(app: TmuxApp, line: str, timeout: float = 30) -> None:
    """Type a slash command and wait until the app is idle again."""
    app.type_line(line)
    time.sleep(0.2)
    if app.wait(lambda lines: idle_counts(app, lines) is not None, timeout) is None:
        raise RuntimeError(f"{line!r}: the app did not come back to idle; status: {app.status()!r}")


def configure(app: TmuxApp, args) -> None:
    """The turn's settings, the same as generate's."""
    for line in (f"/chars {args.chars}", f"/seed {args.seed}", f"/topk {args.top_k}", f"/temp {args.temperature}"):
        command(app, line)


def turn_rate(app: TmuxApp, chars: int, timeout: float) -> float:
    """chars/s of one model turn, from Enter until the idle status line shows it finished."""
    return timed_turn(app, chars, timeout)["rate"]


def timed_turn(app: TmuxApp, chars: int, timeout: float, typed: str = "") -> dict[str, float]:
    """One model turn after Enter (on the prompt's `typed` text, or an empty one), read off the
    screen: rate (chars/s from Enter until the idle status line shows the turn's end), first (Enter
    to the model's first char in the story), stream (chars/s from its first char to its last),
    tail (its last char to the idle status line: the turn committed)."""
    lines = app.screen()
    before = next((c for rows in range(1, 12) if (c := idle_counts(app, lines, rows))), None)
    if before is None:
        raise RuntimeError("not idle before the turn:\n" + "\n".join(lines))
    shown = app.story(lines)
    t0 = time.perf_counter()
    app.send("Enter")
    first = changed = None
    while (now := time.perf_counter()) - t0 < timeout:
        lines = app.screen()
        now, after, area = time.perf_counter(), idle_counts(app, lines), app.story(lines)
        if area != shown:
            shown, changed = area, now
            if first is None and model_shown(area, typed):
                first = now
        if after is not None and after[0] >= before[0] + (2 if typed else 1):  # the person's turn, then the model's
            written = after[1] - before[1] - len(typed)
            first = first or changed or now
            stream = (written - 1) / max(1e-9, changed - first) if changed and changed > first else NAN
            return {"rate": written / (now - t0), "first": first - t0, "stream": stream, "tail": now - (changed or now)}
        time.sleep(0.002 if first is None else poll_for(app.status(lines), chars))
    raise RuntimeError(f"the turn did not finish in {timeout:.0f} s; status: {app.status()!r}")


def model_shown(area: list[str], typed: str) -> bool:
    """Whether the story area shows a char after the person's `typed` turn (any change at all when
    nothing was typed): the text after the last of its last two words is not blank."""
    if not typed:
        return True
    text, end = " ".join(" ".join(area).split()), " ".join(typed.split()[-2:])
    at = text.rfind(end)
    return at >= 0 and bool(text[at + len(end) :].strip())


def worker_quiet(app: TmuxApp, still: float = 0.5, timeout: float = 60) -> None:
    """Wait until the app's model worker has used no CPU for `still` s: done with what a turn
    leaves for after it (learning the person's turn, the base model's states)."""
    pids = [pid for pid in descendants(app.pane_pid or 0) if b"charterm.worker" in cmdline(pid)]
    last, since, end = None, time.perf_counter(), time.perf_counter() + timeout
    while (now := time.perf_counter()) < end and now - since < still:
        used = sum(cpu_ticks(pid) for pid in pids)
        if used != last:
            last, since = used, now
        time.sleep(0.05)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def book_turns(path: str, chars: int, count: int) -> list[str]:
    """`count` person's turns of about `chars` chars from the book: whole words, one line each."""
    with open(path, encoding="utf-8") as f:
        text = f.read(200_000)[100_000:]
    words, turns = text.split(), []
    while len(turns) < count:
        turn = []
        while sum(len(w) + 1 for w in turn) < chars:
            turn.append(words.pop(0))
        turns.append(" " + " ".join(turn).lstrip("/"))
    return turns


def poll_for(status: str, chars: int) -> float:
    """Read the screen every 50 ms (little CPU taken from the app), every 5 ms near the turn's end."""
    m = WRITING.search(status)
    if m is None:
        return 0.005
    shown, rate = (int(m[i].replace(",", "")) for i in (1, 2))
    return 0.005 if chars - shown < 0.3 * max(rate, 1) else 0.05


def start_long_turn(app: TmuxApp) -> None:
    command(app, "/chars 100000")
    app.send("Enter")
    if app.wait(lambda lines: WRITING.search(app.status(lines)), timeout=30) is None:
        raise RuntimeError(f"the model did not start writing; status: {app.status()!r}")
    time.sleep(1.0)


def key_echo(app: TmuxApp, keys: str = ECHO_KEYS, gap: float = 0.2, before: str = "") -> list[float]:
    """Seconds from send-keys of each char until the prompt line shows it (after `before`, there)."""
    echoes = []
    for i in range(len(keys)):
        typed = before + keys[: i + 1]
        t0 = time.perf_counter()
        app.send("-l", keys[i])
        shown = app.wait(lambda lines, typed=typed: app.prompt(lines).startswith(typed), timeout=10, poll=0.002)
        if shown is None:
            break
        echoes.append(shown[0] - t0)
        time.sleep(gap)
    return echoes


def esc_stop(app: TmuxApp, key: str = "Escape", quiet: float = 1.0, timeout: float = 10) -> float:
    """Seconds from send-keys `key` until the story area last changed (still for `quiet` s after)."""
    if not WRITING.search(app.status()):
        raise RuntimeError(f"the model is not writing; status: {app.status()!r}")
    last = app.story(app.screen())
    t0 = time.perf_counter()
    app.send(key)
    changed = t0
    while (now := time.perf_counter()) - changed < quiet and now - t0 < timeout:
        area = app.story(app.screen())
        if area != last:
            changed, last = time.perf_counter(), area
        time.sleep(0.005)
    if app.wait(lambda lines: idle_counts(app, lines) is not None, timeout=5) is None:
        return float("nan")  # the model did not stop
    return changed - t0


def start_training(app: TmuxApp, data: str, train_args: str, timeout: float = 120) -> None:
    """/train in the app, then wait until the training pane shows steps."""
    app.type_line(f"/train --data {shlex.quote(data)} {train_args}")
    if app.wait(lambda lines: any(TRAINING.search(line) for line in lines), timeout, poll=0.2) is None:
        raise RuntimeError("training did not show steps:\n" + "\n".join(app.screen()))


def training_alive(app: TmuxApp) -> bool:
    """Whether a `charterm train` child of the app is running."""
    for pid in descendants(app.pane_pid or 0):
        try:
            if b"train" in Path(f"/proc/{pid}/cmdline").read_bytes() and pid_alive(pid):
                return True
        except OSError:
            continue
    return False


def pound_pages(app: TmuxApp, stop: threading.Event, sent: list[float], every: float = 0.05) -> None:
    """PgUp and PgDn in turn, one every `every` s, until `stop` is set; the send times go in `sent`."""
    keys = itertools.cycle(["PPage", "NPage"])
    next_at = time.perf_counter()
    while not stop.is_set():
        app.send(next(keys))
        sent.append(time.perf_counter())
        next_at += every
        stop.wait(max(0.0, next_at - time.perf_counter()))


# --- measurements outside the app -------------------------------------------------------------------


def generate_rate(args, timeout: float = 300) -> float:
    """chars/s of `charterm generate`, from its first stdout byte to its last."""
    cmd = [*APP, "generate", "--model", args.model, "--chars", str(args.chars), "--seed", str(args.seed)]
    cmd += ["--top-k", str(args.top_k), "--temperature", str(args.temperature)]
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "CHARTERM_HOME": home})
        try:
            chunks = read_timed(proc.stdout.fileno(), time.perf_counter() + timeout)
        finally:
            proc.kill()
            proc.wait()
    if len(chunks) < 2:
        raise RuntimeError("charterm generate wrote too little to time")
    after_first = sum(len(data.decode("utf-8", "replace")) for _, data in chunks[1:])
    return after_first / (chunks[-1][0] - chunks[0][0])


def read_timed(fd: int, deadline: float) -> list[tuple[float, bytes]]:
    """(time, bytes) of each read from fd until EOF or the deadline."""
    chunks = []
    while (left := deadline - time.perf_counter()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append((time.perf_counter(), data))
    return chunks


def import_torch() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, timeout=300)
    return time.perf_counter() - t0


def machine() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.M) or ["", ""])[1].split())
    simd = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512f", "avx2"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{name[1] if name else 'unknown CPU'}; {os.cpu_count()} cores; {simd}; load average {load}"


# --- rounds and the report --------------------------------------------------------------------------


def idle_round(args, size: tuple[int, int], res: dict, latency: bool) -> None:
    """One fresh app: first frame, ready, one turn's chars/s; at `latency`, key echo and Esc too."""
    with TmuxApp(args.model, *size) as app:
        frame, ready = launch(app)
        res.setdefault(f"frame {size[0]}x{size[1]}", []).append(frame)
        res.setdefault(f"ready {size[0]}x{size[1]}", []).append(ready)
        configure(app, args)
        got = timed_turn(app, args.chars, args.timeout)
        res.setdefault(f"app {size[0]}x{size[1]}", []).append(got["rate"])
        if latency:
            res.setdefault("first empty", []).append(got["first"])
            res.setdefault("tail empty", []).append(got["tail"])
            start_long_turn(app)
            res.setdefault("ctrl+c", []).append(esc_stop(app, "C-c"))
            start_long_turn(app)  # key echo leaves its keys in the prompt: Esc comes after it
            res.setdefault("echo", []).extend(key_echo(app))
            res.setdefault("esc", []).append(esc_stop(app))
            res.setdefault("echo idle", []).extend(key_echo(app, before=ECHO_KEYS))


def typed_round(args, res: dict) -> None:
    """At 80x24, turns as a person writes them: a person's turn typed, then Enter; the first (nothing
    learned yet) warms up, the second is timed (the model writes with what it learned of the first)."""
    with TmuxApp(args.model, 80, 24) as app:
        launch(app)
        configure(app, args)
        for k, turn in enumerate(book_turns(args.data, args.typed, 2)):
            worker_quiet(app)
            app.send("-l", turn)
            if app.wait(lambda lines, t=turn: app.prompt(lines).endswith(t.split()[-1]), timeout=30) is None:
                raise RuntimeError(f"the prompt did not show the typed turn: {app.prompt()!r}")
            worker_quiet(app, still=0.3)
            got = timed_turn(app, args.chars, args.timeout, typed=turn)
            if k:
                res.setdefault("app typed 80x24", []).append(got["rate"])
                res.setdefault("stream typed", []).append(got["stream"])
                res.setdefault("first typed", []).append(got["first"])
                res.setdefault("tail typed", []).append(got["tail"])


def busy_round(args, res: dict) -> None:
    """The 80x24 turn with PgUp/PgDn every 50 ms and training running, started from the app."""
    with TmuxApp(args.model, 80, 24) as app:
        launch(app)
        configure(app, args)
        start_training(app, args.data, args.train_args)
        stop, sent = threading.Event(), []
        pager = threading.Thread(target=pound_pages, args=(app, stop, sent), daemon=True)
        pager.start()
        try:
            res.setdefault("busy 80x24", []).append(turn_rate(app, args.chars, args.timeout))
        finally:
            stop.set()
            pager.join(5)
        if not training_alive(app):
            raise RuntimeError("the training job was not running at the end of the busy turn")
        if len(sent) > 1:
            res.setdefault("page keys/s", []).append((len(sent) - 1) / (sent[-1] - sent[0]))


def one_round(args, res: dict) -> None:
    """Every measurement once; one that fails is reported and the others go on."""
    steps = [
        ("import torch", lambda: res.setdefault("import torch", []).append(import_torch())),
        ("generate", lambda: res.setdefault("generate", []).append(generate_rate(args))),
        ("app 80x24", lambda: idle_round(args, (80, 24), res, latency=True)),
        ("app 100x30", lambda: idle_round(args, (100, 30), res, latency=False)),
        ("busy 80x24", lambda: busy_round(args, res)),
        ("typed 80x24", lambda: typed_round(args, res)),
    ]
    for name, step in steps:
        try:
            step()
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            print(f"{name} failed: {e}", file=sys.stderr, flush=True)


def fmt(values: list[float], spec: str) -> str:
    return ", ".join(format(v, spec) for v in values)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.0%}" if b == b and b > 0 and a == a else "?"


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:,.0f} ms"


def latency(seconds: list[float]) -> str:
    return f"median {1e3 * statistics.median(seconds):.0f} ms, worst {1e3 * max(seconds):.0f} ms"


def summary(res: dict) -> list[tuple[str, str, str]]:
    """(metric, figure, goal) rows; rates are best (max) of the rounds, times best (min)."""
    rates = ("app", "busy", "generate", "stream")
    best = {k: (max(v) if k.startswith(rates) else min(v)) for k, v in res.items() if v}
    best = {k: best.get(k, NAN) for k in (*KEYS, *TYPED, "import torch", "generate")}
    gen, idle, torch_s = best["generate"], best["app 80x24"], best["import torch"]
    echo, esc, ctrl_c = res.get("echo") or [NAN], res.get("esc") or [NAN], res.get("ctrl+c") or [NAN]
    echo_idle = res.get("echo idle") or [NAN]

    def of_generate(rate: float) -> str:
        return f"{rate:,.0f} chars/s ({ratio(rate, gen)} of generate)"

    rows = [("`charterm generate`", f"{gen:,.0f} chars/s", "")]
    for size in ("80x24", "100x30"):
        rows.append((f"app on screen, {size}", of_generate(best[f"app {size}"]), ">= 90%"))
    rows.append(("app after a typed turn (learning), 80x24", of_generate(best["app typed 80x24"]), ""))
    rows.append(("  its stream, first char to last", of_generate(best["stream typed"]), ">= 90%"))
    busy = best["busy 80x24"]
    rows.append(("app, PgUp/PgDn + training, 80x24", f"{busy:,.0f} chars/s ({ratio(busy, idle)} of idle)", ">= 80%"))
    rows.append(("first char, Enter on an empty prompt", ms(best["first empty"]), ""))
    rows.append(("first char, Enter after a typed turn", ms(best["first typed"]), "<= 150 ms"))
    tails = f"{ms(best['tail empty'])}; after a typed turn {ms(best['tail typed'])}"
    rows.append(("tail: last char to committed", tails, "<= 250 ms"))
    rows.append(("first frame", f"{best['frame 80x24']:.2f} s", "<= 0.8 s"))
    rows.append(("model ready", f"{best['ready 80x24']:.2f} s (import torch {torch_s:.2f} s)", "<= import torch + 1 s"))
    rows.append(("key echo while writing", latency(echo), "median < 30 ms"))
    rows.append(("key echo idle (the method's own cost)", latency(echo_idle), ""))
    rows.append(("Esc to the last char shown", latency(esc), "< 100 ms"))
    rows.append(("Ctrl+C to the last char shown", latency(ctrl_c), "< 100 ms"))
    return rows


def report(res: dict, args) -> None:
    cpu = machine()
    print(f"\nmachine: {cpu}")
    print(
        f"settings: --chars {args.chars} --seed {args.seed} --top-k {args.top_k} --temperature {args.temperature}; "
        f"{len(res.get('generate', []))} rounds\n"
    )
    for key, values in res.items():
        spec, unit = UNITS.get(key.split()[0], (".3f", "s"))
        print(f"{key:>14} ({unit}): {fmt(values, spec)}")
    rows = summary(res)
    print()
    for metric, figure, goal in rows:
        print(f"{metric:>36}: {figure}{f'   (goal {goal})' if goal else ''}")
    print(f"\n{cpu}; best of {args.rounds} rounds (latencies: median and worst of all):")
    print("\n| metric | figure | goal |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "anna.safetensors"))
    ap.add_argument("--chars", type=int, default=12000, help="chars per timed turn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top-k", type=int, default=5, help="for the app and generate")
    ap.add_argument("--temperature", type=float, default=1.0, help="for the app and generate")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "anna.txt"), help="text for /train")
    ap.add_argument("--train-args", default="--max-time 600 --hidden 64 --layers 1", help="the rest of /train")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one turn may take")
    ap.add_argument("--typed", type=int, default=300, help="chars of each person's turn typed in the typed round")
    args = ap.parse_args()
    args.model = str(Path(args.model).resolve())
    args.data = str(Path(args.data).resolve())
    return args


def main() -> None:
    args = parse_args()
    if not shutil.which("tmux"):
        sys.exit("app_bench needs tmux (apt-get install tmux)")
    if not Path(args.data).is_file():
        sys.exit(f"no training text at {args.data}: pass --data PATH")
    res: dict[str, list[float]] = {}
    for i in range(args.rounds):
        print(f"round {i + 1}/{args.rounds}...", file=sys.stderr, flush=True)
        one_round(args, res)
    report(res, args)


if __name__ == "__main__":
    main()

"""The full-screen app: a story you write with the model, training in a side pane.

Everything that touches the model runs on one background thread (the "model thread"), one
task at a time, so the UI never waits for torch. Generated chars go into a buffer that a
30 Hz timer flushes into the story view; Esc stops the model before its next char.
"""

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static

from charterm.app import commands
from charterm.app.screens import HelpScreen
from charterm.app.story_view import MODEL, PERSON, StoryView
from charterm.app.training_pane import TrainingPane
from charterm.app.widgets import ModelCard, PromptInput, SettingsPanel
from charterm.errors import CharTermError, UsageError

FLUSH_HZ = 30
NARROW = 70  # below this width the side pane starts hidden


class SessionReady(Message):
    def __init__(self, session, card: dict) -> None:
        super().__init__()
        self.session = session
        self.card = card


class TaskDone(Message):
    """A model-thread task ended; `runs` is the story as the session now has it."""

    def __init__(self, runs: list[tuple[str, str]], error: str | None = None) -> None:
        super().__init__()
        self.runs = runs
        self.error = error


class Notice(Message):
    def __init__(self, text: str, severity: str = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity


class TrainingUpdate(Message):
    def __init__(self, event: dict) -> None:
        super().__init__()
        self.event = event


class CharTermApp(App):
    CSS_PATH = "charterm.tcss"
    TITLE = "charterm"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+z", "undo", "Undo", priority=True),
        Binding("ctrl+r", "retry", "Retry", priority=True),
        Binding("ctrl+t", "train", "Train", priority=True),
        Binding("ctrl+l", "load_trained", "Load trained", show=False, priority=True),
        Binding("ctrl+b", "toggle_side", "Side", priority=True),
        Binding("pageup", "scroll_story('up')", show=False, priority=True),
        Binding("pagedown", "scroll_story('down')", show=False, priority=True),
        Binding("f1", "help", "Help", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, story: str | None = None, model: str | None = None, precision: str = "int8") -> None:
        super().__init__()
        self.story_name = story
        self.model_path = model
        self.precision = precision
        self.session = None
        self.store = None
        self.card: dict | None = None
        self.job = None
        self.trained_path: str | None = None  # the newest better model training wrote
        self.follow = False  # switch to it automatically
        self._tasks: queue.Queue = queue.Queue()
        self._waiting: list[Callable[[], None]] = []  # tasks submitted before the model was ready
        self._stream: list[tuple] = []  # ("text", author, str) | ("reset", runs), filled by the model thread
        self._stream_lock = threading.Lock()
        self._continuation = None
        self._busy = 0  # queued or running model tasks
        self._gen_chars = 0
        self._gen_started = 0.0
        self._model_thread = threading.Thread(target=self._model_loop, name="charterm-model", daemon=True)

    def compose(self) -> ComposeResult:
        yield Static("charterm", id="title", markup=False)
        with Horizontal(id="main"):
            yield StoryView(id="story")
            with Vertical(id="side"):
                yield ModelCard("loading the model...", id="card", markup=False)
                yield SettingsPanel(id="settings")
                yield TrainingPane(id="training")
        yield Static("", id="status-line", markup=False)
        yield PromptInput(id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PromptInput).focus()
        if self.size.width < NARROW:
            self.query_one("#side").display = False
        self._model_thread.start()
        self._busy += 1
        self._tasks.put(self._load_task)
        self.set_interval(1 / FLUSH_HZ, self._flush_stream)
        self.set_interval(2.0, self._watch_story)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            import asyncio

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)

    # --- the model thread ---------------------------------------------------------------------

    def _model_loop(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            error = None
            try:
                task()
            except CharTermError as e:
                error = str(e)
            except Exception as e:  # a bug must not take the story down with it
                error = f"{type(e).__name__}: {e}"
            runs = self.session.runs() if self.session else []
            self._drain_notices()
            self.post_message(TaskDone(runs, error))

    def _submit(self, task: Callable[[], None]) -> None:
        """Queue a model task; before the model is loaded, hold it until it is."""
        if self.session is None:
            self._waiting.append(task)
            self._set_status("the model is still loading; your input is queued")
            return
        self._busy += 1
        self._tasks.put(task)

    def _emit(self, item: tuple) -> None:
        with self._stream_lock:
            self._stream.append(item)

    def _drain_notices(self) -> None:
        if self.session is not None:
            while self.session.notices:
                self.post_message(Notice(self.session.notices.pop(0), "warning"))

    def _load_task(self) -> None:
        import torch

        from charterm.checkpoint import load_model
        from charterm.session import Session, model_path_for
        from charterm.store import Store, check_name

        torch.set_num_threads(1)  # one char at a time gains nothing from more; the UI keeps a core
        store = self.store = Store()
        name = check_name(self.story_name or store.last_story() or "untitled")
        story = store.load(name)
        path, notice = model_path_for(story, self.model_path)
        if notice:
            self.post_message(Notice(notice, "warning"))
        if not path.exists():
            raise CharTermError(f"no model at {path}; train one (/train) or open one with /model PATH")
        loaded = load_model(path)
        session = Session(loaded, store, story or store.open(name), precision=self.precision)
        store.set_last_story(name)
        self.session = session
        self._emit(("reset", session.runs()))
        self.post_message(SessionReady(session, model_card(loaded)))

    def _generate(self, cont) -> None:
        self._continuation = cont
        self._gen_chars, self._gen_started = 0, time.monotonic()
        try:
            for ch in cont:
                self._emit(("text", MODEL, ch))
                self._gen_chars += 1
        finally:
            self._continuation = None
            cont.close()

    # --- UI side: flushing and messages -------------------------------------------------------

    def _flush_stream(self) -> None:
        """Move buffered chars into the story view (about 30 times a second)."""
        views = self.query(StoryView)
        if not views:  # the app is closing and its screen is gone; the session has saved the text
            return
        view = views.first()
        with self._stream_lock:
            items, self._stream = self._stream, []
        pending_author, pending = None, []
        for item in items:
            if item[0] == "text" and item[1] == pending_author:
                pending.append(item[2])
                continue
            if pending:
                view.append("".join(pending), pending_author)
            pending_author, pending = None, []
            if item[0] == "reset":
                view.set_runs(item[1])
            else:
                pending_author, pending = item[1], [item[2]]
        if pending:
            view.append("".join(pending), pending_author)
        if self._continuation is not None:
            rate = self._gen_chars / max(1e-3, time.monotonic() - self._gen_started)
            self._set_status(f"writing... {self._gen_chars:,} chars, {rate:,.0f} chars/s (Esc stops)")

    def _watch_story(self) -> None:
        """Another window (or `charterm generate --story`) may write to this story: reload it."""
        s = self.session
        if s is None or s.story is None or self._busy or self.store is None:
            return
        try:
            changed = self.store.revision(s.story.id) != s.story.revision
        except CharTermError:
            changed = True
        if changed:
            self._submit(s.sync)

    @on(SessionReady)
    def _session_ready(self, message: SessionReady) -> None:
        self.card = message.card
        self._show_card()
        self.query_one(SettingsPanel).show(message.session.settings.to_dict())
        self._update_title()
        self._set_status(f"{len(message.session.turns)} turns, {len(message.session.text):,} chars. Type, then Enter.")
        waiting, self._waiting = self._waiting, []
        for task in waiting:
            self._submit(task)

    @on(TaskDone)
    def _task_done(self, message: TaskDone) -> None:
        self._busy = max(0, self._busy - 1)
        self._flush_stream()
        view = self.query_one(StoryView)
        if view.runs != merge_runs(message.runs):
            view.set_runs(message.runs)
        if message.error:
            self.notify(message.error, severity="error", timeout=8, markup=False)
            self._set_status(message.error)
            if self.session is None:
                self.query_one(ModelCard).show(None, "no model loaded: /model PATH")
        elif self._busy == 0 and self.session is not None:
            self._set_status(f"{len(self.session.turns)} turns, {len(view.text):,} chars")

    @on(Notice)
    def _notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity, timeout=6, markup=False)

    @on(PromptInput.Submitted)
    def _prompt_submitted(self, event: PromptInput.Submitted) -> None:
        value = event.value
        event.input.value = ""
        if value.strip().startswith("/"):
            try:
                self._command(*commands.parse(value))
            except CharTermError as e:
                self.notify(str(e), severity="error", markup=False)
            return
        text = commands.unescape(value)
        if self._continuation is not None:  # typing while the model writes: stop it, then add
            self._continuation.stop()
        self._submit(lambda: self._turn(text))

    def _turn(self, text: str) -> None:
        s = self.session
        if text:
            self._emit(("text", PERSON, text))
            report = s.feed(text)
            if report:
                s.notices.append(f"not in the model's alphabet: {report.describe()}")
        self._generate(s.continue_(whole_words=True))

    @on(SettingsPanel.Changed)
    def _setting_changed(self, event: SettingsPanel.Changed) -> None:
        name = {"top_k": "topk", "temperature": "temp", "chars": "chars", "stop_at": "stop"}[event.field]
        try:
            self._command(name, event.value)
        except CharTermError as e:
            self.notify(str(e), severity="error", markup=False)
            if self.session:
                self.query_one(SettingsPanel).show(self.session.settings.to_dict())

    @on(TrainingUpdate)
    def _training_update(self, message: TrainingUpdate) -> None:
        ev = message.event
        self.query_one(TrainingPane).handle(ev)
        kind = ev.get("event")
        if kind == "checkpoint":
            self.trained_path = ev.get("path")
            if self.follow:
                self.action_load_trained()
            else:
                self.notify(
                    f"training wrote a better model (val {ev.get('val_loss', float('nan')):.4f}): "
                    "Ctrl+L or /load to switch to it",
                    timeout=8,
                    markup=False,
                )
        elif kind == "exit":
            self.job = None

    # --- commands -----------------------------------------------------------------------------

    def _command(self, name: str, arg: str) -> None:
        simple = {
            "help": self.action_help,
            "undo": self.action_undo,
            "retry": self.action_retry,
            "load": self.action_load_trained,
            "cancel": self.action_cancel_training,
        }
        if name in simple:
            simple[name]()
        elif name == "quit":
            self.call_later(self.action_quit)
        elif name == "stop" and not arg:
            self.action_stop()
        elif name in ("topk", "temp", "chars", "stop", "seed"):
            self._set_setting(name, arg)
        elif name == "model":
            if not arg:
                raise UsageError("/model needs a path: /model models/other.safetensors")
            self._switch_model(arg)
        elif name == "follow":
            if arg not in ("on", "off"):
                raise UsageError("/follow on or /follow off")
            self.follow = arg == "on"
            self.notify(f"follow training: {arg}")
            if self.follow and self.trained_path:
                self.action_load_trained()
        elif name == "story":
            self._open_story(arg)
        elif name == "export":
            self._export(arg)
        elif name == "train":
            self._start_training(arg)

    def _set_setting(self, name: str, arg: str) -> None:
        if self.session is None:
            raise CharTermError("the model is still loading; try again in a moment")
        field = {"topk": "top_k", "temp": "temperature", "chars": "chars", "stop": "stop_at", "seed": "seed"}[name]
        if not arg:
            raise UsageError(f"/{name} needs a value: {commands.BY_NAME[name].args}")
        try:
            if field in ("top_k", "chars") or (field == "seed" and arg != "off"):
                value = int(arg)
            elif field == "temperature":
                value = float(arg)
            else:
                value = None if arg == "off" else arg
        except ValueError:
            raise UsageError(f"/{name}: {arg!r} is not a number") from None
        from charterm.session import Settings

        settings = Settings(**{**self.session.settings.to_dict(), field: value})  # validates
        self._submit(lambda: self.session.update_settings(**{field: value}))  # saved off the UI thread
        self.query_one(SettingsPanel).show(settings.to_dict())
        self._set_status(f"{name} = {arg}")

    def _switch_model(self, path: str) -> None:
        def task():
            from charterm.checkpoint import load_model

            loaded = load_model(Path(path).expanduser())
            self.post_message(Notice(f"rebuilding the story's state with {loaded.path.name}..."))
            self.session.switch_model(loaded)
            self.card = model_card(loaded)
            self.post_message(SessionReady(self.session, self.card))
            self.post_message(Notice(f"now writing with {loaded.path.name}"))

        self._submit(task)

    def _open_story(self, name: str) -> None:
        if not name:
            if self.store is None:
                raise CharTermError("the store is still opening; try again in a moment")
            rows = self.store.list_stories()
            listing = "\n".join(f"{r.name}  ({r.turns} turns, {r.chars:,} chars)" for r in rows[:15])
            self.notify(listing or "no stories yet", title="stories", timeout=10, markup=False)
            return
        from charterm.store import check_name

        name = check_name(name)

        def task():
            from charterm.checkpoint import load_model
            from charterm.session import Session, model_path_for

            story = self.store.open(name)
            loaded = self.session.loaded
            path, _ = model_path_for(story, fallback=loaded.path)
            if path.resolve() != Path(loaded.path).resolve():
                loaded = load_model(path)
            self.session = Session(loaded, self.store, story, precision=self.precision)
            self.store.set_last_story(name)
            self.story_name = name
            self._emit(("reset", self.session.runs()))
            self.post_message(SessionReady(self.session, model_card(loaded)))

        self._submit(task)

    def _export(self, arg: str) -> None:
        parts = arg.split()
        fmt = "md" if parts and parts[-1] in ("md", "--format=md") else "txt"
        if parts and parts[-1] in ("md", "txt", "--format=md", "--format=txt"):
            parts = parts[:-1]
        if not parts:
            raise UsageError("/export needs a path: /export story.txt (add md for markdown)")
        path = Path(" ".join(parts)).expanduser()

        def task():
            from charterm.fsutil import atomic_write_bytes
            from charterm.store import render

            atomic_write_bytes(path, render(self.session.story.name, self.session.turns, fmt).encode())
            self.post_message(Notice(f"wrote {path}"))

        self._submit(task)

    def _start_training(self, arg: str) -> None:
        from charterm.jobs import TrainingJob, parse_train_args
        from charterm.store import home

        if self.job is not None:
            raise CharTermError("training is already running; /cancel stops it")
        args = parse_train_args(arg)
        if not any(a == "--data" or a.startswith("--data=") for a in args):
            data = self._training_text()
            args += ["--data", data]
        if not any(a == "--out" or a.startswith("--out=") for a in args):
            data = args[args.index("--data") + 1] if "--data" in args else "text"
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            args += ["--out", str(home() / "models" / f"{Path(data).stem}-{stamp}.safetensors")]
        pane = self.query_one(TrainingPane)
        pane.reset(starting=True)
        self.job = TrainingJob(args, lambda ev: self.post_message(TrainingUpdate(ev)))
        self.job.start()
        self.notify("training started in the background (Ctrl+T or /cancel stops it)")

    def _training_text(self) -> str:
        info = self.session.loaded.info if self.session else {}
        data = info.get("train_config", {}).get("data")
        if data and Path(data).is_file():
            return data
        raise CharTermError(
            f"no training text found{f' at {data}' if data else ''}: /train --data PATH "
            "(or get the book with `charterm data fetch anna`)"
        )

    # --- actions ------------------------------------------------------------------------------

    def action_stop(self) -> None:
        if self._continuation is not None:
            self._continuation.stop()
            self._set_status("stopped")
        elif isinstance(self.screen, HelpScreen):
            self.screen.dismiss()

    def action_undo(self) -> None:
        def task():
            turn = self.session.undo()
            if turn is None:
                self.post_message(Notice("nothing to undo"))
            else:
                self.post_message(Notice(f"undid the {turn.author}'s {len(turn.text):,} chars"))

        self._stop_and_submit(task)

    def action_retry(self) -> None:
        def task():
            s = self.session
            if s.turns and s.turns[-1].author == MODEL:
                s.undo()
                self._emit(("reset", s.runs()))
            self._generate(s.continue_(whole_words=True))

        self._stop_and_submit(task)

    def _stop_and_submit(self, task) -> None:
        if self._continuation is not None:
            self._continuation.stop()
        self._submit(task)

    def action_train(self) -> None:
        if self.job is not None:
            self.action_cancel_training()
            return
        try:
            self._start_training("")
        except CharTermError as e:
            self.notify(str(e), severity="error", markup=False)
            self.query_one(TrainingPane).handle({"event": "error", "message": str(e)})

    def action_cancel_training(self) -> None:
        if self.job is None:
            self.notify("no training is running")
            return
        threading.Thread(target=self.job.cancel, daemon=True).start()
        self.notify("stopping training; it saves a resume state")

    def action_load_trained(self) -> None:
        if not self.trained_path:
            self.notify("training has not written a better model yet")
            return
        self._switch_model(self.trained_path)

    def action_toggle_side(self) -> None:
        side = self.query_one("#side")
        side.display = not side.display

    def action_scroll_story(self, direction: str) -> None:
        view = self.query_one(StoryView)
        (view.scroll_page_up if direction == "up" else view.scroll_page_down)(animate=False)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self._save_and_stop()
        self.exit()

    def _save_and_stop(self, timeout: float = 10.0) -> None:
        """Stop the model, let the model thread commit what was shown, stop training."""
        if self._continuation is not None:
            self._continuation.stop()
        self._tasks.put(None)
        if self._model_thread.is_alive():
            self._model_thread.join(timeout)
        if self.job is not None:
            with contextlib.suppress(Exception):
                self.job.cancel()
        if self.store is not None and not self._model_thread.is_alive():
            with contextlib.suppress(Exception):
                self.store.close()

    def _hangup(self) -> None:
        """The terminal went away (a dropped SSH connection): save and leave."""
        self._save_and_stop(timeout=3.0)
        os._exit(129)

    # --- small helpers ------------------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self.query_one("#status-line", Static).update(text)

    def _show_card(self) -> None:
        self.query_one(ModelCard).show(self.card)

    def _update_title(self) -> None:
        name = self.session.name if self.session else "?"
        model = self.card["name"] if self.card else "?"
        self.query_one("#title", Static).update(f"charterm  story: {name}  model: {model}")

    def on_resize(self, event) -> None:
        if event.size.width < NARROW:
            self.query_one("#side").display = False


def merge_runs(runs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Adjacent turns by the same author shown as one run (as the story view keeps them)."""
    out: list[tuple[str, str]] = []
    for author, text in runs:
        if not text:
            continue
        if out and out[-1][0] == author:
            out[-1] = (author, out[-1][1] + text)
        else:
            out.append((author, text))
    return out


def model_card(loaded) -> dict:
    c = loaded.model.config
    return {
        "name": loaded.path.name if loaded.path else "model",
        "path": str(loaded.path),
        "cell": c.cell,
        "hidden": c.hidden,
        "layers": c.layers,
        "params": loaded.model.n_params,
        "val_loss": loaded.info.get("val_loss"),
    }

"""Shared helpers for the app's Pilot and snapshot tests (no tests here)."""

import asyncio
import os
import threading
import time
from pathlib import Path

from textual.widgets import Input, Static

from charterm.app import app as app_module
from charterm.app.app import CharTermApp
from charterm.app.story_view import StoryView
from charterm.app.widgets import ModelCard, SettingsPanel
from charterm.story.store import Store
from charterm.worker import protocol as p
from charterm.worker.client import OPEN_ID

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


class RecordingApp(CharTermApp):
    """The real app, also keeping every notification it makes (toasts expire; this list does not).
    Its worker runs on a thread of the test process unless `in_thread=False` (a real child process)."""

    CSS_PATH = str(Path(app_module.__file__).with_name(CharTermApp.CSS_PATH))  # relative paths follow the subclass

    def __init__(self, *args, in_thread: bool = True, **kw) -> None:
        super().__init__(*args, in_thread=in_thread, **kw)
        self.notes: list[tuple[str, str, str]] = []  # (severity, message, title)
        self.opens: list[tuple[object, int]] = []  # (client, request id) of every Open the app sent itself

    def _send(self, cls, **fields) -> int:
        rid = super()._send(cls, **fields)
        if cls is p.Open:
            self.opens.append((self.client, rid))
        return rid

    def opening(self) -> bool:
        """An Open of the current worker (its first, or a /story) has not ended yet."""
        if OPEN_ID in self.pending:  # the one every new worker is started with
            return True
        return any(client is self.client and rid in self.pending for client, rid in self.opens)

    def notify(self, message, *, title="", severity="information", timeout=None, markup=True) -> None:
        self.notes.append((severity, str(message), title))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def errors(self) -> list[str]:
        return [m for sev, m, _ in self.notes if sev == "error"]

    def messages(self) -> list[str]:
        return [m for _, m, _ in self.notes]


async def wait_until(pilot, predicate, timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` (letting the app run between polls) until it is true, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await pilot.pause(0.05)


def ready(app: RecordingApp) -> bool:
    """The worker has sent its snapshot, no Open is pending, and the card is drawn."""
    return app.snapshot is not None and not app.opening() and card_text(app).startswith(app.snapshot.card["name"])


def idle(app: RecordingApp) -> bool:
    """Ready, every request done, and the model not writing."""
    return ready(app) and not app.pending and not app.writing


async def wait_ready(pilot, timeout: float = 20.0) -> None:
    await wait_until(pilot, lambda: ready(pilot.app), timeout, "the model to load")


async def wait_idle(pilot, timeout: float = 20.0) -> None:
    await wait_until(pilot, lambda: idle(pilot.app), timeout, "the worker to finish")


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Fail unless process `pid` is gone (reaped) within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} is still there {timeout} s on")
        time.sleep(0.05)


def gate_the_model_load(monkeypatch) -> threading.Event:
    """Hold the worker's model load until the returned event is set (the worker runs in this process)."""
    import charterm.engine.checkpoint

    gate = threading.Event()
    real_load = charterm.engine.checkpoint.load_model

    def slow_load(*args, **kw):
        assert gate.wait(20), "the test never let the model load"
        return real_load(*args, **kw)

    monkeypatch.setattr(charterm.engine.checkpoint, "load_model", slow_load)
    return gate


# --- the story as stored, read through a second connection ------------------------------------------


def stored_story(name: str = "untitled"):
    """The story as the database has it now (None if there is none), read through a second Store."""
    store = Store()
    try:
        return store.load(name)
    finally:
        store.close()


def stored(name: str = "untitled") -> list[tuple[str, str]]:
    """The story's turns as (author, text), as stored."""
    story = stored_story(name)
    return [(t.author, t.text) for t in story.turns] if story else []


def stored_text(name: str = "untitled") -> str:
    return "".join(text for _, text in stored(name))


def stored_settings(name: str = "untitled") -> dict:
    """The settings saved with the story (only those ever set; the rest are the defaults)."""
    return stored_story(name).settings


def stored_model(name: str = "untitled") -> str | None:
    return stored_story(name).model_path


def runs_of(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Turns as the view shows them: consecutive turns by one author merged into one run."""
    out: list[tuple[str, str]] = []
    for author, text in turns:
        if out and out[-1][0] == author:
            out[-1] = (author, out[-1][1] + text)
        else:
            out.append((author, text))
    return out


# --- what is on screen -------------------------------------------------------------------------------


def shown(app, selector: str) -> str:
    """The text a Static renders."""
    return app.query_one(selector, Static).render().plain


def card_text(app) -> str:
    return app.query_one(ModelCard).render().plain


def title_text(app) -> str:
    return shown(app, "#title")


def view(app) -> StoryView:
    return app.query_one(StoryView)


def panel_values(app) -> dict[str, str]:
    panel = app.query_one(SettingsPanel)
    return {field: panel.query_one(f"#set-{field}", Input).value for field, _ in SettingsPanel.FIELDS}


async def type_line(pilot, text: str, enter: bool = True) -> None:
    """Type `text` into the focused widget key by key, then Enter."""
    if text:
        await pilot.press(*text)
    if enter:
        await pilot.press("enter")


async def submit(pilot, line: str) -> None:
    """Put `line` in the prompt (as a paste would) and press Enter: quicker than typing a long path key by key."""
    from charterm.app.widgets import PromptInput

    prompt = pilot.app.query_one(PromptInput)
    prompt.focus()
    prompt.set_text(line)
    await pilot.press("enter")


def run_app(test, *, model=None, story=None, size=(100, 30), in_thread=True, notifications=False) -> RecordingApp:
    """Run `await test(app, pilot)` in a headless app; leaves with Ctrl+Q (the app's own save-and-quit).
    `notifications`: Textual's toasts as in a terminal (run_test leaves them out by default)."""
    app = RecordingApp(story=story, model=str(model) if model else None, in_thread=in_thread)

    async def main():
        async with app.run_test(size=size, notifications=notifications) as pilot:
            try:
                await test(app, pilot)
            finally:
                if app.is_running:
                    await pilot.press("ctrl+q")
                    await pilot.pause()

    asyncio.run(main())
    return app

"""Shared helpers for the app's Pilot and snapshot tests (no tests here)."""

import asyncio
import time
from pathlib import Path

from textual.widgets import Input, Static

from charterm.app import app as app_module
from charterm.app.app import CharTermApp
from charterm.app.story_view import StoryView
from charterm.app.widgets import ModelCard, SettingsPanel

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


class RecordingApp(CharTermApp):
    """The real app, also keeping every notification it makes (toasts expire; this list does not)."""

    CSS_PATH = str(Path(app_module.__file__).with_name(CharTermApp.CSS_PATH))  # relative paths follow the subclass

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.notes: list[tuple[str, str, str]] = []  # (severity, message, title)
        self.tasks_done = 0  # model-thread tasks (the load included) whose TaskDone has been handled

    def on_task_done(self, message) -> None:  # runs beside the app's own TaskDone handler
        self.tasks_done += 1

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
    """The model is loaded, the load task has ended, and the card is drawn."""
    return (
        app.session is not None
        and app.card is not None
        and app.tasks_done >= 1
        and card_text(app).startswith(app.card["name"])
    )


def idle(app: RecordingApp) -> bool:
    """Loaded, no model task queued or running, nothing left to flush into the view."""
    return ready(app) and app._busy == 0 and app._continuation is None and not app._stream


async def wait_ready(pilot, timeout: float = 20.0) -> None:
    await wait_until(pilot, lambda: ready(pilot.app), timeout, "the model to load")


async def wait_idle(pilot, timeout: float = 20.0) -> None:
    await wait_until(pilot, lambda: idle(pilot.app), timeout, "the model thread to finish")


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
    prompt.value = line
    prompt.cursor_position = len(line)
    await pilot.press("enter")


def run_app(test, *, model=None, story=None, size=(100, 30)) -> RecordingApp:
    """Run `await test(app, pilot)` in a headless app; leaves with Ctrl+Q (the app's own save-and-quit)."""
    app = RecordingApp(story=story, model=str(model) if model else None)

    async def main():
        async with app.run_test(size=size) as pilot:
            try:
                await test(app, pilot)
            finally:
                if app.is_running:
                    await pilot.press("ctrl+q")
                    await pilot.pause()

    asyncio.run(main())
    return app

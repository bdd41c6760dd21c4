"""The full-screen app: a story you write with the model, training in a side pane.

The app only draws. The model, the story session and the store live in a worker process
(`charterm.worker`, spoken to through `charterm.worker.protocol`); this process never imports torch,
so a busy UI cannot slow the model down, nor the model the UI. The view is built from the
worker's events alone. If the worker dies, the app says so, starts a new one and reopens the
story (every turn is committed as it ends, and a turn being written is saved as a draft).
"""

import contextlib
import os
import signal
import time

from textual import on
from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.notifications import Notification, SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from charterm.app import commands
from charterm.app.choice_list import ChoiceList
from charterm.app.notices import NoticeBand, ShowNotice
from charterm.app.palette import CharTermCommands
from charterm.app.preferences import InputHistory, load_preferences
from charterm.app.screens import ForkScreen, HelpScreen, welcome_text
from charterm.app.slash_commands import EDITING, ShownTurn, SlashCommands
from charterm.app.story_view import WRAPS, StoryView
from charterm.app.training_control import TrainingControl, TrainingUpdate
from charterm.app.training_pane import TrainingPane
from charterm.app.widgets import CandidateList, ModelCard, PromptInput, SettingsPanel
from charterm.errors import CharTermError
from charterm.paths import history_path, home
from charterm.worker import protocol as p
from charterm.worker.client import OPEN_ID, WorkerClient, start_worker

STATUS_HZ = 10  # the "writing..." line is redrawn this often
TYPING_EVERY = 0.2  # seconds: the prompt as typed goes to the worker at most this often (it learns it ahead of Enter)
NARROW = 70  # below this width the side pane starts hidden
RESTARTS = 3  # worker restarts allowed within RESTART_WINDOW seconds
RESTART_WINDOW = 60.0



class WorkerEvent(Message):
    """An event from the worker, delivered on the app's thread."""

    def __init__(self, client: WorkerClient, event: p.Message) -> None:
        super().__init__()
        self.client = client
        self.event = event


class WorkerExited(Message):
    def __init__(self, client: WorkerClient, code: int | None, why: str) -> None:
        super().__init__()
        self.client = client
        self.code = code
        self.why = why


class CharTermApp(SlashCommands, TrainingControl, App):
    CSS_PATH = "charterm.tcss"
    TITLE = "charterm"
    COMMANDS = App.COMMANDS | {CharTermCommands}  # Ctrl+P: Textual's own (the theme, quit, keys) and every /command
    BINDINGS = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+c", "stop", "Stop", show=False, priority=True),  # as in `ollama run`; no Esc wait
        Binding("ctrl+z", "undo", "Undo", priority=True),
        Binding("ctrl+y", "redo", "Redo", show=False, priority=True),
        Binding("ctrl+r", "retry", "Retry", priority=True),
        Binding("alt+left", "version(-1)", "Version before", show=False, priority=True),
        Binding("alt+right", "version(1)", "Version after", show=False, priority=True),
        Binding("ctrl+f", "fork", "Fork", show=False, priority=True),
        Binding("ctrl+n", "next_words", "Next", priority=True),
        Binding("ctrl+o", "choices", "Choices", show=False, priority=True),  # Ctrl+K is the prompt's kill-line
        Binding("ctrl+t", "train", "Train", priority=True),
        Binding("ctrl+l", "load_trained", "Load trained", show=False, priority=True),
        Binding("ctrl+b", "toggle_side", "Side", priority=True),
        Binding("pageup", "scroll_story('up')", show=False, priority=True),
        Binding("pagedown", "scroll_story('down')", show=False, priority=True),
        Binding("f1", "help", "Help", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        story: str | None = None,
        model: str | None = None,
        precision: str = "int8",
        in_thread: bool = False,
        client: WorkerClient | None = None,
    ) -> None:
        """`client`: a worker already started and sent its `Open` (see `start_worker`)."""
        super().__init__()
        self.story_name = story
        self.model_path = model
        self.precision = precision
        self.in_thread = in_thread  # run the worker on a thread of this process (tests only)
        self.client = client
        self.snapshot: p.Snapshot | None = None  # what the worker last said the side pane shows
        self.pending: set[int] = set()  # requests sent and not yet done
        self.writing = False  # the model is writing a turn
        self._unconfirmed: dict[int, tuple[str, object]] = {}  # SetSetting id -> (field, value) not yet done
        self.job = None
        self.trained_path: str | None = None  # the newest model training wrote that beats the one in use
        self.trained_score: float | None = None  # its validation loss
        self.in_use_score: float | None = None  # the model in use, scored on the training run's text
        self.follow = False  # switch to each better model automatically
        self.quitting = False
        self._restarts: list[float] = []
        self._gen_chars = 0
        self._gen_started = 0.0
        self.preferences = load_preferences()  # the theme and the wrap, as saved by an earlier run
        self._last_turn_start = 0  # where the story's last turn starts (the one being written, while it is)
        self._turn_ended = True  # the next text appended starts a turn
        self.next_count = 5  # how many next words Ctrl+N offers (/next N sets it)
        self.choices_count = 3  # how many continuations Ctrl+O writes at once (/choices K sets it)
        self.turns: list[ShownTurn] = []  # the story's turns as shown
        self.last_version = (1, 1)  # the last turn is version k of n
        self.editing: int | None = None  # the id of the turn whose text the prompt holds for editing
        self._draft = ""  # what the prompt held before the edit began
        self._tree_request: int | None = None  # the `tree` request whose answer opens the fork list
        self._typed = ""  # the prompt's text last sent as `typing`
        self._typing: set[int] = set()  # `typing` requests not done yet (not waited for: not in `pending`)

    @property
    def card(self) -> dict | None:
        return self.snapshot.card if self.snapshot else None

    def compose(self) -> ComposeResult:
        yield Static("charterm", id="title", markup=False)
        with Horizontal(id="main"):
            wrap = self.preferences.get("wrap")
            yield StoryView(id="story", wrap=wrap if wrap in WRAPS else "soft")
            with Vertical(id="side"):
                yield ModelCard("loading the model...", id="card", markup=False)
                yield SettingsPanel(id="settings")
                yield TrainingPane(id="training")
        yield CandidateList(id="candidates")
        yield NoticeBand(id="notices")
        yield ChoiceList(id="choices")
        yield Static("", id="status-line", markup=False)
        yield PromptInput(input_history=InputHistory(history_path()), id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PromptInput).focus()
        if self.preferences.get("theme") in self.available_themes:
            self.theme = self.preferences["theme"]
        self.theme_changed_signal.subscribe(self, lambda theme: self._remember("theme", theme.name))
        if self.size.width < NARROW:
            self.query_one("#side").display = False
        if self.client is None:
            self.client = start_worker(self.story_name, self.model_path, self.precision, self.in_thread)
        self._listen(self.client)
        self.pending.add(OPEN_ID)
        self.set_interval(1 / STATUS_HZ, self._show_progress)
        self.set_interval(TYPING_EVERY, self._send_typing)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            import asyncio

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)

    # --- notices ----------------------------------------------------------------------------------

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A notice in the band above the status line (a toast there would cover the prompt)."""
        timeout = self.NOTIFICATION_TIMEOUT if timeout is None else timeout
        self.post_message(ShowNotice(Notification(message, title, severity, timeout, markup)))

    def on_show_notice(self, event: ShowNotice) -> None:
        bands = self.screen.query(NoticeBand)
        if bands:
            bands.first().add(event.notification)
        else:  # over a dialog (help, the fork list, the palette), which has no prompt: Textual's toast
            n = event.notification
            super().notify(n.message, title=n.title, severity=n.severity, timeout=n.timeout, markup=n.markup)

    def clear_notifications(self) -> None:
        super().clear_notifications()
        for screen in self.screen_stack:
            for band in screen.query(NoticeBand):
                band.clear()

    # --- the worker ---------------------------------------------------------------------------

    def _listen(self, client: WorkerClient) -> None:
        client.listen(
            lambda ev: self.post_message(WorkerEvent(client, ev)),
            lambda code, why: self.post_message(WorkerExited(client, code, why)),
        )

    def _send(self, cls: type[p.Message], **fields) -> int:
        rid = self.client.send(cls, **fields)
        if cls is not p.Stop:
            self.pending.add(rid)
        return rid

    def _stop_model(self) -> None:
        if self.writing or self.pending:
            self._send(p.Stop)

    @on(WorkerEvent)
    def _worker_event(self, message: WorkerEvent) -> None:
        if message.client is not self.client:
            return  # a worker that was replaced
        ev = message.event
        handler = getattr(self, f"_on_{ev.KIND}", None)
        if handler is not None:
            handler(ev)

    def _on_reset(self, ev: p.Reset) -> None:
        self.query_one(CandidateList).close()  # offered for a story that is no longer there
        if ev.id != self.query_one(ChoiceList).expecting:
            self.query_one(ChoiceList).close()
        view = self.query_one(StoryView)
        if not view.welcome:  # from the first story the worker opens on: an empty one shows it
            view.set_welcome(welcome_text(home()))
        view.set_runs([(a, t) for a, t in ev.runs])
        self._last_turn_start = sum(len(t) for _, t in ev.runs[:-1])  # a reset has one run per turn
        self._turn_ended = True
        self.turns = [ShownTurn(tid, a, t) for tid, (a, t) in zip(ev.ids, ev.runs, strict=False)]
        self.last_version = tuple(ev.versions[-1]) if ev.versions else (1, 1)

    def _on_appended(self, ev: p.Appended) -> None:
        view = self.query_one(StoryView)
        if self._turn_ended:
            self._last_turn_start, self._turn_ended = len(view.text), False
            self.turns.append(ShownTurn(0, ev.author, ""))
        self.turns[-1].text += ev.text
        view.append(ev.text, ev.author, ev.probs)
        if self.writing and ev.author == "model":
            self._gen_chars += len(ev.text)

    def _on_generating(self, ev: p.Generating) -> None:
        self.query_one(CandidateList).close()
        if ev.id != self.query_one(ChoiceList).expecting:
            self.query_one(ChoiceList).close()
        self.writing, self._gen_chars, self._gen_started = True, 0, time.monotonic()
        self._pause_training()

    def _on_choice(self, ev: p.Choice) -> None:
        choices = self.query_one(ChoiceList)
        if ev.id == choices.expecting:
            choices.add(ev.row, ev.text)
        if self.writing:
            self._gen_chars += len(ev.text)

    def _on_kept(self, ev: p.Kept) -> None:
        choices = self.query_one(ChoiceList)
        if ev.id == choices.expecting:
            choices.kept(ev.turns)
            self.writing = False

    def _on_committed(self, ev: p.Committed) -> None:
        self._turn_ended = True
        if self.turns:
            self.turns[-1].id = ev.turn
        self.last_version = tuple(ev.version)
        if ev.author == "model":
            self.writing = False
            self._resume_training()
        if self.snapshot is not None:
            self.snapshot = p.Snapshot(**{**vars(self.snapshot), "turns": ev.turns, "chars": ev.chars})
        self._show_counts(ev.turns, ev.chars)

    def _on_snapshot(self, ev: p.Snapshot) -> None:
        first = self.snapshot is None
        self.snapshot = ev
        self.story_name = ev.story
        self.query_one(ModelCard).show(ev.card, adaptation=ev.adaptation)
        self._show_settings()
        self.query_one("#title", Static).update(f"charterm  story: {ev.story}  model: {ev.card['name']}")
        if first and not self.writing:
            self._set_status(f"{self._counts(ev.turns, ev.chars)}. Type, then Enter.")

    def _on_notice(self, ev: p.Notice) -> None:
        self.notify(ev.text, severity=ev.severity, timeout=6, markup=False)

    def _on_error(self, ev: p.Error) -> None:
        if ev.id in self._typing:  # learning ahead is best effort: Enter learns the turn anyway
            return
        if ev.id == self.query_one(CandidateList).expecting:
            self.query_one(CandidateList).close()
        if ev.id == self.query_one(ChoiceList).expecting:
            self.query_one(ChoiceList).close()
        self.notify(ev.text, severity="error", timeout=8, markup=False)
        self._set_status(ev.text)
        if self.snapshot is None:
            self.query_one(ModelCard).show(None, "no model loaded: /model PATH")

    def _on_stories(self, ev: p.Stories) -> None:
        listing = "\n".join(f"{r['name']}  ({r['turns']} turns, {r['chars']:,} chars)" for r in ev.stories[:15])
        self.notify(listing or "no stories yet", title="stories", timeout=10, markup=False)

    def _on_candidates(self, ev: p.Candidates) -> None:
        words = self.query_one(CandidateList)
        if ev.id == words.expecting:
            words.show(ev.words)

    def _on_turns(self, ev: p.Turns) -> None:
        if ev.id == self._tree_request:
            self._tree_request = None
            self.push_screen(ForkScreen(ev.turns), self._checkout)

    def _on_done(self, ev: p.Done) -> None:
        if ev.id in self._typing:
            self._typing.discard(ev.id)
            return
        self.pending.discard(ev.id)
        if self._unconfirmed.pop(ev.id, None) is not None:
            self._show_settings()
        if not self.pending:
            self.writing = False
            self._resume_training()
            self._show_counts()

    @on(WorkerExited)
    def _worker_exited(self, message: WorkerExited) -> None:
        if message.client is not self.client or self.quitting:
            return
        how = f"killed by signal {-message.code}" if (message.code or 0) < 0 else f"exit {message.code}"
        why = f"{how}: {message.why}" if message.why else how
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > RESTARTS:
            self.notify(f"the model worker keeps stopping ({why}); restart charterm", severity="error", timeout=30)
            self._set_status(f"the model worker stopped ({why})")
            return
        self.notify(f"the model worker stopped ({why}); restarting it", severity="warning", timeout=8, markup=False)
        self.client = start_worker(self.story_name, None, self.precision, self.in_thread)
        self.snapshot, self.pending, self.writing, self._unconfirmed = None, {OPEN_ID}, False, {}
        self._resume_training()
        self._listen(self.client)

    def _send_typing(self) -> None:
        """The prompt's story text as typed so far, for the worker to learn ahead of Enter."""
        text = self.query_one(PromptInput).text
        if text == self._typed or self.snapshot is None or self.editing is not None or text.lstrip().startswith("/"):
            return
        self._typed = text
        if text.strip():
            self._typing.add(self.client.send(p.Typing, text=commands.unescape(text)))

    def _show_progress(self) -> None:
        if self.writing:
            rate = self._gen_chars / max(1e-3, time.monotonic() - self._gen_started)
            self._set_status(f"writing... {self._gen_chars:,} chars, {rate:,.0f} chars/s (Esc stops)")

    # --- what the person typed ----------------------------------------------------------------

    @on(PromptInput.Submitted)
    def _prompt_submitted(self, event: PromptInput.Submitted) -> None:
        value = event.value
        if self.editing is not None:
            self._save_edit(value)
            return
        if value.strip().startswith("/"):
            self.run_command(value)
            return
        self._stop_model()  # typing while the model writes: stop it, then add
        self._pause_training()  # from now: the model reads the turn, then writes its own
        self._send(p.Write, text=commands.unescape(value))
        self._typed = ""
        if self.snapshot is None:
            self._set_status("the model is still loading; your input is queued")

    def run_command(self, line: str) -> None:
        """Run a /command line as if it was typed (what is wrong with it is a notice)."""
        try:
            self._command(*commands.parse(line))
        except CharTermError as e:
            self.notify(str(e), severity="error", markup=False)

    def start_command(self, start: str) -> None:
        """Put the start of a /command in the prompt, for the person to finish."""
        prompt = self.query_one(PromptInput)
        prompt.set_text(start)
        prompt.focus()

    @on(SettingsPanel.Changed)
    def _setting_changed(self, event: SettingsPanel.Changed) -> None:
        try:
            self._set_setting(event.field, event.value)
        except CharTermError as e:
            self.notify(str(e), severity="error", markup=False)
            self._show_settings()

    @on(CandidateList.Picked)
    def _word_picked(self, event: CandidateList.Picked) -> None:
        self._send(p.Pick, text=event.text)
        self.action_next_words()

    @on(ChoiceList.Picked)
    def _choice_picked(self, event: ChoiceList.Picked) -> None:
        self.query_one(ChoiceList).close()
        self._send(p.PickChoice, turn=event.turn)

    @on(TrainingUpdate)
    def _training_event(self, message: TrainingUpdate) -> None:
        self._training_update(message.event)

    # --- actions ------------------------------------------------------------------------------

    def action_next_words(self) -> None:
        """Offer the words the model would write next (stopping it first if it is writing)."""
        self._stop_model()
        self.query_one(CandidateList).wait_for(self._send(p.Next, words=self.next_count))

    def action_choices(self) -> None:
        """The model writes `choices_count` continuations at once, shown as they are written (stopping it
        first if it is writing); 1-K picks one."""
        self._stop_model()
        self.query_one(CandidateList).close()
        k = self.choices_count
        self.query_one(ChoiceList).wait_for(self._send(p.Choices, k=k), k)

    def action_stop(self) -> None:
        if self.query_one(CandidateList).close():
            return
        choices = self.query_one(ChoiceList)
        if choices.display and not choices.writing:  # written: Esc closes the list, the first choice stays
            choices.close()
            return
        if self.writing or self.pending:
            self._send(p.Stop)
            self._set_status("stopped")
        elif isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        elif isinstance(self.screen, ModalScreen):
            raise SkipAction()  # the command palette's (and the fork list's) own Esc closes it
        elif self.editing is not None:
            self._end_edit()
            self._show_counts()

    def action_undo(self) -> None:
        self._stop_model()
        self._send(p.Undo)

    def action_redo(self) -> None:
        self._stop_model()
        self._send(p.Redo)

    def action_retry(self) -> None:
        self._stop_model()
        self._send(p.Retry)

    def action_version(self, step: int) -> None:
        """Show the version of the last turn `step` (-1, +1) from the one shown."""
        self._stop_model()
        self._send(p.Version, step=step)

    def action_fork(self) -> None:
        """Ask for the story's turns; the list opens with the answer (Ctrl+F again closes it)."""
        if isinstance(self.screen, ForkScreen):
            self.screen.dismiss()
            return
        self._stop_model()
        self._tree_request = self._send(p.Tree)

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
        """Let the worker commit what was shown and leave; stop training."""
        self.quitting = True
        if self.client is not None:
            self.client.close(timeout)
        if self.job is not None:
            with contextlib.suppress(Exception):
                self.job.cancel()

    def _hangup(self) -> None:
        """The terminal went away (a dropped SSH connection): save and leave."""
        self._save_and_stop(timeout=3.0)
        os._exit(129)

    # --- small helpers ------------------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self.query_one("#status-line", Static).update(text)

    def _counts(self, turns: int, chars: int) -> str:
        """'4 turns, 332 chars', with the last turn's version when it has others: ', version 2/3'."""
        k, n = self.last_version
        return f"{turns} turns, {chars:,} chars" + (f", version {k}/{n}" if n > 1 else "")

    def _show_counts(self, turns: int | None = None, chars: int | None = None) -> None:
        """The story's counts on the status line (the snapshot's by default), or what to do while editing."""
        if self.editing is not None:
            self._set_status(EDITING.format(self.editing))
        elif turns is not None:
            self._set_status(self._counts(turns, chars))
        elif self.snapshot is not None:
            self._set_status(self._counts(self.snapshot.turns, self.snapshot.chars))

    def on_resize(self, event) -> None:
        if event.size.width < NARROW:
            self.query_one("#side").display = False
        if event.size == self.screen.outer_size:
            # Back at the size the screen is laid out for (a burst of resizes, or sizes the app was too busy
            # to see): Textual repaints only what a new layout changes, so here nothing, yet the terminal
            # dropped or shifted lines as it resized and frames may have landed in it at another size.
            # Repaint it all. (A new size is repainted whole by Textual's layout at that size.)
            self.refresh()

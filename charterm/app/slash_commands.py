"""What each `/command` does in the app (the table of commands is `charterm.app.commands`)."""

from dataclasses import dataclass

from charterm.app import commands
from charterm.app.preferences import save_preference
from charterm.app.story_view import WRAPS, StoryView
from charterm.app.widgets import PromptInput, SettingsPanel
from charterm.errors import UsageError
from charterm.worker import protocol as p

EDITING = "editing turn {}: Enter saves it as a new version, Esc cancels"


@dataclass
class ShownTurn:
    """A turn of the story as shown: its id (0 until it is committed), who wrote it, and its text."""

    id: int
    author: str
    text: str


class SlashCommands:
    """The `/command` handlers of `CharTermApp` (a mixin: `self` is the app)."""

    def _command(self, name: str, arg: str) -> None:
        simple = {
            "help": self.action_help,
            "undo": self.action_undo,
            "redo": self.action_redo,
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
        elif name == "adapt" and arg.strip().lower() == "reset":
            self._send(p.ResetAdaptation)
        elif name in ("ban", "unban"):
            self._ban(name, arg)
        elif name in commands.SETTING_COMMANDS:
            self._set_setting(name, arg)
        elif name == "model":
            self._switch_model(arg)
        elif name == "follow":
            self._set_follow(arg)
        elif name == "version":
            self.action_version(commands.parse_version(arg))
        elif name == "fork":
            self._fork(arg)
        elif name == "edit":
            self._start_edit(arg)
        elif name == "next":
            self.next_count = commands.parse_words(arg, self.next_count)
            self.action_next_words()
        elif name == "choices":
            self.choices_count = commands.parse_choices(arg, self.choices_count)
            self.action_choices()
        elif name == "shade":
            self._set_shade(arg)
        elif name == "story":
            self._open_story(arg)
        elif name == "export":
            path, fmt = commands.parse_export(arg)
            self._send(p.Export, path=path, format=fmt)
        elif name == "train":
            self._start_training(arg)
        elif name == "wrap":
            self._set_wrap(arg)
        elif name == "copy":
            self._copy(arg)

    def _set_setting(self, key: str, raw: str) -> None:
        from charterm.settings import parse_setting

        field, value = parse_setting(key, raw)  # checked here for a quick answer, and again by the worker
        self._unconfirmed[self._send(p.SetSetting, field=field, value=raw)] = (field, value)
        self._show_settings()
        self._set_status(f"{key} = {raw.strip()}")

    def _ban(self, name: str, arg: str) -> None:
        """/ban TEXT adds a banned text, /unban TEXT lifts it, /ban alone lists them (saved with the story)."""
        import json

        shown = {**(self.snapshot.settings if self.snapshot else {}), **dict(self._unconfirmed.values())}
        bans = list(shown.get("bans", ()))
        if name == "ban" and not arg:
            listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in bans)
            self.notify(listing or "nothing is banned: /ban TEXT bans a text", title="bans", timeout=10, markup=False)
            return
        text = commands.parse_ban(name, arg)
        if (name == "ban") == (text in bans):
            word = "already" if name == "ban" else "not"
            self.notify(f"{json.dumps(text, ensure_ascii=False)} is {word} banned", markup=False)
            return
        bans = [*bans, text] if name == "ban" else [t for t in bans if t != text]
        self._set_setting("bans", json.dumps(bans))
        self._set_status(f"{name}ned {json.dumps(text, ensure_ascii=False)}: {len(bans)} banned")

    def _show_settings(self) -> None:
        """The worker's settings, with the ones sent and not yet applied (it applies them in turn)."""
        if self.snapshot is not None:
            self.query_one(SettingsPanel).show({**self.snapshot.settings, **dict(self._unconfirmed.values())})

    def _switch_model(self, path: str) -> None:
        if not path:
            raise UsageError("/model needs a path: /model models/other.safetensors")
        if path != self.trained_path:
            self.in_use_score = None  # not scored on the training run's text
        self._send(p.SwitchModel, path=path)

    def _set_follow(self, arg: str) -> None:
        if arg not in ("on", "off"):
            raise UsageError("/follow on or /follow off")
        self.follow = arg == "on"
        self.notify(f"follow training: {arg}")
        if self.follow and self.trained_path:
            self.action_load_trained()

    def _set_wrap(self, arg: str) -> None:
        if arg not in WRAPS:
            raise UsageError("/wrap soft (paragraphs fill the pane) or /wrap hard (the text's own line breaks)")
        self.query_one(StoryView).set_wrap(arg)
        self._remember("wrap", arg)
        self.notify(f"wrap: {arg}")

    def _copy(self, arg: str) -> None:
        """The story's text (or its last turn's) to the clipboard, through the terminal (OSC 52)."""
        if arg not in ("", "last"):
            raise UsageError("/copy copies the story, /copy last its last turn")
        text = self.query_one(StoryView).text
        if arg == "last":
            text = text[self._last_turn_start :]
        if not text:
            self.notify("nothing to copy yet")
            return
        self.copy_to_clipboard(text)
        what = "the last turn" if arg else "the story"
        self.notify(f"copied {what} to the clipboard: {len(text):,} chars", markup=False)

    def _remember(self, key: str, value: str) -> None:
        """Keep a preference for the next runs (written only when it changes)."""
        if self.preferences.get(key) != value:
            self.preferences[key] = value
            save_preference(key, value)

    def _set_shade(self, arg: str) -> None:
        if arg not in ("on", "off"):
            raise UsageError("/shade on or /shade off")
        self.query_one(StoryView).show_shade(arg == "on")
        marks = "underlined: the model was under 20% sure of the char; reversed: under 5%"
        self.notify(f"shade on ({marks})" if arg == "on" else "shade off")

    def _fork(self, arg: str) -> None:
        """/fork: the list of the story's turns; /fork N: go to turn N at once."""
        if arg:
            self._checkout(commands.parse_turn("fork", arg))
        else:
            self.action_fork()

    def _checkout(self, turn_id: int | None) -> None:
        """Make the path to the turn the story (0: before the first; None: the list was closed)."""
        if turn_id is not None:
            self._stop_model()
            self._send(p.Checkout, turn=turn_id)

    def _start_edit(self, arg: str) -> None:
        """Put a turn's text in the prompt (`arg`: its id; none: the person's last turn) for Enter to save."""
        turn = self._turn_to_edit(arg)
        self._stop_model()
        prompt = self.query_one(PromptInput)
        self.editing, self._draft = turn.id, prompt.text
        prompt.set_text(commands.escape(turn.text))
        prompt.focus()
        self._set_status(EDITING.format(turn.id))

    def _turn_to_edit(self, arg: str) -> ShownTurn:
        if not arg:
            mine = [t for t in self.turns if t.author == "person" and t.id]
            if not mine:
                raise UsageError("no turn of yours to edit yet: /edit N edits turn N (/fork lists them)")
            return mine[-1]
        turn_id = commands.parse_turn("edit", arg)
        turn = next((t for t in self.turns if t.id == turn_id and t.id), None)
        if turn is None:
            raise UsageError(f"turn {turn_id} is not in the story shown: /fork lists its turns")
        return turn

    def _save_edit(self, value: str) -> None:
        text = commands.unescape(value)
        if not text:
            self.notify("an edited turn needs some text: type it, or Esc to cancel", severity="error")
            return
        self._send(p.Edit, turn=self.editing, text=text)
        self._end_edit()

    def _end_edit(self) -> None:
        """Leave editing: the prompt holds what it held before."""
        self.editing = None
        self.query_one(PromptInput).set_text(self._draft)
        self._draft = ""

    def _open_story(self, name: str) -> None:
        if not name:
            self._send(p.ListStories)
            return
        from charterm.story.store import check_name

        self._stop_model()
        self._send(p.Open, story=check_name(name), model=None, precision=self.precision)

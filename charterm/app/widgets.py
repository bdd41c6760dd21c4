"""The app's small widgets: the prompt, the model card, the sampling settings, the next words."""

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from charterm.app.commands import complete
from charterm.app.preferences import InputHistory


class PromptInput(TextArea):
    """What the person types at the bottom: story text (several lines if need be), or a /command.

    Enter sends it. Shift+Enter (where the terminal tells it from Enter), Ctrl+J or Alt+Enter start a new line,
    and a paste keeps its newlines. Up on the first line and Down on the last go through the inputs sent before.
    Tab completes a /command; the completion shows greyed after the cursor (Right takes it too).
    """

    class Submitted(Message):
        """Enter was pressed: `value` is what the prompt held (the prompt is empty again)."""

        def __init__(self, prompt: "PromptInput", value: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.value = value

    NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")

    def __init__(self, input_history: InputHistory | None = None, **kw) -> None:
        super().__init__(
            placeholder="Type to add to the story, Enter to let the model continue; /help for commands",
            compact=True,
            highlight_cursor_line=False,
            **kw,
        )
        self.input_history = input_history or InputHistory()

    def on_key(self, event: events.Key) -> None:
        """Enter, the new-line keys and Tab, taken in turn with the keys typed before them (a binding would run
        before the chars of the same burst are in the prompt: "Anna" and Enter sent at once would send "")."""
        if event.key == "enter":
            action = self.action_submit
        elif event.key in self.NEWLINE_KEYS:
            action = self.action_newline
        elif event.key == "tab":
            action = self.action_complete
        else:
            return
        event.prevent_default()
        event.stop()
        action()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Ctrl+Z and Ctrl+Y undo and redo the story's turns (the app's keys), never an edit here."""
        return action not in ("undo", "redo") and super().check_action(action, parameters)

    def action_submit(self) -> None:
        value = self.text
        self.input_history.add(value)
        self.clear()
        self.post_message(self.Submitted(self, value))

    def action_newline(self) -> None:
        self.replace("\n", *self.selection)

    def action_complete(self) -> None:
        suggestion = complete(self.text)
        if suggestion:
            self.set_text(suggestion)
        elif not self.text.startswith("/"):
            self.screen.focus_next()

    def update_suggestion(self) -> None:
        completion = complete(self.text) if self.cursor_at_end_of_text else None
        self.suggestion = completion[len(self.text) :] if completion and completion.startswith(self.text) else ""

    def action_cursor_up(self, select: bool = False) -> None:
        if select or not self.cursor_at_first_line or not self._recall(self.input_history.older(self.text)):
            super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if select or not self.cursor_at_last_line or not self._recall(self.input_history.newer()):
            super().action_cursor_down(select)

    def _recall(self, entry: str | None) -> bool:
        if entry is None:
            return False
        self.set_text(entry)
        return True

    def set_text(self, text: str) -> None:
        """Put `text` in the prompt, the cursor at its end."""
        self.text = text
        self.move_cursor(self.document.end)


class ModelCard(Static):
    """Name, size and validation loss of the model in use."""

    def show(self, card: dict | None, status: str = "", adaptation: dict | None = None) -> None:
        if card is None:
            self.update(status or "loading the model...")
            return
        val = card.get("val_loss")
        lines = [
            card["name"],
            f"{card['cell'].upper()} {card['hidden']}x{card['layers']}, {card['params'] / 1e6:.2f}M params",
            f"val loss {val:.4f}" if isinstance(val, float) else "val loss unknown",
        ]
        if adaptation:
            lines.append(adaptation_line(adaptation))
        if status:
            lines.append(status)
        self.update("\n".join(lines))


def adaptation_line(a: dict) -> str:
    """What the model has learned of the story, in one line: 'learned 1,234 chars, 3.1% better'."""
    if not a.get("on"):
        return "adapting: off (/adapt on)"
    if not a.get("chars"):
        return "adapting: nothing learned yet"
    gain = 100 * a.get("gain", 0.0)
    return f"learned {a['chars']:,} chars, {abs(gain):.1f}% {'better' if gain >= 0 else 'worse'}"


class SettingsPanel(Vertical):
    """top-k, temperature, chars per turn and stop, editable: Enter (or leaving the field) applies."""

    class Changed(Message):
        def __init__(self, field: str, value: str) -> None:
            super().__init__()
            self.field = field
            self.value = value

    FIELDS = (("top_k", "top-k"), ("temperature", "temp"), ("chars", "chars"), ("stop_at", "stop"))

    def compose(self) -> ComposeResult:
        for row in (self.FIELDS[:2], self.FIELDS[2:]):  # two to a line: the side pane is short at 80x24
            with Horizontal(classes="setting"):
                for field, label in row:
                    yield Label(label, classes="setting-label")
                    yield Input(id=f"set-{field}", compact=True, select_on_focus=True)

    def show(self, settings: dict) -> None:
        for field, _ in self.FIELDS:
            widget = self.query_one(f"#set-{field}", Input)
            if not widget.has_focus:
                widget.value = str(settings[field])
        self._shown = dict(settings)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._apply(event.input)
        self.app.set_focus(self.app.query_one(PromptInput))

    @on(Input.Blurred)
    def _blurred(self, event: Input.Blurred) -> None:
        self._apply(event.input)

    def _apply(self, widget: Input) -> None:
        field = (widget.id or "").removeprefix("set-")
        shown = getattr(self, "_shown", {})
        value = widget.value.strip()
        if field in shown and value != str(shown[field]):
            shown[field] = value  # the blur that follows an Enter must not apply it again
            self.post_message(self.Changed(field, value))


class PickList(OptionList):
    """A list under the story that 1-9, or the arrows and Enter, picks from (`pick`); typing anything
    else closes it and goes back to the prompt with what was typed. Hidden until shown."""

    def __init__(self, **kw) -> None:
        super().__init__(markup=False, compact=True, **kw)
        self.expecting: int | None = None  # the id of the request whose answer it shows
        self.display = False

    def pick(self, index: int) -> None:
        raise NotImplementedError

    def forget(self) -> None:
        """Drop what it shows (on close)."""

    def close(self) -> bool:
        """Hide the list and give the prompt its focus back; whether it was shown."""
        shown, self.display, self.expecting = self.display, False, None
        self.forget()
        if shown:
            self.app.set_focus(self.app.query_one(PromptInput))
        return shown

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.pick(event.option_index)

    def on_key(self, event: events.Key) -> None:
        if event.character and event.character in "123456789":
            event.stop()
            self.pick(int(event.character) - 1)
        elif event.is_printable and event.character:
            event.stop()
            self.close()
            self.app.query_one(PromptInput).insert(event.character)


class CandidateList(PickList):
    """The words the model would most likely write next, with how likely each is. 1-9, or the arrows and Enter,
    picks one; typing anything else goes back to the prompt (with what was typed); `close()` hides it."""

    class Picked(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.words: list[str] = []

    def wait_for(self, request_id: int) -> None:
        """Show the answer to the `next` request `request_id` when it comes (until then, the words shown before)."""
        self.expecting, self.words = request_id, []
        if not self.display:
            self.set_options([Option("finding the words the model would write next...", disabled=True)])
            self.display = True
        self.focus()

    def show(self, words: list[dict]) -> None:
        self.words = [w["text"] for w in words]
        width = max((len(shown_word(t)) for t in self.words), default=0)
        rows = [f"{i}  {shown_word(w['text']):<{width}}  {100 * w['p']:5.1f}%" for i, w in enumerate(words, 1)]
        self.set_options(rows or [Option("the model has no next word here", disabled=True)])
        self.highlighted = 0 if rows else None

    def forget(self) -> None:
        self.words = []

    def pick(self, index: int) -> None:
        if 0 <= index < len(self.words):
            self.post_message(self.Picked(self.words[index]))
            self.words = []  # until the next ones come: a second key press must not pick from this list again


def shown_word(text: str) -> str:
    """A word as the list shows it: a new line or a tab as a visible sign."""
    return text.replace("\n", "⏎").replace("\t", "⇥")

"""The app's small widgets: the prompt line, the model card, the sampling settings, the next words."""

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from charterm.app.commands import CommandSuggester, complete


class PromptInput(Input):
    """The line at the bottom: story text, or a /command. Tab completes a command."""

    BINDINGS = [Binding("tab", "complete", "complete", show=False, priority=True)]

    def __init__(self, **kw) -> None:
        super().__init__(
            placeholder="Type to add to the story, Enter to let the model continue; /help for commands",
            suggester=CommandSuggester(),
            compact=True,
            select_on_focus=False,
            **kw,
        )

    def action_complete(self) -> None:
        suggestion = complete(self.value)
        if suggestion:
            self.value = suggestion
            self.cursor_position = len(suggestion)
        elif not self.value.startswith("/"):
            self.screen.focus_next()


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


class CandidateList(OptionList):
    """The words the model would most likely write next, with how likely each is. 1-9, or the arrows and Enter,
    picks one; typing anything else goes back to the prompt (with what was typed); `close()` hides it."""

    class Picked(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kw) -> None:
        super().__init__(markup=False, compact=True, **kw)
        self.words: list[str] = []
        self.expecting: int | None = None  # the id of the `next` request whose answer it shows
        self.display = False

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

    def close(self) -> bool:
        """Hide the list and give the prompt its focus back; whether it was shown."""
        shown, self.display, self.expecting, self.words = self.display, False, None, []
        if shown:
            self.app.set_focus(self.app.query_one(PromptInput))
        return shown

    def pick(self, index: int) -> None:
        if 0 <= index < len(self.words):
            self.post_message(self.Picked(self.words[index]))
            self.words = []  # until the next ones come: a second key press must not pick from this list again

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
            self.app.query_one(PromptInput).insert_text_at_cursor(event.character)


def shown_word(text: str) -> str:
    """A word as the list shows it: a new line or a tab as a visible sign."""
    return text.replace("\n", "⏎").replace("\t", "⇥")

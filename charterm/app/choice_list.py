"""The choices the model writes at once (Ctrl+O, /choices K), stacked below the story as they are written."""

from textual import on
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from charterm.app.widgets import PickList

MAX_LINES = 12  # screen lines the list takes at most (its max-height in charterm.tcss)
WIDE = 4  # screen lines a choice takes at most while it is not the one highlighted


class ChoiceList(PickList):
    """K continuations, one option each, a few lines each: while they are written each shows the end of its
    text; once kept, the highlighted one shows all of it and the others their start. 1-K, or the arrows and
    Enter, picks one; typing anything else goes back to the prompt (with what was typed); `close()` hides it."""

    class Picked(Message):
        def __init__(self, turn: int, row: int) -> None:
            super().__init__()
            self.turn = turn  # the turn id of the choice picked
            self.row = row

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.texts: list[str] = []
        self.turns: list[int] = []  # each row's turn id once the choices are kept (0: it wrote nothing)

    @property
    def writing(self) -> bool:
        return self.expecting is not None and not self.turns

    def wait_for(self, request_id: int, k: int) -> None:
        """Show the rows of the `choices` request `request_id` as they come."""
        self.expecting, self.texts, self.turns = request_id, [""] * k, []
        self.set_options([Option(self._prompt(i)) for i in range(k)])
        self.border_title = f"writing {k} choices (Esc stops them)"
        self.highlighted = 0
        self.display = True
        self.focus()

    def add(self, row: int, text: str) -> None:
        if 0 <= row < len(self.texts):
            self.texts[row] += text
            self.replace_option_prompt_at_index(row, self._prompt(row))

    def kept(self, turns: list[int]) -> None:
        """The choices are saved: rows can be picked now."""
        self.turns = list(turns) + [0] * (len(self.texts) - len(turns))
        if not any(self.turns):
            self.close()
            return
        self.border_title = f"1-{len(self.texts)} (or arrows, Enter) picks one; Esc keeps choice 1"
        self._redraw()

    def forget(self) -> None:
        self.texts, self.turns = [], []

    def pick(self, row: int) -> None:
        if not self.writing and 0 <= row < len(self.turns) and self.turns[row]:
            self.post_message(self.Picked(self.turns[row], row))

    def _redraw(self) -> None:
        for i in range(len(self.texts)):
            self.replace_option_prompt_at_index(i, self._prompt(i))

    def _prompt(self, row: int) -> str:
        """'2  the text...': the end of it while it is written; once kept, all of the highlighted one, the start
        of the others."""
        text = " ".join(self.texts[row].replace("\n\n", " ¶ ").split())
        if not text:
            return f"{row + 1}  " + ("(writing...)" if self.writing else "(wrote nothing)")
        lines = max(1, min(WIDE, MAX_LINES // max(1, len(self.texts))))
        budget = lines * max(20, (self.size.width or 80) - 6) - 1
        if len(text) > budget:
            if self.writing:
                text = "…" + text[-budget:]
            elif row != self.highlighted:
                text = text[:budget] + "…"
        return f"{row + 1}  {text}"

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if not self.writing and self.texts:
            self._redraw()  # the highlighted one shows all of its text

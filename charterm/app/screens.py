"""The help screen (every key and /command on one page), the list of the story's turns (/fork), and the welcome
an empty story shows."""

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from charterm.app.commands import COMMANDS, KEYS
from charterm.app.widgets import shown_word


def help_text() -> str:
    width = max(len(k) for k, _ in KEYS)
    lines = ["Keys", ""]
    lines += [f"  {key:<{width}}  {what}" for key, what in KEYS]
    lines += ["", "Commands (Tab completes)", ""]
    for c in COMMANDS:
        lines.append(f"  /{c.name} {c.args}".rstrip())
        lines.append(f"      {c.help}")
    lines += ["", r"In your text, \n is a new line, \t a tab, \\ a backslash.", "", "Esc or F1 closes this page."]
    return "\n".join(lines)


WELCOME_KEYS = ("Enter", "Esc, Ctrl+C", "Ctrl+Z", "F1")


def welcome_text(data_dir: Path) -> str:
    """What to type, the keys that matter most, and where the stories are saved."""
    keys = dict(KEYS)
    lines = [
        "Type the start of a story below and press Enter: the model goes on from there, char by char. "
        "Then it is your turn again.",
        "",
        *(f"{key}  {keys[key]}" for key in WELCOME_KEYS),
        "",
        f"Every turn is saved as it ends, in {shown_path(data_dir)}",
    ]
    return "\n".join(lines)


def shown_path(path: Path) -> str:
    """`path`, with the user's home folder as ~."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class HelpScreen(ModalScreen):
    BINDINGS = [
        Binding("escape,f1,q", "dismiss", "Close", priority=True),
        Binding("pageup", "scroll('up')", show=False),
        Binding("pagedown", "scroll('down')", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(), markup=False)

    def action_scroll(self, direction: str) -> None:
        box = self.query_one("#help", VerticalScroll)
        (box.scroll_page_up if direction == "up" else box.scroll_page_down)(animate=False)


MAX_INDENT = 12  # levels: the rows of a story with many branches stay readable
FORK_HELP = "The story's turns (*: the story as shown). Enter goes to one, and what you write next branches there."


def turn_rows(turns: list[dict]) -> list[tuple[int, str]]:
    """The rows of the fork list, as (turn id, text), depth first, oldest branch first, laid out as
    `charterm stories show NAME --tree` does: a turn with others beside it says which version it is ([k/n]), and
    the versions of a place are indented under the turn they leave; `*` marks the story's path."""
    kids: dict[int, list[dict]] = {}
    for t in turns:  # oldest first: versions in the order they were written
        kids.setdefault(t["parent"], []).append(t)
    before = " " if any(t["current"] for t in turns) else "*"
    rows = [(0, f"{before}    0  (before the first turn)")]
    stack = [(t, 0) for t in reversed(kids.get(0, []))]
    while stack:
        turn, indent = stack.pop()
        siblings = kids[turn["parent"]]
        version = f"[{siblings.index(turn) + 1}/{len(siblings)}] " if len(siblings) > 1 else ""
        rows.append((turn["id"], _row(turn, indent, version)))
        children = kids.get(turn["id"], [])
        stack.extend((child, indent + (len(children) > 1)) for child in reversed(children))
    return rows


def _row(turn: dict, indent: int, version: str) -> str:
    mark = "*" if turn["current"] else " "
    start = shown_word(turn["start"]) + ("..." if turn["chars"] > len(turn["start"]) else "")
    return f"{mark} {turn['id']:>4}  {turn['author']:<6}  {'  ' * min(indent, MAX_INDENT)}{version}{start}"


class ForkScreen(ModalScreen[int | None]):
    """The story's turns as a list: Up/Down and Enter choose one (the screen's result: its id), Esc closes."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, turns: list[dict]) -> None:
        super().__init__()
        self.rows = turn_rows(turns)
        current = {t["id"] for t in turns if t["current"]}
        path = [i for i, (tid, _) in enumerate(self.rows) if tid in current]
        self.start = path[-1] if path else 0  # the story's last turn: the path's last row, depth first

    def compose(self) -> ComposeResult:
        with Vertical(id="fork"):
            yield Static(FORK_HELP, id="fork-help", markup=False)
            yield OptionList(*(Option(text, id=str(tid)) for tid, text in self.rows), markup=False, compact=True)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = self.start
        options.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(int(event.option.id))

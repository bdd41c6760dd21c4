"""The help screen (every key and /command on one page), and the welcome an empty story shows."""

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from charterm.app.commands import COMMANDS, KEYS


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

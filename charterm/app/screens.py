"""The help screen: every key and /command on one page."""

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

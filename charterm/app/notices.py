"""The notices: what the app tells the person (`App.notify`), in rows of their own just above the
status line. They take their place in the layout, so they cover nothing (the story moves up to
keep its end in view); each says all it says, at the screen's width, for its timeout (a click
dismisses it)."""

from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.notifications import Notification
from textual.widgets import Static


class ShowNotice(Message):
    """Posted by `notify` (so it may be called from any thread, as Textual's)."""

    def __init__(self, notification: Notification) -> None:
        super().__init__()
        self.notification = notification


class Notice(Static):
    """One notice: its title in bold on a line of its own (if it has one), then its message."""

    def __init__(self, notification: Notification) -> None:
        n = notification
        text = Content.from_markup(n.message) if n.markup else Content(n.message)
        if n.title:
            text = Content.assemble((n.title, "bold"), "\n", text)
        super().__init__(text, classes=f"-{n.severity}")
        self.notification = notification

    def on_mount(self) -> None:
        self.set_timer(max(self.notification.timeout, 0.1), self.remove)

    def on_click(self) -> None:
        self.remove()


class NoticeBand(Vertical):
    """The notices shown, newest last; no rows at all when there are none."""

    def add(self, notification: Notification) -> None:
        self.mount(Notice(notification))
        self.call_after_refresh(self.scroll_end, animate=False)

    def clear(self) -> None:
        self.remove_children()

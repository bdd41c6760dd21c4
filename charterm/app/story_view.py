"""The story pane: a person and the model write one text together.

`StoryView` is a Line-API widget (a `ScrollView` that renders one display line at a time), so a story of
hundreds of KB costs nothing to show, and an append re-wraps only the last logical line. The person's text is
bold and coloured, the model's plain, so the two stay apart without colour.

What the story's text looks like on screen is decided in two steps, the same for a whole story and for one
streamed char: `split_lines` cuts the text into logical lines at the newlines that end a line on screen (every
newline with hard wrap; with soft wrap, the default, only the blank lines between paragraphs), and `wrap_spans`
word-wraps each logical line to the pane (a newline left inside a paragraph shows as one space, so every char of
the story is one char on screen, tabs aside). The story itself is never changed.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from rich.cells import cell_len, get_character_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.actions import SkipAction
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

PERSON = "person"
MODEL = "model"
AUTHORS = (PERSON, MODEL)
WELCOME = "welcome"
"""The style of the text an empty story shows instead (a component class, like the authors')."""
WRAPS = ("soft", "hard")

TAB_SIZE = 4
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CHUNK = re.compile("([^ ]*)( *)")
_NEWLINE = re.compile("\n")
_PARAGRAPH_NEWLINE = re.compile("(?<=\n)\n|\n(?=\n)")

Span = tuple[str, str]
"""(author, text) of a piece of one logical line; with shading on, the author of a model char the model was unsure
of is one of SHADES' names."""

SHADES = ((0.05, "model-doubtful"), (0.2, "model-unsure"))
"""(p below which, style name): how the chars the model wrote are marked, by how sure it was of each."""


class _Line(NamedTuple):
    """One display line: the (author, text) pieces it shows, already sanitised."""

    segments: tuple[Span, ...]

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.segments)


def line_breaks(text: str, wrap: str, after_break: bool = False) -> list[int]:
    """Offsets of the newlines in `text` that end a line on screen.

    Hard wrap: every newline. Soft wrap: a newline next to another one (two or more make a blank line between
    paragraphs); a lone newline is inside a paragraph and shows as a space. `after_break`: the char before `text`
    is such a newline, so a newline at its start is one too. A newline at the very end is lone until the next char
    says otherwise: while the model writes, it shows as a space at the end of the line, which a word goes after
    and a second newline turns into a paragraph break; nothing already shown moves wrongly either way.
    """
    if wrap == "hard":
        return [m.start() for m in _NEWLINE.finditer(text)]
    before = "\n" if after_break else ""
    return [m.start() - len(before) for m in _PARAGRAPH_NEWLINE.finditer(before + text, len(before))]


def split_lines(spans: list[Span], wrap: str, after_break: bool = False) -> list[list[Span]]:
    """Cut (author, text) spans into logical lines at the newlines `line_breaks` finds (which are dropped).

    Lone newlines stay in their line (`wrap_spans` shows them as spaces). Returns at least one line; the last one
    is open: what is appended to the story goes on it.
    """
    breaks = line_breaks("".join(text for _, text in spans), wrap, after_break)
    lines: list[list[Span]] = [[]]
    offset = next_break = 0
    for author, text in spans:
        start = 0
        while next_break < len(breaks) and breaks[next_break] < offset + len(text):
            cut = breaks[next_break] - offset
            if cut > start:
                lines[-1].append((author, text[start:cut]))
            lines.append([])
            start, next_break = cut + 1, next_break + 1
        if start < len(text):
            lines[-1].append((author, text[start:]))
        offset += len(text)
    return lines


def _sanitise(spans: list[Span]) -> list[Span]:
    """Make a logical line safe to lay out.

    A newline (one left inside a soft-wrapped paragraph) becomes a space. A tab becomes spaces up to the next
    multiple of `TAB_SIZE` cells from the start of the logical line; any other control character (C0, DEL, C1)
    becomes U+FFFD.
    """
    out: list[Span] = []
    col = 0
    for author, text in spans:
        text = text.replace("\n", " ")
        if "\t" in text:
            pieces = []
            for i, piece in enumerate(text.split("\t")):
                if i:
                    pad = TAB_SIZE - col % TAB_SIZE
                    pieces.append(" " * pad)
                    col += pad
                piece = _CONTROL.sub("\ufffd", piece)
                pieces.append(piece)
                col += cell_len(piece)
            text = "".join(pieces)
        else:
            text = _CONTROL.sub("\ufffd", text)
            col += cell_len(text)
        out.append((author, text))
    return out


def _end_without_overflow(s: str, start: int, end: int, overflow: int) -> int:
    """Drop up to `overflow` trailing spaces of s[start:end] (spaces past the width at a line break)."""
    while overflow > 0 and end > start and s[end - 1] == " ":
        end -= 1
        overflow -= 1
    return end


def wrap_ranges(s: str, width: int) -> list[tuple[int, int]]:
    """Word-wrap one logical line `s` (no newlines, no control characters) to `width` cells.

    Breaks at spaces; a word wider than `width` is broken between characters (a character wider than the
    whole width gets a line of its own). Spaces at a break that do not fit are dropped.

    Returns:
        (start, end) offsets into `s`, one pair per display line; at least one pair.
    """
    width = max(1, width)
    ranges: list[tuple[int, int]] = []
    line_start = 0
    col = 0
    for match in _CHUNK.finditer(s):
        start, word_end, end = match.start(), match.end(1), match.end()
        if start == end:
            continue
        word = match.group(1)
        word_cells = cell_len(word)
        if col > 0 and col + word_cells > width:
            ranges.append((line_start, _end_without_overflow(s, line_start, start, col - width)))
            line_start, col = start, 0
        if word_cells > width:
            for i, char in enumerate(word, start):
                char_cells = get_character_cell_size(char)
                if col > 0 and col + char_cells > width:
                    ranges.append((line_start, i))
                    line_start, col = i, 0
                col += char_cells
        else:
            col += word_cells
        col += end - word_end
    ranges.append((line_start, _end_without_overflow(s, line_start, len(s), col - width)))
    return ranges


def wrap_spans(spans: list[Span], width: int) -> list[_Line]:
    """Wrap one logical line given as (author, text) spans into display lines."""
    spans = _sanitise(spans)
    text = "".join(t for _, t in spans)
    bounds = []
    offset = 0
    for author, piece in spans:
        bounds.append((offset, offset + len(piece), author, piece))
        offset += len(piece)
    lines = []
    first = 0
    for start, end in wrap_ranges(text, width):
        while first < len(bounds) and bounds[first][1] <= start:
            first += 1
        segments = []
        for lo, hi, author, piece in bounds[first:]:
            if lo >= end:
                break
            a, b = max(start, lo), min(end, hi)
            if b > a:
                segments.append((author, piece[a - lo : b - lo]))
        lines.append(_Line(tuple(segments)))
    return lines


class StoryView(ScrollView, can_focus=True):
    """The whole story, word-wrapped, with the person's text set apart from the model's.

    Text is shown literally (no markup). With soft wrap a newline inside a paragraph shows as a space; with hard
    wrap every newline starts a line. Tabs become spaces up to the next multiple of 4 cells from the start of the
    logical line; other control characters show as U+FFFD. An append keeps the view at the end if it was at the
    end (or within one line of it) and leaves it alone if the person had scrolled up. While the story is empty
    the view shows its welcome instead, if it was given one.
    """

    COMPONENT_CLASSES = {
        "story-view--person",
        "story-view--model",
        "story-view--welcome",
        *(f"story-view--{name}" for _, name in SHADES),
    }

    DEFAULT_CSS = """
    StoryView {
        background: $surface;
        color: $text;
        overflow-x: hidden;
        overflow-y: scroll;
        & > .story-view--person {
            color: $accent;
            text-style: bold;
        }
        & > .story-view--model {
            color: $text;
            text-style: none;
        }
        & > .story-view--welcome {
            color: $text-muted;
            text-style: none;
        }
        & > .story-view--model-unsure {
            color: $text-warning;
            text-style: underline;
        }
        & > .story-view--model-doubtful {
            color: $text-error;
            text-style: reverse;
        }
    }
    """

    def __init__(
        self,
        *,
        wrap: str = "soft",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        _check_wrap(wrap)
        self.wrap = wrap
        """"soft" (a newline inside a paragraph shows as a space) or "hard" (every newline starts a line)."""
        self.welcome = ""
        """What an empty story shows (`set_welcome`)."""
        self._runs: list[tuple[str, list[str]]] = []
        """(author, chunks) with neighbouring runs by different authors; chunks are joined lazily."""
        self._tail: list[Span] = []
        """The raw spans of the last logical line (the text after the last newline that ends a line on screen)."""
        self._tail_after_break = False
        """Whether a newline that ends a line on screen comes right before the tail (there is a line before it)."""
        self._lines: list[_Line] = []
        self._welcome_lines: list[_Line] = []
        self._tail_start = 0
        """Index in `_lines` of the first display line of the last logical line."""
        self._wrap_width = 0
        """The width `_lines` was wrapped to; 0 until the first layout."""
        self._styles: dict[str, Style] = {}
        self._strips: dict[tuple[int, int, int], Strip] = {}
        """Drawn display lines by (index, scroll_x, width): a frame after a scroll redraws every row."""
        self._following = True  # at the end: appends keep it there
        self.shade = False
        """Mark the chars the model was unsure of (SHADES)."""
        self._levels = bytearray()
        """Per char of the story: 0, or 1 + the index in SHADES of the mark its probability earns."""

    @property
    def runs(self) -> list[tuple[str, str]]:
        """The story as (author, text) runs; neighbouring runs have different authors."""
        return [(author, self._run_text(i)) for i, (author, _) in enumerate(self._runs)]

    @property
    def text(self) -> str:
        """The whole story as one string."""
        return "".join(self._run_text(i) for i in range(len(self._runs)))

    @property
    def line_count(self) -> int:
        """Number of display lines at the current width."""
        return len(self._lines)

    def _run_text(self, index: int) -> str:
        chunks = self._runs[index][1]
        if len(chunks) > 1:
            chunks[:] = ["".join(chunks)]
        return chunks[0] if chunks else ""

    def clear(self) -> None:
        """Remove the whole story."""
        self._runs = []
        self._levels = bytearray()
        self._rewrap_all()
        self.refresh()
        if self.is_mounted:
            self.scroll_to_start()

    def set_runs(self, runs: list[tuple[str, str]]) -> None:
        """Replace the story with (author, text) runs, then scroll to the end. The marks of the chars it shares with
        the story shown before (its start, up to the first difference) are kept."""
        self._keep_levels("".join(text for _, text in runs))
        new_runs: list[tuple[str, list[str]]] = []
        for author, text in runs:
            _check_author(author)
            if not text:
                continue
            if new_runs and new_runs[-1][0] == author:
                new_runs[-1][1].append(text)
            else:
                new_runs.append((author, [text]))
        self._runs = new_runs
        self._rewrap_all()
        self.refresh()
        self.scroll_to_end()

    def append(self, text: str, author: str, probs: list[float] | None = None) -> None:
        """Add `text` (which may hold newlines) to the end of the story; `probs`: how sure the model was of each char.

        Costs O(length of the last logical line): display lines before it are kept as they are.
        """
        _check_author(author)
        if not text:
            return
        offset = len(self._levels)
        self._levels += levels_of(probs) if probs and len(probs) == len(text) else bytes(len(text))
        follow = self._is_following()
        was_empty = not self._runs
        if self._runs and self._runs[-1][0] == author:
            self._runs[-1][1].append(text)
        else:
            self._runs.append((author, [text]))

        width = self._wrap_width
        old_start, old_count = self._tail_start, len(self._lines)
        if width:
            del self._lines[self._tail_start :]
            self._forget_strips(self._tail_start)
        for shown_as, piece in self._shaded(author, text, offset):
            self._add_to_tail(shown_as, piece)
        if not width:
            return
        self._lines.extend(wrap_spans(self._tail, width))
        self.virtual_size = Size(width, len(self._lines))
        if was_empty:  # the welcome goes
            self._strips.clear()
            self.refresh()
        else:
            self.refresh_lines(old_start, max(len(self._lines), old_count) - old_start)
        if follow:
            self.scroll_to_end()

    def set_wrap(self, wrap: str) -> None:
        """Show the story soft-wrapped ("soft": newlines inside a paragraph as spaces) or as written ("hard")."""
        _check_wrap(wrap)
        if wrap == self.wrap:
            return
        follow = self._is_following()
        self.wrap = wrap
        self._rewrap_all()
        self.refresh()
        if follow:
            self.scroll_to_end()

    def set_welcome(self, text: str) -> None:
        """Show `text` while the story is empty (its newlines start lines); cheap while it is."""
        self.welcome = text
        self._rewrap_all()
        self.refresh()

    def _add_to_tail(self, author: str, text: str) -> None:
        """Add text to the last logical line; wrap the lines it ends (when the width is known) into `_lines`."""
        tail = list(self._tail)
        if tail and tail[-1][0] == author:
            tail[-1] = (author, tail[-1][1] + text)
        else:
            tail.append((author, text))
        *ended, self._tail = split_lines(tail, self.wrap, self._tail_after_break)
        if not ended:
            return
        self._tail_after_break = True
        if self._wrap_width:
            for spans in ended:
                self._lines.extend(wrap_spans(spans, self._wrap_width))
            self._tail_start = len(self._lines)

    def _content_width(self) -> int:
        return max(0, self.scrollable_content_region.width)

    def _rewrap_all(self) -> None:
        """Rebuild every display line at the current content width, as the appends of the runs would."""
        width = self._wrap_width = self._content_width()
        self._lines = []
        self._strips.clear()
        self._tail, self._tail_start, self._tail_after_break = [], 0, False
        offset = 0
        for index, (author, _) in enumerate(self._runs):
            text = self._run_text(index)
            for shown_as, piece in self._shaded(author, text, offset):
                self._add_to_tail(shown_as, piece)
            offset += len(text)
        if width:
            self._lines.extend(wrap_spans(self._tail, width))
        self._welcome_lines = (
            [line for text in self.welcome.split("\n") for line in wrap_spans([(WELCOME, text)], width)]
            if width and self.welcome
            else []
        )
        self.virtual_size = Size(width, len(self._shown_lines))

    # --- how sure the model was of each char (shading) -------------------------------------------------------------

    def show_shade(self, on: bool) -> None:
        """Mark (or stop marking) the chars the model was unsure of."""
        if on != self.shade:
            self.shade = on
            self._rewrap_all()
            self.refresh()

    def _shaded(self, author: str, text: str, offset: int) -> list[Span]:
        """(author, text) of the story at `offset`, with shading on cut where the marks of the model's chars change,
        each piece named by its mark (SHADES); line breaks and wrapping then treat the pieces like any others."""
        levels = self._levels[offset : offset + len(text)]
        if not self.shade or author != MODEL or not any(levels):
            return [(author, text)]
        out: list[Span] = []
        start = 0
        for i in range(1, len(text) + 1):
            if i == len(text) or levels[i] != levels[start]:
                out.append((SHADES[levels[start] - 1][1] if levels[start] else author, text[start:i]))
                start = i
        return out

    def _keep_levels(self, text: str) -> None:
        """Keep the marks of the chars `text` shares with the story shown now (from its start); zero the rest."""
        old = self.text
        lo, hi = 0, min(len(old), len(text))
        while lo < hi:  # the longest common start, by halves (string compares run at C speed)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if old[:mid] == text[:mid] else (lo, mid - 1)
        self._levels = self._levels[:lo] + bytes(len(text) - lo)

    @property
    def _shown_lines(self) -> list[_Line]:
        """The story's display lines, or the welcome's while the story is empty."""
        return self._lines if self._runs else self._welcome_lines

    def _is_following(self) -> bool:
        """Was the view at the end (or within one line of it) when it last scrolled? Kept as a
        flag, not computed from the size, so a resize doesn't make a following view let go."""
        return self._following and not self.is_vertical_scrollbar_grabbed

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self.size.height:
            self._following = round(new_value) >= self.max_scroll_y - 1

    def _rewrap_if_width_changed(self) -> None:
        follow = self._is_following()
        if self._content_width() != self._wrap_width:
            self._rewrap_all()
            self.refresh()
        if follow:
            self.scroll_to_end()

    def on_resize(self, event: events.Resize) -> None:
        self._rewrap_if_width_changed()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _forget_strips(self, start: int) -> None:
        """Drop the drawn lines from display line `start` on (they are being rewrapped)."""
        if len(self._strips) > 1024:
            self._strips.clear()
        for key in [k for k in self._strips if k[0] >= start]:
            del self._strips[key]

    def _style(self, author: str) -> Style:
        style = self._styles.get(author)
        if style is None:
            style = self._styles[author] = self.get_component_rich_style(f"story-view--{author}")
        return style

    def render_line(self, y: int) -> Strip:
        if self._content_width() != self._wrap_width:
            # The layout has the new width but the Resize event (if any: a scrollbar may have come or gone) is still
            # queued: rewrap (and follow the end) before drawing, or this frame shows lines cut at the old width.
            self._rewrap_if_width_changed()
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self._styles.get("") or self._styles.setdefault("", self.rich_style)
        lines = self._shown_lines
        if index >= len(lines):
            return Strip.blank(width, base)
        key = (index, scroll_x, width)
        strip = self._strips.get(key)
        if strip is None:
            strip = Strip([Segment(text, self._style(author)) for author, text in lines[index].segments])
            strip = self._strips[key] = strip.crop_extend(scroll_x, scroll_x + width, base)
        return strip.apply_offsets(scroll_x, index)

    def scroll_to_end(self) -> None:
        """Jump to the end of the story (no animation)."""
        if not self.is_mounted:
            return  # the first layout starts at the end anyway
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        if self.scroll_offset.y < self.max_scroll_y:
            # Not scrollable yet (the scrollbar appears at the next layout): try again after it.
            self.scroll_end(animate=False, x_axis=False)

    def scroll_to_start(self) -> None:
        """Jump to the start of the story (no animation)."""
        self.scroll_home(animate=False, immediate=True, x_axis=False)

    def page_up(self) -> None:
        """Scroll up by one page (no animation)."""
        self.scroll_page_up(animate=False)

    def page_down(self) -> None:
        """Scroll down by one page (no animation)."""
        self.scroll_page_down(animate=False)

    def action_scroll_up(self) -> None:
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.scroll_up(animate=False)

    def action_scroll_down(self) -> None:
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.scroll_down(animate=False)

    def action_page_up(self) -> None:
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.page_up()

    def action_page_down(self) -> None:
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.page_down()

    def action_scroll_home(self) -> None:
        self.scroll_to_start()

    def action_scroll_end(self) -> None:
        self.scroll_to_end()


def levels_of(probs: list[float]) -> bytes:
    """Per char: 0, or 1 + the index in SHADES of the first threshold its probability is below."""
    return bytes(next((i + 1 for i, (below, _) in enumerate(SHADES) if p < below), 0) for p in probs)


def _check_author(author: str) -> None:
    if author not in AUTHORS:
        raise ValueError(f"unknown author {author!r}: expected {PERSON!r} or {MODEL!r}")


def _check_wrap(wrap: str) -> None:
    if wrap not in WRAPS:
        raise ValueError(f"unknown wrap {wrap!r}: expected 'soft' or 'hard'")

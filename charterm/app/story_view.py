"""The story pane: a person and the model write one text together.

`StoryView` is a Line-API widget (a `ScrollView` that renders one display line at a time), so a story of
hundreds of KB costs nothing to show, and an append re-wraps only the last logical line (the text after the
last newline). The person's text is bold and coloured, the model's plain, so the two stay apart without colour.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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

TAB_SIZE = 4
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CHUNK = re.compile("([^ ]*)( *)")

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


def _sanitise(spans: list[Span]) -> list[Span]:
    """Make a logical line safe to lay out.

    A tab becomes spaces up to the next multiple of `TAB_SIZE` cells from the start of the logical line; any other
    control character (C0, DEL, C1) becomes U+FFFD. Newlines never reach here.
    """
    out: list[Span] = []
    col = 0
    for author, text in spans:
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

    Text is shown literally (no markup). Tabs become spaces up to the next multiple of 4 cells from the start of
    the logical line; other control characters show as U+FFFD. An append keeps the view at the end if it was at
    the end (or within one line of it) and leaves it alone if the person had scrolled up.
    """

    COMPONENT_CLASSES = {"story-view--person", "story-view--model", *(f"story-view--{name}" for _, name in SHADES)}

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

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._runs: list[tuple[str, list[str]]] = []
        """(author, chunks) with neighbouring runs by different authors; chunks are joined lazily."""
        self._tail: list[Span] = []
        """The raw spans of the last logical line (the text after the last newline)."""
        self._lines: list[_Line] = []
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
        self._tail_offset = 0
        """Offset in the story of the tail's first char."""

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
        self._levels += levels_of(probs) if probs and len(probs) == len(text) else bytes(len(text))
        follow = self._is_following()
        if self._runs and self._runs[-1][0] == author:
            self._runs[-1][1].append(text)
        else:
            self._runs.append((author, [text]))

        width = self._wrap_width
        old_start, old_count = self._tail_start, len(self._lines)
        if width:
            del self._lines[self._tail_start :]
            self._forget_strips(self._tail_start)
        parts = text.split("\n")
        self._extend_tail(author, parts[0])
        for part in parts[1:]:
            if width:
                self._lines.extend(self._wrap(self._tail, self._tail_offset, width))
                self._tail_start = len(self._lines)
            self._tail_offset += sum(len(t) for _, t in self._tail) + 1
            self._tail = [(author, part)] if part else []
        if not width:
            return
        self._lines.extend(self._wrap(self._tail, self._tail_offset, width))
        self.virtual_size = Size(width, len(self._lines))
        self.refresh_lines(old_start, max(len(self._lines), old_count) - old_start)
        if follow:
            self.scroll_to_end()

    def _extend_tail(self, author: str, text: str) -> None:
        if not text:
            return
        if self._tail and self._tail[-1][0] == author:
            self._tail[-1] = (author, self._tail[-1][1] + text)
        else:
            self._tail.append((author, text))

    def _logical_lines(self) -> Iterator[list[Span]]:
        """Yield each logical line of the story as (author, text) spans; the last one is the tail."""
        line: list[Span] = []
        for index, (author, _) in enumerate(self._runs):
            parts = self._run_text(index).split("\n")
            if parts[0]:
                line.append((author, parts[0]))
            for part in parts[1:]:
                yield line
                line = [(author, part)] if part else []
        yield line

    def _content_width(self) -> int:
        return max(0, self.scrollable_content_region.width)

    def _rewrap_all(self) -> None:
        """Rebuild every display line at the current content width."""
        width = self._wrap_width = self._content_width()
        self._lines = []
        self._strips.clear()
        self._tail_start = 0
        offset = 0
        for spans in self._logical_lines():
            self._tail, self._tail_offset = spans, offset
            if width:
                self._tail_start = len(self._lines)
                self._lines.extend(self._wrap(spans, offset, width))
            offset += sum(len(t) for _, t in spans) + 1
        self.virtual_size = Size(width, len(self._lines))

    # --- how sure the model was of each char (shading) -------------------------------------------------------------

    def show_shade(self, on: bool) -> None:
        """Mark (or stop marking) the chars the model was unsure of."""
        if on != self.shade:
            self.shade = on
            self._rewrap_all()
            self.refresh()

    def _wrap(self, spans: list[Span], offset: int, width: int) -> list[_Line]:
        """wrap_spans, with the model's unsure chars (of a logical line starting at `offset`) split off and renamed."""
        return wrap_spans(self._shaded(spans, offset) if self.shade else spans, width)

    def _shaded(self, spans: list[Span], offset: int) -> list[Span]:
        out: list[Span] = []
        for author, text in spans:
            levels, offset = self._levels[offset : offset + len(text)], offset + len(text)
            if author != MODEL or not any(levels):
                out.append((author, text))
                continue
            start = 0
            for i in range(1, len(text) + 1):
                if i == len(text) or levels[i] != levels[start]:
                    level = levels[start] if start < len(levels) else 0
                    out.append((SHADES[level - 1][1] if level else author, text[start:i]))
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
        if index >= len(self._lines):
            return Strip.blank(width, base)
        key = (index, scroll_x, width)
        strip = self._strips.get(key)
        if strip is None:
            strip = Strip([Segment(text, self._style(author)) for author, text in self._lines[index].segments])
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

"""StoryView: wrapping, author styles, literal text, following the end, and cheap appends."""

import asyncio
import random

import pytest
from rich.cells import cell_len
from textual.app import App, ComposeResult
from textual.geometry import Size
from textual.strip import Strip

from charterm.app import story_view
from charterm.app.story_view import MODEL, PERSON, WELCOME, StoryView, split_lines

SCROLLBAR = 2  # default vertical scrollbar width; StoryView always shows it
LINE_BREAK = {"hard": "\n", "soft": "\n\n"}  # what starts a new line on screen with each wrap


class Host(App):
    CSS = """
    .plain > .story-view--person { text-style: none; }
    """

    def __init__(self, view: StoryView | None = None) -> None:
        super().__init__()
        self.view = view or StoryView()

    def compose(self) -> ComposeResult:
        yield self.view


def run(test, width=20, height=8, view=None, wrap=None):
    """Run `test(pilot, view)` in a Host app whose story view wraps to `width` cells (`wrap`: the view's
    mode, else the default: soft)."""

    async def main():
        app = Host(view or (StoryView(wrap=wrap) if wrap else None))
        async with app.run_test(size=(width + SCROLLBAR, height)) as pilot:
            await pilot.pause()
            assert app.view._wrap_width == width
            await test(pilot, app.view)

    asyncio.run(main())


def shown(view: StoryView) -> list[str]:
    """The visible lines as rendered, trailing blanks stripped."""
    return [view.render_line(y).text.rstrip() for y in range(view.size.height)]


def wrapped(view: StoryView) -> list[str]:
    """All display lines at the current width."""
    return [line.text for line in view._lines]


def test_word_wrap_at_spaces():
    async def check(pilot, view):
        view.set_runs([(MODEL, "the quick brown fox jumps over the lazy dog")])
        await pilot.pause()
        assert [line.rstrip() for line in wrapped(view)] == ["the quick", "brown fox", "jumps over", "the lazy", "dog"]
        assert shown(view)[:6] == ["the quick", "brown fox", "jumps over", "the lazy", "dog", ""]
        for y in range(view.size.height):
            assert view.render_line(y).cell_length == view.size.width

    run(check, width=10)


def test_long_word_is_hard_broken():
    async def check(pilot, view):
        view.set_runs([(MODEL, "hi abcdefghijklmnopqrstuvwxy z")])
        await pilot.pause()
        assert [line.rstrip() for line in wrapped(view)] == ["hi", "abcdefghij", "klmnopqrst", "uvwxy z"]

    run(check, width=10)


def test_newlines_start_lines():
    async def check(pilot, view):
        view.set_runs([(PERSON, "one\n\ntwo three"), (MODEL, "\nfour\n")])
        await pilot.pause()
        assert wrapped(view) == ["one", "", "two three", "four", ""]
        assert view.virtual_size.height == 5

    run(check, wrap="hard")


def test_person_bold_and_coloured_model_plain():
    async def check(pilot, view):
        view.set_runs([(PERSON, "Alice said "), (MODEL, "hello")])
        await pilot.pause()
        segments = [s for s in view.render_line(0) if s.text.strip()]
        assert [s.text for s in segments] == ["Alice said ", "hello"]
        person, model = segments[0].style, segments[1].style
        assert person.bold is True
        assert not model.bold
        assert person.color != model.color

    run(check)


def test_styles_come_from_component_classes():
    async def check(pilot, view):
        view.set_runs([(PERSON, "me")])
        await pilot.pause()
        assert view.render_line(0)._segments[0].style.bold is True
        view.add_class("plain")
        await pilot.pause()
        assert not view.render_line(0)._segments[0].style.bold

    run(check)


def test_markup_is_shown_literally():
    async def check(pilot, view):
        view.set_runs([(PERSON, "[b]x[/b] and [/] ok "), (MODEL, "[red]**no**[/red] :smile:")])
        await pilot.pause()
        view.append(" [/]", MODEL)
        await pilot.pause()
        assert shown(view)[:2] == ["[b]x[/b] and [/] ok [red]**no**[/red]", ":smile: [/]"]
        assert view.text == "[b]x[/b] and [/] ok [red]**no**[/red] :smile: [/]"

    run(check, width=40)


def test_append_merges_runs_and_words_across_authors():
    async def check(pilot, view):
        view.append("Hello wo", PERSON)
        view.append("r", MODEL)
        view.append("ld", MODEL)
        view.append("\nBye", PERSON)
        await pilot.pause()
        assert view.runs == [(PERSON, "Hello wo"), (MODEL, "rld"), (PERSON, "\nBye")]
        assert view.text == "Hello world\nBye"
        # "world" is one word even though two authors wrote it: it moves to the next line whole.
        assert [line.segments for line in view._lines] == [
            ((PERSON, "Hello "),),
            ((PERSON, "wo"), (MODEL, "rld")),
            ((PERSON, "Bye"),),
        ]
        with pytest.raises(ValueError):
            view.append("x", "narrator")

    run(check, width=8, wrap="hard")


def test_set_runs_merges_and_clear_empties():
    async def check(pilot, view):
        view.set_runs([(MODEL, "a"), (MODEL, "b"), (PERSON, ""), (MODEL, "c"), (PERSON, "d")])
        assert view.runs == [(MODEL, "abc"), (PERSON, "d")]
        view.clear()
        await pilot.pause()
        assert view.runs == [] and view.text == ""
        assert shown(view) == [""] * view.size.height
        assert all(view.render_line(y).cell_length == view.size.width for y in range(view.size.height))

    run(check)


@pytest.mark.parametrize("wrap", ["soft", "hard"])
def test_appends_match_set_runs(wrap):
    """Streaming a story in random chunks lays it out exactly as setting it at once."""
    rng = random.Random(3)
    words = ["a", "tale", "of", "two", "cities", "supercalifragilistic", "\n", "\n\n", "中文", " ", "x\ty"]
    chunks = [
        (rng.choice([PERSON, MODEL]), "".join(rng.choice(words) for _ in range(rng.randint(1, 6)))) for _ in range(300)
    ]

    async def check(pilot, view):
        for author, text in chunks:
            view.append(text, author)
        streamed = [line.segments for line in view._lines]
        runs = view.runs
        view.set_runs(runs)
        assert view.runs == runs
        assert "".join(text for _, text in chunks) == view.text
        assert [line.segments for line in view._lines] == streamed

    run(check, width=12, wrap=wrap)


@pytest.mark.parametrize("wrap", ["soft", "hard"])
def test_follows_end_while_at_bottom(wrap):
    br = LINE_BREAK[wrap]

    async def check(pilot, view):
        view.set_runs([(MODEL, br.join(f"line {i}" for i in range(50)))])
        await pilot.pause()
        assert view.max_scroll_y > 0
        assert view.scroll_y == view.max_scroll_y
        for i in range(5):
            view.append(f"{br}more {i}", MODEL)
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        assert shown(view)[-1] == "more 4"
        # Within one line of the end still counts as following.
        view.scroll_to(y=view.max_scroll_y - 1, animate=False)
        await pilot.pause()
        view.append(f"{br}last", PERSON)
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        assert shown(view)[-1] == "last"

    run(check, wrap=wrap)


@pytest.mark.parametrize("wrap", ["soft", "hard"])
def test_a_resize_while_following_stays_at_the_end(wrap):
    br = LINE_BREAK[wrap]

    async def check(pilot, view):
        view.set_runs([(MODEL, br.join(f"line {i} with some words" for i in range(80)))])
        await pilot.pause()
        for size in ((40, 12), (20 + SCROLLBAR, 8), (30, 6)):  # taller, back, and shorter + narrower
            await pilot.resize_terminal(*size)
            await pilot.pause()
            view.append(f"{br}more", MODEL)
            await pilot.pause()
            assert view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y, size
            assert shown(view)[-1] == "more"

    run(check, wrap=wrap)


@pytest.mark.parametrize("wrap", ["soft", "hard"])
def test_does_not_follow_when_scrolled_up(wrap):
    br = LINE_BREAK[wrap]

    async def check(pilot, view):
        view.set_runs([(MODEL, br.join(f"line {i}" for i in range(50)))])
        await pilot.pause()
        view.scroll_to(y=10, animate=False)
        await pilot.pause()
        top = shown(view)[0]
        for i in range(5):
            view.append(f"{br}more {i}", MODEL)
        await pilot.pause()
        assert view.scroll_y == 10
        assert shown(view)[0] == top == wrapped(view)[10] == {"hard": "line 10", "soft": "line 5"}[wrap]
        assert view.max_scroll_y > 10

    run(check, wrap=wrap)


def test_scroll_keys():
    async def check(pilot, view):
        view.set_runs([(MODEL, "\n".join(f"line {i}" for i in range(50)))])
        view.focus()
        await pilot.pause()
        page = view.scrollable_content_region.height
        await pilot.press("home")
        assert view.scroll_y == 0
        await pilot.press("pagedown")
        assert view.scroll_y == page
        await pilot.press("down")
        assert view.scroll_y == page + 1
        await pilot.press("up", "pageup")
        assert view.scroll_y == 0
        await pilot.press("end")
        assert view.scroll_y == view.max_scroll_y > 0
        await pilot.press("pageup")
        assert view.scroll_y == view.max_scroll_y - page
        view.page_down()
        assert view.scroll_y == view.max_scroll_y

    run(check)


def test_rewraps_on_resize():
    async def check(pilot, view):
        view.set_runs([(PERSON, "one two three "), (MODEL, "four five six seven")])
        await pilot.pause()
        assert [line.rstrip() for line in wrapped(view)] == ["one two three four", "five six seven"]
        await pilot.resize_terminal(10 + SCROLLBAR, 8)
        await pilot.pause()
        assert view._wrap_width == 10
        assert [line.rstrip() for line in wrapped(view)] == ["one two", "three four", "five six", "seven"]
        assert shown(view)[:4] == ["one two", "three four", "five six", "seven"]
        assert view.virtual_size.height == 4

    run(check)


def test_wide_characters_measured_in_cells():
    async def check(pilot, view):
        view.set_runs([(MODEL, "中文字符测试\nab 中文中文中\n" + "😀" * 6)])
        await pilot.pause()
        assert wrapped(view) == ["中文字符测", "试", "ab ", "中文中文中", "😀" * 5, "😀"]
        assert all(cell_len(line) <= 10 for line in wrapped(view))
        assert all(view.render_line(y).cell_length == view.size.width for y in range(view.size.height))

    run(check, width=10, wrap="hard")


def test_tabs_and_control_characters():
    async def check(pilot, view):
        view.set_runs([(MODEL, "a\tb\nx\x07y\x1b[31mred\r")])
        await pilot.pause()
        assert wrapped(view) == ["a   b", "x\ufffdy\ufffd[31mred\ufffd"]
        assert view.text == "a\tb\nx\x07y\x1b[31mred\r"
        assert all(view.render_line(y).cell_length == view.size.width for y in range(view.size.height))

    run(check, wrap="hard")


def test_filled_before_mount():
    view = StoryView()
    view.set_runs([(MODEL, "replaced")])
    view.clear()
    view.append("written before ", PERSON)
    view.append("the first layout", MODEL)
    assert view.text == "written before the first layout"
    assert view._lines == []

    async def check(pilot, view):
        assert [line.rstrip() for line in wrapped(view)] == ["written before the", "first layout"]

    run(check, view=view)


@pytest.mark.parametrize("wrap", ["soft", "hard"])
def test_append_rewraps_only_the_last_logical_line(monkeypatch, wrap):
    br = LINE_BREAK[wrap]

    async def check(pilot, view):
        for i in range(2000):
            view.append(f"line {i} of a tale{br}", MODEL if i % 2 else PERSON)
        view.append("a last paragraph long enough to wrap over several display lines", MODEL)
        await pilot.pause()
        before = list(view._lines)
        tail_start = view._tail_start
        assert tail_start == 2000 * len(br) and len(before) > tail_start + 2

        calls = []
        real = story_view.wrap_spans

        def counting(spans, width):
            calls.append(spans)
            return real(spans, width)

        monkeypatch.setattr(story_view, "wrap_spans", counting)
        view.append(" and a bit", MODEL)
        assert calls == [[(MODEL, "a last paragraph long enough to wrap over several display lines and a bit")]]
        after = view._lines
        assert all(a is b for a, b in zip(before[:tail_start], after[:tail_start], strict=True))
        assert wrapped(view)[-1].endswith("a bit")
        assert view.scroll_y == view.max_scroll_y

    run(check, wrap=wrap)


class Recorder(StoryView):
    """A StoryView that keeps every row it draws, with the story, width and scroll it drew it at."""

    def __init__(self, wrap: str) -> None:
        super().__init__(wrap=wrap)
        self.drawn: list[tuple[str, Size, int, int, str]] = []

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        self.drawn.append((self.text, self.scrollable_content_region.size, self.scroll_offset.y, y, strip.text))
        return strip


def rows(text: str, width: int, wrap: str) -> list[str]:
    """The story's display lines at `width`, as `split_lines` and `wrap_spans` lay them out."""
    lines = split_lines([(MODEL, text)], wrap)
    return [line.text.rstrip() for spans in lines for line in story_view.wrap_spans(spans, width)]


@pytest.mark.parametrize("wrap", ["soft", "hard"])
def test_the_frame_after_a_resize_is_wrapped_to_the_new_width(wrap):
    """The frame drawn right after a resize (before the view's Resize event) shows the end, wrapped anew."""

    async def check(pilot, view):
        view.set_runs([(MODEL, LINE_BREAK[wrap].join(f"line {i}\nof the tale" for i in range(30)))])
        await pilot.pause()
        for size in ((40 + SCROLLBAR, 10), (20 + SCROLLBAR, 8), (40 + SCROLLBAR, 8), (20 + SCROLLBAR, 6)):
            view.append(" and then a few more words", MODEL)
            view.drawn.clear()
            await pilot.resize_terminal(*size)
            view.append(" well).", MODEL)
            await pilot.pause()
            assert view.drawn and view.scroll_y == view.max_scroll_y, size
            for text, (width, height), scroll_y, y, drawn in view.drawn:
                expected = rows(text, width, wrap)
                assert scroll_y == max(0, len(expected) - height), (size, width, y)
                assert drawn.rstrip() == (expected + [""] * height)[scroll_y + y], (size, width, y)
            assert shown(view)[-1].endswith("well).")

    run(check, view=Recorder(wrap))


# --- soft wrap: what the story's text looks like on screen ------------------------------------------------


def screen_lines(text: str, width: int = 20, wrap: str = "soft") -> list[str]:
    """The display lines of a story that is one run of `text`, as `split_lines` and `wrap_spans` lay it out."""
    return [line.text for spans in split_lines([(MODEL, text)], wrap) for line in story_view.wrap_spans(spans, width)]


def test_soft_wrap_joins_the_lines_of_a_paragraph_and_keeps_blank_lines():
    text = "It was a\nbright cold day\n\nand the clocks\nwere striking\n\n\nthirteen."
    assert [line.rstrip() for line in screen_lines(text)] == [
        "It was a bright cold",
        "day",
        "",
        "and the clocks were",
        "striking",
        "",
        "",
        "thirteen.",
    ]
    assert screen_lines(text, wrap="hard") == [
        "It was a",
        "bright cold day",
        "",
        "and the clocks",
        "were striking",
        "",
        "",
        "thirteen.",
    ]


def test_soft_wrap_shows_each_lone_newline_as_one_space():
    """Every char of the story is one char on screen (so a per-char style can follow the text)."""
    text = "one\ntwo  \nthree\n"
    lines = split_lines([(PERSON, text)], "soft")
    assert lines == [[(PERSON, text)]]
    assert screen_lines(text, width=40) == ["one two   three "]


def test_soft_wrap_breaks_long_words_and_spans_of_two_authors():
    assert screen_lines("supercalifragilistic\nexpialidocious", width=10) == [
        "supercalif",
        "ragilistic",
        "expialidoc",
        "ious",
    ]
    spans = [(PERSON, "Anna\n"), (MODEL, "\nsaid\nno"), (PERSON, "\n\n"), (MODEL, "\nthen")]
    assert split_lines(spans, "soft") == [[(PERSON, "Anna")], [], [(MODEL, "said\nno")], [], [], [(MODEL, "then")]]
    assert split_lines(spans, "hard") == [
        [(PERSON, "Anna")],
        [],
        [(MODEL, "said")],
        [(MODEL, "no")],
        [],
        [],
        [(MODEL, "then")],
    ]


def test_only_newlines_break_lines_a_carriage_return_is_shown():
    """The store keeps text as written (its own texts are CRLF-free); a stray CR shows, it ends nothing."""
    assert screen_lines("a\r\nb\n\nc") == ["a\ufffd b", "", "c"]
    assert screen_lines("a\r\nb", wrap="hard") == ["a\ufffd", "b"]


def test_a_newline_streamed_at_the_end_waits_for_the_next_char():
    """A newline at the end shows as a trailing space; the next char makes it a space or a paragraph break, and
    every step looks as the whole story set at once does."""

    async def check(pilot, view):
        for text, want in (
            ("The end.", ["The end."]),
            ("\n", ["The end. "]),
            ("\n", ["The end.", "", ""]),  # a blank line, then the next paragraph (empty so far)
            ("\n", ["The end.", "", "", ""]),
            ("Next", ["The end.", "", "", "Next"]),
            ("\n", ["The end.", "", "", "Next "]),
            ("day", ["The end.", "", "", "Next day"]),
        ):
            view.append(text, MODEL)
            assert wrapped(view) == want, text
            streamed = list(view._lines)
            view.set_runs(view.runs)
            assert view._lines == streamed
        await pilot.pause()
        assert shown(view)[:4] == ["The end.", "", "", "Next day"]

    run(check)


def test_a_paragraph_break_across_two_appends_by_two_authors():
    async def check(pilot, view):
        view.append("She left.\n", MODEL)
        view.append("\nHe stayed.", PERSON)
        assert wrapped(view) == ["She left.", "", "He stayed."]
        assert view.text == "She left.\n\nHe stayed."
        assert view.runs == [(MODEL, "She left.\n"), (PERSON, "\nHe stayed.")]
        assert [line.segments for line in view._lines][2] == ((PERSON, "He stayed."),)

    run(check)


def test_set_wrap_switches_the_display_not_the_text():
    text = "the first line\nthe second\n\nanother paragraph"

    async def check(pilot, view):
        view.set_runs([(MODEL, text)])
        await pilot.pause()
        soft = ["the first line the", "second", "", "another paragraph"]
        assert [line.rstrip() for line in wrapped(view)] == soft
        view.set_wrap("hard")
        await pilot.pause()
        assert wrapped(view) == ["the first line", "the second", "", "another paragraph"]
        assert shown(view)[:4] == wrapped(view)
        assert view.text == text and view.wrap == "hard"
        view.append("\nand more", MODEL)
        view.set_wrap("soft")
        assert [line.rstrip() for line in wrapped(view)] == soft[:-1] + ["another paragraph", "and more"]
        with pytest.raises(ValueError):
            view.set_wrap("sometimes")

    run(check)


def test_an_empty_story_shows_the_welcome_until_its_first_text():
    view = StoryView()
    view.set_welcome("Welcome.\nType a story below.")

    async def check(pilot, view):
        assert shown(view)[:3] == ["Welcome.", "Type a story below.", ""]
        welcome = view.get_component_rich_style(f"story-view--{WELCOME}")
        assert list(view.render_line(0))[0].style.color == welcome.color != view.rich_style.color
        assert view.text == "" and view.runs == []
        view.append("Once", PERSON)
        await pilot.pause()
        assert shown(view)[:2] == ["Once", ""]
        view.clear()
        await pilot.pause()
        assert shown(view)[:2] == ["Welcome.", "Type a story below."]

    run(check, view=view)

"""Property tests (hypothesis): the vocabulary, prime folding, training batches, story names and rendering."""

import re
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from charterm.engine.text import Vocabulary, check_sizes, make_rows, split_train_val, windows_in
from charterm.errors import UsageError
from charterm.story.store import MODEL, PERSON, Turn, check_name, render, slug

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Characters worth forcing into the mix: NUL and controls, astral (emoji, CJK ext B), combining marks,
# RTL text and marks, the folds' special cases, and chars whose case/NFKD forms are several chars.
HOSTILE = (
    "\x00\x01\t\n\r\x7f\x85\u2028\u2029 \u00a0\u200b\u200d\u200e\u200f\u202e\ufeff\ufffd"
    "\U0001f600\U0001f468\U0001f469\U0001f467\U00020000\U0010fffd"
    "\u0301\u0308\u20dd\u0345e\u00e9E\u00c9i\u0130\u0131\u00df\u1e9e\ufb01\ufb03\u2126\u212b\u00bd\u2460"
    "\u05d0\u05d1\u0627\u0644\ufefb\u0416\u0436\u201c\u201d\u2014\u2026\u00e6\u0153"
    "aAzZ09'\"-.*#_`[]<>&;|~\\"
)
hostile_char = st.sampled_from(HOSTILE)
any_char = st.one_of(st.characters(codec="utf-8"), hostile_char)  # all code points but surrogates
any_text = st.text(any_char, max_size=60)


# --- the vocabulary ------------------------------------------------------------------------------


@SETTINGS
@given(text=any_text, seed=st.randoms(use_true_random=False))
def test_vocabulary_round_trip_is_exact_sorted_unique_and_stable(text, seed):
    vocab = Vocabulary.from_text(text)
    assert list(vocab.chars) == sorted(set(vocab.chars)) == sorted(set(text))
    assert len(vocab) == len(set(text))
    ids = vocab.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= int(i) < len(vocab) for i in ids)
    assert vocab.decode(ids) == text
    # the same text (or the same chars in any order) always gives the same vocabulary and ids
    shuffled = list(text)
    seed.shuffle(shuffled)
    again = Vocabulary.from_text("".join(shuffled))
    assert again == vocab and again.chars == vocab.chars
    assert np.array_equal(again.encode(text), ids)


@settings(max_examples=20, deadline=None, database=None)
@given(extra=st.sets(st.characters(codec="utf-8"), min_size=250, max_size=400))
def test_vocabulary_wider_than_a_byte_still_round_trips(extra):
    text = "".join(sorted(extra)) * 2
    vocab = Vocabulary.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text


# --- folding a prime onto the vocabulary ----------------------------------------------------------


@SETTINGS
@given(known=any_text, prime=any_text)
@example(known="abc \n", prime="\u201cA\u00df\u00e9\U0001f600\x00\u05d0\u200f")
@example(known="", prime="anything at all")
def test_fold_never_raises_and_accounts_for_every_unknown_char(known, prime):
    vocab = Vocabulary.from_text(known)
    folded, report = vocab.fold(prime)
    assert all(c in vocab for c in folded)
    unknown = [c for c in prime if c not in vocab]
    # every char not kept as is is counted once: either changed (to a non-empty in-vocab string) or dropped
    assert sum(report.changed.values()) + sum(report.dropped.values()) == len(unknown)
    assert bool(report) == bool(unknown)
    mapping = {}
    for (ch, rep), n in report.changed.items():
        assert ch not in vocab and n >= 1 and rep and rep != ch and all(c in vocab for c in rep)
        assert mapping.setdefault(ch, rep) == rep  # one char, one replacement
    for ch, n in report.dropped.items():
        assert ch not in vocab and n >= 1 and ch not in mapping
    assert {c for c in unknown} == set(mapping) | set(report.dropped)
    for ch in set(unknown):
        assert unknown.count(ch) == (sum(n for (c, _), n in report.changed.items() if c == ch) or report.dropped[ch])
    # the folded text is the prime with each char kept, replaced or dropped, in order
    assert folded == "".join(c if c in vocab else mapping.get(c, "") for c in prime)
    # folding is idempotent, and the warning it makes is one line
    assert vocab.fold(folded) == (folded, report.__class__())
    if report:
        assert "\n" not in report.describe() and "\r" not in report.describe()


@SETTINGS
@given(known=st.text(any_char, min_size=1, max_size=40), picks=st.lists(st.integers(0, 10**6), max_size=80))
def test_fold_of_vocabulary_text_changes_nothing(known, picks):
    vocab = Vocabulary.from_text(known)
    text = "".join(vocab.chars[i % len(vocab)] for i in picks)
    folded, report = vocab.fold(text)
    assert folded == text
    assert not report and not report.changed and not report.dropped


# --- training batches -----------------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(0, 3000), batch_size=st.integers(1, 40), seq_length=st.integers(1, 120))
@example(n=0, batch_size=1, seq_length=1)
@example(n=1, batch_size=1, seq_length=1)
@example(n=2, batch_size=1, seq_length=1)
@example(n=41, batch_size=4, seq_length=10)
def test_rows_cover_the_kept_text_once_and_targets_are_the_next_char(n, batch_size, seq_length):
    ids = np.arange(n, dtype=np.int64)  # each id is its position in the text
    x, y = make_rows(ids, batch_size, seq_length)
    n_windows = windows_in(n, batch_size, seq_length)
    keep = n_windows * batch_size * seq_length
    # the most whole windows that leave one char for the last target
    assert keep <= max(0, n - 1) and (n_windows + 1) * batch_size * seq_length > n - 1
    assert x.shape == y.shape == (batch_size, n_windows * seq_length)
    assert np.array_equal(y, x + 1)  # target[i] is the char after input[i] in the text
    # the training loop's windows (row r, columns w*S:(w+1)*S) cover the kept prefix exactly once
    seen = [x[:, w * seq_length : (w + 1) * seq_length].reshape(-1) for w in range(n_windows)]
    seen = np.sort(np.concatenate(seen)) if seen else np.empty(0, dtype=np.int64)
    assert np.array_equal(seen, np.arange(keep))
    # each row is a contiguous run of text, so the carried state follows the text
    if keep:
        assert np.all(np.diff(x, axis=1) == 1)


@SETTINGS
@given(
    n=st.integers(0, 20_000),
    val_frac=st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.9, 0.99]),
    batch_size=st.integers(1, 64),
    seq_length=st.integers(1, 200),
)
@example(n=5000, val_frac=0.1, batch_size=128, seq_length=100)
@example(n=0, val_frac=0.1, batch_size=1, seq_length=1)
def test_check_sizes_agrees_with_the_split_and_the_batching(n, val_frac, batch_size, seq_length):
    train, val = split_train_val(np.arange(n), val_frac)
    assert len(train) + len(val) == n
    fits = windows_in(len(train), batch_size, seq_length) >= 1 and windows_in(len(val), batch_size, seq_length) >= 1
    try:
        check_sizes(n, val_frac, batch_size, seq_length)
    except UsageError as e:
        assert not fits
        msg = str(e)
        assert "\n" not in msg
        assert f"{n:,} chars gives {len(train):,} for training and {len(val):,} for validation" in msg
        assert f"one batch needs {batch_size * seq_length + 1:,}" in msg
        # the suggested batch size really fits
        m = re.search(r"--batch-size (\d+) would fit", msg)
        if m:
            check_sizes(n, val_frac, int(m.group(1)), seq_length)
    else:
        assert fits
        for part in (train, val):
            x, _ = make_rows(part, batch_size, seq_length)
            assert x.shape[1] >= seq_length


def test_suggested_seq_length_fits():
    with pytest.raises(UsageError) as e:
        check_sizes(20, 0.5, batch_size=16, seq_length=100)  # 10 chars a split: 16 rows never fit
    m = re.search(r"try --batch-size (\d+) --seq-length (\d+)", str(e.value))
    check_sizes(20, 0.5, batch_size=int(m.group(1)), seq_length=int(m.group(2)))


# --- story names ----------------------------------------------------------------------------------


@SETTINGS
@given(name=st.text(any_char, max_size=120))
@example(name=" \u0301")
@example(name="\u00a0x\u3000")
@example(name="x" * 101)
def test_check_name_raises_only_usage_errors_and_accepted_names_round_trip(name):
    try:
        checked = check_name(name)
    except UsageError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert checked and len(checked) <= 100
    assert checked == checked.strip() == unicodedata.normalize("NFC", checked)
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Cn") for c in checked)
    assert check_name(checked) == checked  # accepting is idempotent
    assert check_name(" " + checked + "\t") == checked


@settings(max_examples=25, deadline=None, database=None)
@given(names=st.lists(st.text(any_char, min_size=1, max_size=30), min_size=1, max_size=4, unique=True))
def test_accepted_names_round_trip_through_the_store(names, tmp_path_factory):
    from charterm.story.store import Store

    accepted = []
    for name in names:
        try:
            accepted.append(check_name(name))
        except UsageError:
            pass
    assume(accepted)
    store = Store(tmp_path_factory.mktemp("names") / "stories.db")
    try:
        created = set()
        for name in accepted:
            if name not in created:
                store.create(name)
                created.add(name)
        for name in created:
            story = store.load(name)
            assert story is not None and story.name == name
        assert {r.name for r in store.list_stories()} == created
    finally:
        store.close()


SLUG_OK = re.compile(r"[\w.-]+")


@SETTINGS
@given(name=st.text(any_char, max_size=300))
@example(name="../../etc/passwd")
@example(name="." * 90 + "x")
@example(name="\\\\server\\share")
def test_slug_is_a_safe_non_empty_file_name(name):
    s = slug(name)
    assert s and len(s) <= 80
    # letters and digits (any script, as the shipped tests expect: 'café_1.2'), '-', '_' and '.'
    assert all(c.isalnum() or c in "-_." for c in s), s
    assert SLUG_OK.fullmatch(s)
    assert not s.startswith(".") and s not in (".", "..")
    assert "/" not in s and "\\" not in s and "\x00" not in s
    assert not any(unicodedata.category(c).startswith(("C", "Z")) for c in s)
    ascii_only = name.isascii()
    if ascii_only:  # ASCII names give the portable set
        assert re.fullmatch(r"[A-Za-z0-9._-]+", s)


def test_slug_fits_a_file_name_in_bytes():
    s = slug("\U00020000" * 100)  # CJK Extension B: letters, 4 bytes each in UTF-8
    assert len(s.encode()) <= 255


# --- rendering ------------------------------------------------------------------------------------


turns_st = st.lists(
    st.builds(Turn, st.sampled_from([PERSON, MODEL]), st.text(any_char, max_size=40)),
    max_size=6,
)
name_st = st.text(any_char, min_size=1, max_size=30).filter(
    lambda n: n.strip() and not any(unicodedata.category(c)[0] == "C" for c in n)
)


@SETTINGS
@given(name=name_st, turns=turns_st)
@example(name="#", turns=[Turn(PERSON, "  "), Turn(MODEL, "\n\n*"), Turn(PERSON, "**x**\n- a\n1. b\n> q")])
@example(name="T", turns=[Turn(PERSON, "a\n===\n    code\n&amp; <b>\n`x`")])
def test_render_md_parses_and_txt_is_the_text(name, turns):
    from markdown_it import MarkdownIt

    assert render(name, turns, "txt") == "".join(t.text for t in turns)
    md = render(name, turns, "md")
    assert md.startswith("# ") and md.endswith("\n")
    MarkdownIt().render(md)
    MarkdownIt("commonmark").render(md)


def _html_text(md: str) -> str:
    import html

    from markdown_it import MarkdownIt

    return html.unescape(re.sub(r"<[^>]*>", "", MarkdownIt("commonmark").render(md)))


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


# Markdown-significant ASCII and some of everything else, but not what the known bugs below need
# ('&' entities, '=' setext underlines, tabs and 4-space indents) nor NUL (CommonMark makes it U+FFFD).
md_char = st.sampled_from("aZ9 \n\n!\"#$%'()*+,-./:;<>?@[\\]^_`{|}~\u00e9\U0001f600\u05d0")
md_text = st.text(md_char, max_size=30)
INDENTED = re.compile(r"(^|\n) {4}")


@SETTINGS
@given(texts=st.lists(md_text, max_size=5))
@example(texts=["Anna *said*\n\nthen_left", " 2*3 = 6 \\ ok\n", "- End\n1. x\n> q\n# h\n+ y\n***\n```"])
def test_render_md_of_model_text_reads_back_as_the_same_text(texts):
    """Escaping alone (model turns are not bolded): the text comes back, and no markdown structure appears."""
    from markdown_it import MarkdownIt

    turns = [Turn(MODEL, t) for t in texts]
    assume(not INDENTED.search("".join(texts)))
    md = render("My tale", turns, "md")
    html = MarkdownIt("commonmark").render(md)
    assert set(re.findall(r"</?(\w+)", html)) <= {"h1", "p", "br"}, html
    assert html.count("<h1>") == 1
    assert _squash(_html_text(md)) == _squash("My tale" + "".join(texts))


@pytest.mark.parametrize(
    "turns",
    [
        [Turn(PERSON, "9"), Turn(PERSON, "9")],  # adjacent person turns: '**9****9**'
        [Turn(PERSON, "Anna."), Turn(MODEL, "He left")],  # '**Anna.**He': closer after punctuation, before a letter
        [Turn(MODEL, "He said"), Turn(PERSON, "(quietly)")],  # 'said**(': opener after a letter, before punctuation
    ],
    ids=["adjacent-person-turns", "punctuation-then-letter", "letter-then-punctuation"],
)
def test_render_md_bold_person_turns_at_boundaries(turns):
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(render("T", turns, "md"))
    assert "**" not in html and "<strong>" in html, html


def test_render_md_keeps_ampersand_entities_literal():
    assert _squash(_html_text(render("T", [Turn(MODEL, "fish &amp; chips &copy;")], "md"))) == "Tfish&amp;chips&copy;"


def test_render_md_setext_underline_is_text():
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(render("T", [Turn(MODEL, "Chapter\n===\nIt began.")], "md"))
    assert html.count("<h1>") == 1


def test_render_md_indented_line_is_text():
    text = "He wrote:\n\n    2*3 = 6_ok"
    assert _squash(_html_text(render("T", [Turn(MODEL, text)], "md"))) == _squash("T" + text)

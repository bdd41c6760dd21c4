"""Bans: texts the model never writes, exactly (charterm/engine/bans.py), with the shipped model, int8, one thread.

What is checked is what the person gets: the text as written (never holding a banned text), what was shown
while it was written (never taken back), the next words offered, the settings saved with a story, and the
command line's answers to bad values.
"""

import json
import random

import pytest
import torch
from conftest import ROOT, cli_in_process, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from charterm.engine.bans import BanFilter, BannedGeneration, Bans, step_rows
from charterm.engine.sampling import CharSampler, Generation, Stepper, run_ids
from charterm.errors import UsageError
from charterm.settings import MAX_BAN, Settings, parse_setting
from charterm.story.session import Session
from charterm.story.store import Store

ANNA = ROOT / "models" / "anna.safetensors"
COMMON = ["said", "Levin"]  # the unbanned model writes these every few hundred chars


@pytest.fixture(scope="module")
def loaded():
    from charterm.engine.checkpoint import load_model

    return load_model(ANNA)


@pytest.fixture(scope="module")
def stepper(loaded):
    return Stepper(loaded.model, "int8")


def start(loaded, text: str = "\n"):
    v = loaded.vocab
    return run_ids(loaded.model, [v.index[c] for c in text])


def write(loaded, stepper, n: int, bans=(), seed: int = 1, temperature: float = 1.0, prime: str = "\n"):
    """n chars the model shows after `prime`, and the generation (its rewinds, why it ended)."""
    logits, state = start(loaded, prime)
    v = loaded.vocab
    sampler = CharSampler(5, temperature, seed, v.unknown_id)
    if bans:
        gen = BannedGeneration(stepper, logits, state, sampler, Bans(bans), v.chars, prime)
    else:
        gen = Generation(stepper, logits, state, sampler)
    return "".join(v.chars[i] for _, i in zip(range(n), gen, strict=False)), gen


# --- the matcher ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    bans=st.lists(st.text(alphabet="ab c", min_size=1, max_size=5), min_size=1, max_size=6),
    text=st.text(alphabet="ab cd", max_size=40),
)
def test_the_matcher_knows_at_each_char_which_banned_text_ends_there(bans, text):
    b = Bans(bans)
    state = ""
    for i in range(1, len(text) + 1):
        state = b.step(state, text[i - 1])
        seen = text[:i]
        assert state == next(seen[k:] for k in range(i + 1) if any(t.startswith(seen[k:]) for t in bans))
        ending = [len(t) for t in bans if seen.endswith(t)]
        assert b.matched(state) == (min(ending) if ending else 0)


# --- generation under bans --------------------------------------------------------------------------------


def test_100k_chars_of_generation_never_hold_a_banned_text_and_what_was_shown_is_never_taken_back(loaded, stepper):
    """8 rows stepped together, 12,500 chars each: every char a row lets out is final (the shown text only
    grows), the text never holds "said" or "Levin", and the model did write them (each rewind is one)."""
    v, bans = loaded.vocab, Bans(COMMON)
    logits, state = start(loaded)
    rows = [BanFilter(bans, v.chars, CharSampler(5, 1.0, r, v.unknown_id), logits, stepper.from_state(state))
            for r in range(8)]
    shown = [[] for _ in rows]
    while min(map(len, shown)) < 12_500:
        step_rows(stepper, rows)
        for row, out in zip(rows, shown, strict=True):
            before = len(out)
            while (got := row.take()) is not None:
                out.append(v.chars[got[0]])
            held = "".join(v.chars[h.id] for h in row.held)
            assert not bans.found_in("".join(out[max(0, before - 10):]) + held)  # nor in what is held
    texts = ["".join(out) for out in shown]
    assert sum(map(len, texts)) >= 100_000
    assert all(not bans.found_in(t) for t in texts)
    assert all(row.ended is None for row in rows)
    assert sum(row.rewinds for row in rows) > 100  # "said" alone comes about twice in 1,000 chars unbanned


def test_bans_that_never_match_change_nothing(loaded, stepper):
    plain, _ = write(loaded, stepper, 3000, seed=5)
    banned, gen = write(loaded, stepper, 3000, bans=["zzzq", "Xx"], seed=5)
    assert banned == plain and gen.row.rewinds == 0


def test_the_char_that_began_a_banned_text_is_ruled_out_there_and_the_next_best_comes(loaded):
    fp32 = Stepper(loaded.model, "fp32")
    greedy, _ = write(loaded, fp32, 600, temperature=0)
    i = greedy.find(" strange")
    assert i > 0, greedy
    ban = greedy[i : i + 8]
    text, gen = write(loaded, fp32, 600, bans=[ban], temperature=0)
    assert text[:i] == greedy[:i] and ban not in text and gen.row.rewinds >= 1
    logits, _ = start(loaded, "\n" + greedy[:i])
    order = [loaded.vocab.chars[k] for k in logits.argsort(descending=True).tolist()]
    assert order[0] == greedy[i] and text[i] == order[1]


def test_a_rewind_goes_back_past_a_ban_that_began_later_when_an_earlier_one_completes(loaded, stepper):
    """Greedy text T; B = T[j:j+3]. Under B alone the model writes Y at j. A = T[j-2:j] + what it writes there.
    Under A and B: B completes, back to j, then A completes: back to j-2, which must still be held."""
    greedy, _ = write(loaded, stepper, 400, temperature=0)
    for j in range(20, 300):
        b = greedy[j : j + 3]
        if greedy.find(b) != j:
            continue
        after_b, _ = write(loaded, stepper, 400, bans=[b], temperature=0)
        a = greedy[j - 2 : j] + after_b[j : j + 2]
        if after_b[:j] == greedy[:j] and a not in greedy[: j + 2] and a not in after_b[: j + 1] and b not in a:
            break
    else:
        pytest.fail("no place to try")
    text, gen = write(loaded, stepper, 400, bans=[a, b], temperature=0)
    assert a not in text and b not in text and text[: j - 2] == greedy[: j - 2] and text[j - 2 : j] != a[:2]
    assert gen.row.rewinds >= 2


def test_a_ban_counts_across_the_start_of_the_turn(loaded, stepper):
    prime = '"I am coming," she sai'
    plain, _ = write(loaded, stepper, 20, temperature=0, prime=prime)
    assert plain[0] == "d"
    text, gen = write(loaded, stepper, 20, bans=["said"], temperature=0, prime=prime)
    assert "said" not in prime + text and gen.row.rewinds == 1


def test_random_bans_from_the_models_own_text_never_appear(loaded, stepper):
    rng = random.Random(3)
    for trial in range(12):
        plain, _ = write(loaded, stepper, 300, seed=trial)
        bans = []
        for _ in range(rng.randint(1, 6)):
            at, n = rng.randrange(len(plain) - 6), rng.randint(2, 6)
            bans.append(plain[at : at + n])
        text, gen = write(loaded, stepper, 300, bans=bans, seed=trial)
        assert not Bans(bans).found_in(text), (bans, text)
        assert len(text) == 300 or gen.ended


def test_nothing_left_to_choose_ends_the_turn_with_a_notice(loaded):
    every = [c for c in loaded.vocab.chars if c != loaded.vocab.unknown]
    session = Session(loaded, settings=Settings(seed=1, chars=200, bans=tuple(every)))
    session.append_person_turn("Anna")
    turn = session.continue_().run()
    assert turn is None and session.text == "Anna"
    assert any("the bans leave the model nothing to write here" in n for n in session.notices)
    session.notices.clear()
    session.update_settings(bans=tuple(c for c in every if c not in "ab"))
    turn = session.continue_().run()  # only "a" and "b" are left: some 80 rewinds a char
    assert turn is not None and set(turn.text) <= {"a", "b"} and len(turn.text) == 200


def test_the_state_after_the_chars_shown_is_exactly_theirs_whatever_is_still_held(loaded, stepper):
    v = loaded.vocab
    for n in (500, 517, 1000):
        text, gen = write(loaded, stepper, n, bans=COMMON, seed=8)
        logits, state = start(loaded)
        layers = stepper.from_state(state)
        for ch in text:
            stepper.step(torch.tensor([v.index[ch]]), layers)
        for mine, theirs in zip(gen.state, stepper.to_state(layers), strict=True):
            assert torch.equal(mine, theirs)


# --- settings, next words -----------------------------------------------------------------------------------


def test_a_storys_bans_are_saved_with_its_settings(home, loaded):
    store = Store()
    session = Session.open(store, "ball", loaded)
    session.update_settings(bans=("said", " Levin"))
    store.close()
    store = Store()
    assert store.load("ball").settings["bans"] == ["said", " Levin"]
    assert Session.open(store, "ball", loaded).settings.bans == ("said", " Levin")
    store.close()


@pytest.mark.parametrize(
    "raw, says",
    [
        ('[""]', "bans must be a list of at most 100 different texts of 1 to 100 chars"),
        (json.dumps(["x" * (MAX_BAN + 1)]), "bans must be"),
        ('["a", "a"]', "bans must be"),
        ("said", "bans must be"),
        ('"said"', "bans must be"),
    ],
)
def test_bad_bans_say_what_is_allowed(raw, says):
    with pytest.raises(UsageError, match=says):
        parse_setting("ban", raw)
    assert parse_setting("ban", '["said", " Levin\\n"]') == ("bans", ("said", " Levin\n"))


def test_next_words_never_offer_a_banned_text_nor_one_they_would_complete(loaded):
    session = Session(loaded, settings=Settings(adapt=False))
    session.append_person_turn('"What are you doing?" said')
    assert any("Levin" in c.text for c in session.next_words(9))
    session.update_settings(bans=("Levin",))
    words = [c.text for c in session.next_words(9)]
    assert len(words) == 9 and not any("Levin" in w for w in words)
    session = Session(loaded, settings=Settings(adapt=False))
    session.append_person_turn('"What are you doing?" said Lev')
    assert session.next_words(1)[0].text.startswith("in")
    session.update_settings(bans=("Levin",))
    assert not any(("Lev" + c.text).find("Levin") >= 0 for c in session.next_words(9))


# --- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, says",
    [
        (["--ban", ""], "charterm: error: --ban: a banned text needs at least one char"),
        (["--ban", "x" * 101], "charterm: error: --ban: a banned text can be at most 100 chars (got 101)"),
    ],
)
@pytest.mark.parametrize("command", ["generate", "next"])
def test_bad_bans_on_the_command_line_are_one_line_and_exit_2(capsys, monkeypatch, command, args, says):
    code, out, err = cli_in_process(capsys, monkeypatch, command, *args)
    assert (code, out, err.strip()) == (2, "", says)


def test_generate_with_bans_prints_exactly_the_text_it_keeps_and_never_a_banned_one(home):
    env = {"CHARTERM_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    prime = '"Yes," said Levin'
    args = ["generate", "--story", "ball", "--prime", prime, "--chars", "2000", "--seed", "2", "--no-adapt"]
    plain = run_cli(*args[:2], "plain", *args[3:], env=env)
    assert plain.returncode == 0 and "said" in plain.stdout and "Levin" in plain.stdout
    r = run_cli(*args, "--ban", "said", "--ban", "Levin", env=env)
    assert r.returncode == 0, r.stderr
    store = Store()
    turns = store.load("ball").turns
    store.close()
    assert [t.text for t in turns][1] == r.stdout and len(r.stdout) == 2000
    assert "said" not in r.stdout and "Levin" not in r.stdout
    words = run_cli("next", "--prime", '"What are you doing?" said', "--ban", " Stepan", "--json", env=env)
    assert words.returncode == 0 and not any("Stepan" in w["text"] for w in json.loads(words.stdout))

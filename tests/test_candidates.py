"""What the model would write next (charterm/engine/candidates.py), on the shipped model: whole words with
the probability the model gives them, through the Session, `charterm next`, and for written chars."""

import json
import math

import pytest
import torch
from conftest import ROOT, cli_in_process

from charterm.engine.candidates import ENDS, MAX_LEAD, char_probs, next_words
from charterm.engine.checkpoint import load_model
from charterm.engine.sampling import Stepper
from charterm.story.session import Session
from charterm.story.store import MODEL, PERSON, Store, Turn

ANNA = ROOT / "models" / "anna.safetensors"
PRIMES = ['"What are you doing?" said', "Anna went to the", "He looked at her, and", "Levin"]


@pytest.fixture(scope="module")
def loaded():
    return load_model(ANNA)


def session_after(loaded, prime: str, precision: str = "int8") -> Session:
    s = Session(loaded, precision=precision)
    s.append_person_turn(prime)
    return s


def is_word(text: str) -> bool:
    """Leading whitespace (at most MAX_LEAD), then non-space chars; an ENDS mark only as the last."""
    body = text.lstrip()
    return (
        0 < len(body)
        and len(text) - len(body) <= MAX_LEAD
        and not any(c.isspace() for c in body)
        and not any(c in ENDS for c in body[:-1])
    )


@torch.no_grad()
def word_probability(loaded, session: Session, text: str) -> float:
    """The model's probability (full precision, one pass) that its next word is exactly `text`: each
    char's, times that of what ends it (its own ENDS mark, else any whitespace)."""
    ids = [loaded.vocab.index[c] for c in text]
    state = session.state
    probs, after = char_probs(loaded.model, ids, state)
    p = math.prod(probs)
    if text[-1] in ENDS:
        return p
    nxt = torch.softmax(loaded.model.fc(after[0][-1]).reshape(-1), 0)
    return p * sum(float(nxt[i]) for i, c in enumerate(loaded.vocab.chars) if c.isspace())


@pytest.mark.parametrize("prime", PRIMES)
def test_candidates_are_whole_words_with_the_models_probability(loaded, prime):
    s = session_after(loaded, prime, precision="fp32")
    found = s.next_words(5)
    assert len(found) == 5 and len({c.text for c in found}) == 5
    assert all(is_word(c.text) for c in found), found
    ps = [c.p for c in found]
    assert ps == sorted(ps, reverse=True) and all(0 < p <= 1 for p in ps) and sum(ps) <= 1
    for c in found:
        assert c.p == pytest.approx(word_probability(loaded, s, c.text), rel=1e-3)


def test_candidates_are_deterministic_and_the_beam_finds_what_a_wider_one_does(loaded):
    s = session_after(loaded, PRIMES[0])
    state = s.state
    assert s.next_words(9) == s.next_words(9)
    assert [c.text for c in s.next_words(1)] == [s.next_words(9)[0].text]
    wide = next_words(Stepper(loaded.model, "fp32"), loaded.vocab, state, 5, beam=64)
    assert [c.text for c in s.next_words(5)][:3] == [c.text for c in wide][:3]


def test_a_story_that_learned_offers_the_words_of_the_weights_it_writes_with(loaded, home):
    store = Store()
    s = Session.open(store, "learned", loaded)
    s.append_person_turn("Levin went out into the fields with the peasants, and Levin mowed. " * 3)
    assert s.learner is not None and s.learner.chars > 0
    adapted = next_words(Stepper(s.learner.adapter.model, "fp32"), loaded.vocab, s.adapted_state(), 5)
    base = next_words(Stepper(loaded.model, "fp32"), loaded.vocab, s.state, 5)
    assert s.next_words(5) == adapted != base
    store.close()


def test_words_must_be_1_to_9(loaded):
    from charterm.errors import UsageError

    s = Session(loaded)
    for bad in (0, 10, -1):
        with pytest.raises(UsageError, match="from 1 to 9"):
            s.next_words(bad)


def test_a_picked_word_is_the_models_turn_with_the_state_it_implies(loaded, home):
    store = Store()
    s = Session.open(store, "pick", loaded)
    s.append_person_turn(PRIMES[0])
    word = s.next_words(3)[1]
    probs = s.append_model_text(word.text)
    assert len(probs) == len(word.text) and all(0 < p <= 1 for p in probs)
    assert [(t.author, t.text) for t in store.load("pick").turns] == [(PERSON, PRIMES[0]), (MODEL, word.text)]
    fresh = session_after(loaded, PRIMES[0] + word.text)  # the same text, fed in one go
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(s.state, fresh.state, strict=True))
    store.close()


def test_generation_reports_the_probability_of_each_char_it_writes(loaded):
    s = Session(loaded, precision="fp32")
    s.update_settings(seed=5, chars=40)
    with s.continue_() as cont:
        text = "".join(cont)
    assert len(cont.probs) == len(text) and all(0 < p <= 1 for p in cont.probs)
    ids = [loaded.vocab.index[c] for c in text]
    start = Session(loaded, precision="fp32")
    expected, _ = char_probs(loaded.model, ids, start.state)
    assert cont.probs == pytest.approx(expected, rel=1e-3)


# --- charterm next -----------------------------------------------------------------------------------


def test_next_prints_the_candidates_as_json_and_as_a_table(loaded, capsys, monkeypatch):
    code, out, err = cli_in_process(capsys, monkeypatch, "next", "--prime", PRIMES[0], "--json", "--words", "7")
    assert code == 0 and err == ""
    rows = json.loads(out)
    want = session_after(loaded, PRIMES[0]).next_words(7)
    assert rows == [{"text": c.text, "p": round(c.p, 6)} for c in want]
    code, out, _ = cli_in_process(capsys, monkeypatch, "next", "--prime", PRIMES[0], "--words", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    for i, (line, c) in enumerate(zip(lines, want, strict=False), 1):
        assert line.split(maxsplit=2) == [str(i), f"{100 * c.p:.2f}%", json.dumps(c.text)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--words", "0"], "--words must be a whole number from 1 to 9 (got 0)"),
        (["--story", "nowhere"], "no story named 'nowhere' (see `charterm stories list`)"),
        (["--story", "a\nb"], "story name"),
    ],
)
def test_next_bad_input_is_one_line(capsys, monkeypatch, home, args, message):
    code, out, err = cli_in_process(capsys, monkeypatch, "next", *args)
    assert code in (1, 2) and out == ""
    assert err.startswith("charterm: error: ") and message in err and len(err.splitlines()) == 1


def test_next_on_a_story_uses_its_text_and_state_and_changes_nothing(loaded, capsys, monkeypatch, home):
    store = Store()
    story = store.open("ball", str(ANNA))
    revision = store.append_turn(story.id, story.revision, Turn(PERSON, "Anna went to the ball."))
    store.append_turn(story.id, revision, Turn(MODEL, ' "What are you doing?" said'))
    before = store.load("ball")
    store.close()
    code, out, _ = cli_in_process(capsys, monkeypatch, "next", "--story", "ball", "--json")
    want = session_after(loaded, before.text).next_words(5)
    assert code == 0 and json.loads(out) == [{"text": c.text, "p": round(c.p, 6)} for c in want]
    code, out, _ = cli_in_process(capsys, monkeypatch, "next", "--story", "ball", "--prime", " Kitty", "--json")
    want = session_after(loaded, before.text + " Kitty").next_words(5)  # the prime goes after the story
    assert [r["text"] for r in json.loads(out)] == [c.text for c in want]
    assert [r["p"] for r in json.loads(out)] == pytest.approx([c.p for c in want], rel=1e-4)
    store = Store()
    after = store.load("ball")
    store.close()
    assert (after.revision, after.text, after.model_path) == (before.revision, before.text, before.model_path)
    assert [(t.state, t.fingerprint) for t in after.turns] == [(t.state, t.fingerprint) for t in before.turns]

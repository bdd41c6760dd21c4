"""A story written by a person and the model together, on a real model and real SQLite files:
turns are what was shown, states are what feeding the text gives, undo/retry/stop are exact,
caches are used or rebuilt, other writers are merged, drafts survive a crash (also a real kill -9)."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import run_cli

import charterm.story.continuation as continuation_mod
import charterm.story.session as session_mod
import charterm.story.store as store_mod
from charterm.config import ModelConfig
from charterm.engine.checkpoint import load_model, pack_state, save_model, unpack_state
from charterm.engine.model import CharModel
from charterm.engine.sampling import run_ids
from charterm.errors import UsageError
from charterm.story import learning
from charterm.story.session import Session, Settings
from charterm.story.store import MODEL, PERSON, Store

IN_VOCAB = "every family is happy in its own way. "  # chars any tiny model's vocabulary has


@pytest.fixture(scope="module")
def model_path(request):
    """The session's tiny model, trained and used with one torch thread: on a busy 2-core machine
    torch's thread pool makes one-char-at-a-time work many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield request.getfixturevalue("tiny_model")
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def loaded(model_path):
    return load_model(model_path)


@pytest.fixture
def store(home):
    s = Store()
    yield s
    s.close()


@pytest.fixture
def other_model(loaded, tmp_path):
    """A second model over the same vocabulary: random weights, other sizes, other fingerprint."""
    torch.manual_seed(123)
    model = CharModel(ModelConfig(vocab_size=len(loaded.vocab), hidden=24, layers=1))
    path = tmp_path / "other.safetensors"
    save_model(path, model, loaded.vocab, {"note": "random init for tests"})
    other = load_model(path)
    assert other.fingerprint != loaded.fingerprint
    return other


def start_state(loaded):
    return run_ids(loaded.model, [loaded.vocab.index["\n"]])[1]


def fed_state(loaded, text):
    """The state after `text`, fed in one go from the state every story starts from."""
    folded, _ = loaded.vocab.fold(text)
    state = start_state(loaded)
    if folded:
        state = run_ids(loaded.model, [loaded.vocab.index[c] for c in folded], state)[1]
    return state


def assert_close(a, b, rtol=2e-5, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        assert torch.allclose(x, y, rtol=rtol, atol=atol), (x - y).abs().max().item()


def assert_equal(a, b):
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def db_turns(home, name):
    """The story as another process would see it: a fresh connection."""
    s = Store(home / "stories.db")
    try:
        story = s.load(name)
        return [(t.author, t.text) for t in story.turns], story
    finally:
        s.close()


def session(store, loaded, name="s", precision="fp32", **settings):
    settings.setdefault("seed", 1)
    return Session.open(store, name, loaded, settings=Settings(**settings), precision=precision)


# --- turns and states -------------------------------------------------------------------------


def test_turns_are_what_was_shown_and_states_are_what_feeding_the_text_gives(store, home, loaded):
    s = session(store, loaded, chars=150)
    assert s.text == "" and s.runs() == []
    assert_close(s.state, start_state(loaded))

    s.append_person_turn("every family ")
    assert_close(s.state, fed_state(loaded, s.text))
    shown = []
    with s.continue_() as cont:
        for ch in cont:
            assert isinstance(ch, str) and len(ch) == 1
            shown.append(ch)
    assert len(shown) == 150
    assert s.turns[-1].author == MODEL and s.turns[-1].text == "".join(shown) == cont.turn.text
    assert_close(s.state, fed_state(loaded, s.text))

    s.append_person_turn("is happy ")
    cont = s.continue_(80)
    second = "".join(cont)
    assert len(second) == 80
    assert s.turns[-1].text == "is happy "  # nothing is committed before close()
    cont.close()
    assert s.turns[-1].text == second

    s.catch_up()  # what the worker does when idle: the states it left for after the turn
    runs, story = db_turns(home, "s")
    assert runs == [(PERSON, "every family "), (MODEL, "".join(shown)), (PERSON, "is happy "), (MODEL, second)]
    assert story.revision == 4
    # every cached state is the session's state after that turn
    for i, t in enumerate(story.turns):
        assert t.fingerprint == loaded.fingerprint
        assert_equal(unpack_state(t.state, loaded), s.ensure_state(i))


def test_continuation_close_commits_what_was_yielded(store, home, loaded):
    s = session(store, loaded)
    s.append_person_turn("every family ")
    cont = s.continue_(120)
    text = "".join(cont)
    turn = cont.close()
    assert cont.close() is turn  # closing twice commits once
    assert turn.text == text and len(text) == 120
    assert db_turns(home, "s")[0] == [(PERSON, "every family "), (MODEL, text)]
    assert_close(s.state, fed_state(loaded, "every family " + text))


def test_same_seed_same_story_and_run_is_the_same_as_iterating(tmp_path, loaded):
    texts = []
    for i in range(2):
        st = Store(tmp_path / f"{i}.db")
        s = session(st, loaded, seed=42, chars=100)
        s.append_person_turn("every family ")
        texts.append((s.continue_().run().text, "".join(c for c in s.continue_(60))))
        st.close()
    assert texts[0] == texts[1]
    assert texts[0][0] != texts[0][1][:60]


# --- undo and retry ---------------------------------------------------------------------------


def test_undo_restores_exactly_the_previous_state(store, home, loaded):
    s = session(store, loaded, chars=60)
    assert s.undo() is None  # nothing to undo in an empty story
    s.append_person_turn("every family ")
    after_person = tuple(x.clone() for x in s.state)
    s.continue_().run()
    after_model = tuple(x.clone() for x in s.state)
    s.append_person_turn("is happy ")

    undone = s.undo()
    assert (undone.author, undone.text) == (PERSON, "is happy ")
    assert_equal(s.state, after_model)
    assert [a for a, _ in db_turns(home, "s")[0]] == [PERSON, MODEL]

    undone = s.undo()
    assert undone.author == MODEL
    assert_equal(s.state, after_person)
    assert db_turns(home, "s")[0] == [(PERSON, "every family ")]

    s.undo()
    assert_equal(s.state, start_state(loaded))
    assert s.undo() is None
    runs, story = db_turns(home, "s")
    assert runs == [] and story.revision == 6  # 3 appends, 3 undos


def test_undo_then_reopen_continues_from_the_right_state(store, home, loaded):
    s = session(store, loaded, chars=40)
    s.append_person_turn("every family ")
    s.continue_().run()
    s.append_person_turn("is ")
    s.undo()
    st2 = Store(home / "stories.db")
    s2 = Session(loaded, st2, st2.load("s"), precision="fp32")
    assert s2.text == s.text
    assert_close(s2.state, s.state)
    st2.close()


def test_retry_replaces_the_models_turn_and_keeps_the_persons(store, home, loaded):
    s = session(store, loaded, chars=100)
    s.append_person_turn("every family ")
    first = s.continue_().run()
    before_retry = tuple(x.clone() for x in s.ensure_state(0))

    second = s.retry().run()
    assert [t.author for t in s.turns] == [PERSON, MODEL]
    assert s.turns[0].text == "every family "
    assert second.text != first.text  # the next seed of the session's seed stream
    assert_equal(s.ensure_state(0), before_retry)
    assert db_turns(home, "s")[0] == [(PERSON, "every family "), (MODEL, second.text)]
    assert_close(s.state, fed_state(loaded, "every family " + second.text))

    # after a person's turn, retry removes nothing: it just continues
    s.append_person_turn("is ")
    third = s.retry(30).run()
    assert [t.text for t in s.turns] == ["every family ", second.text, "is ", third.text]
    assert len(third.text) == 30


def test_sync_after_another_window_retried_drops_the_replaced_turns_state(store, home, loaded):
    a = session(store, loaded, chars=60)
    a.append_person_turn("every family ")
    old = a.continue_().run()
    store_b = Store(home / "stories.db")
    b = session(store_b, loaded, seed=9, chars=60)
    new = b.retry().run()
    assert new.text != old.text
    a.append_person_turn("is ")  # reloads: the model's turn is b's now
    assert a.runs() == [(PERSON, "every family "), (MODEL, new.text), (PERSON, "is ")]
    assert_close(a.ensure_state(1), fed_state(loaded, "every family " + new.text))
    assert_close(a.state, fed_state(loaded, a.text))
    store_b.close()


# --- stopping and limits ----------------------------------------------------------------------


def test_stop_from_another_thread_commits_exactly_the_yielded_chars(store, home, loaded):
    s = session(store, loaded)
    s.append_person_turn("every family ")
    cont = s.continue_(100_000)
    got = []
    for ch in cont:
        got.append(ch)
        if len(got) == 57:
            t = threading.Thread(target=cont.stop)
            t.start()
            t.join()
    assert len(got) == 57
    turn = cont.close()
    assert turn.text == "".join(got)
    assert db_turns(home, "s")[0][-1] == (MODEL, "".join(got))
    assert_close(s.state, fed_state(loaded, s.text))


def test_stop_while_streaming_keeps_what_was_shown(store, home, loaded):
    s = session(store, loaded)
    s.append_person_turn("every family ")
    cont = s.continue_(100_000)
    timer = threading.Timer(0.3, cont.stop)
    timer.start()
    got = "".join(cont)
    timer.join()
    turn = cont.close()
    assert 0 < len(got) < 100_000
    assert turn.text == got == db_turns(home, "s")[0][-1][1]
    assert_close(s.state, fed_state(loaded, s.text))


def test_a_continuation_with_no_chars_commits_nothing(store, home, loaded):
    s = session(store, loaded)
    s.append_person_turn("every family ")
    cont = s.continue_(50)
    assert cont.close() is None
    assert db_turns(home, "s")[0] == [(PERSON, "every family ")]
    _, story = db_turns(home, "s")
    assert story.revision == 1 and story.draft is None
    assert len(s.turns) == 1


def test_stop_before_the_first_char_yields_nothing(store, home, loaded):
    s = session(store, loaded)
    s.append_person_turn("every family ")
    cont = s.continue_(50)
    cont.stop()
    assert list(cont) == []
    assert cont.close() is None
    assert db_turns(home, "s")[0] == [(PERSON, "every family ")]


def test_chars_limit_is_respected(store, loaded):
    s = session(store, loaded, chars=23)
    s.append_person_turn("every ")
    assert len("".join(s.continue_())) == 23  # the settings' chars
    assert len(s.continue_(7).run().text) == 7  # an explicit limit wins
    assert len(s.continue_(1).run().text) == 1


def _first_stop(text: str, stop_at: str) -> int | None:
    """Index of the last char of the first place where `stop_at` allows a stop, or None."""
    pat = r"[.!?][\"')\]]*\s" if stop_at == "sentence" else r"\n\n"
    m = re.search(pat, text)
    return m.end() - 1 if m else None


@pytest.mark.parametrize("stop_at", ["sentence", "paragraph"])
def test_stop_at_ends_the_turn_at_the_first_sentence_or_paragraph_end(tmp_path, loaded, stop_at):
    hits = 0
    for seed in range(6):
        runs = {}
        for stop in ("none", stop_at):
            st = Store(tmp_path / f"{stop}-{seed}.db")
            s = session(st, loaded, precision="int8", seed=seed, chars=1000, stop_at=stop)
            s.append_person_turn("She said so.\n\n")
            runs[stop] = s.continue_().run().text
            st.close()
        full, stopped = runs["none"], runs[stop_at]
        assert len(full) == 1000  # without stop_at the same seed runs to the char limit
        end = _first_stop(full, stop_at)
        if end is None:
            assert stopped == full
            continue
        hits += 1
        assert stopped == full[: end + 1]  # the same chars, cut right after the first stop
        if stop_at == "sentence":
            assert re.search(r"[.!?][\"')\]]*\s\Z", stopped), stopped[-20:]
        else:
            assert stopped.endswith("\n\n")
        break
    assert hits >= 1, f"no {stop_at} end in 6 seeds x 1000 chars"


def test_settings_are_validated(store, loaded):
    for bad in (dict(top_k=-1), dict(temperature=-1), dict(temperature=11), dict(chars=-1), dict(chars=1_000_001)):
        with pytest.raises(UsageError):
            Settings(**bad)
    with pytest.raises(UsageError, match="stop must be one of"):
        Settings(stop_at="word")
    s = session(store, loaded, chars=50)
    with pytest.raises(UsageError):
        s.update_settings(top_k=-1)
    with pytest.raises(UsageError):
        s.update_settings(stop_at="word")
    assert s.settings == Settings(seed=1, chars=50)


def test_update_settings_persists(store, home, loaded):
    s = session(store, loaded)
    s.update_settings(top_k=3, temperature=0.5, chars=77, stop_at="sentence")
    st2 = Store(home / "stories.db")
    s2 = Session(loaded, st2, st2.load("s"))
    assert s2.settings == Settings(top_k=3, temperature=0.5, chars=77, stop_at="sentence", seed=1)
    st2.close()


def test_stored_settings_that_no_longer_validate_fall_back_to_defaults():
    s = Settings.from_dict({"top_k": -4, "temperature": 0.3, "chars": "many", "stop_at": "word", "junk": 1})
    assert s == Settings(temperature=0.3)


def test_a_new_seed_restarts_the_seed_stream(tmp_path, loaded):
    texts = []
    for i in range(2):
        st = Store(tmp_path / f"{i}.db")
        s = session(st, loaded, seed=5, chars=60)
        s.append_person_turn("every ")
        if i == 1:
            s.continue_().run()
            s.undo()
            s.update_settings(seed=5)  # same seed: the stream does not restart
            s.update_settings(seed=6)
            s.update_settings(seed=5)  # a changed seed does
        texts.append(s.continue_().run().text)
        st.close()
    assert texts[0] == texts[1]


# --- caches -----------------------------------------------------------------------------------


def _build_story(store, loaded, **kw):
    kw.setdefault("chars", 120)
    s = session(store, loaded, **kw)
    s.append_person_turn("every family ")
    s.continue_().run()
    s.append_person_turn("is happy. ")
    s.continue_().run()
    s.catch_up()  # as the worker does when idle: the last turns' states and the weights after them
    s.save_adaptation()  # and then this: reopening learns nothing again
    return s


def _count_feeds(monkeypatch):
    calls = []
    real = session_mod.run_ids

    def counting(model, ids, state=None):
        calls.append(len(ids))
        return real(model, ids, state)

    monkeypatch.setattr(session_mod, "run_ids", counting)
    return calls


def test_reopen_with_the_same_model_uses_the_cached_states(store, home, loaded, monkeypatch):
    monkeypatch.setattr(learning, "SAVE_CHARS", 0)  # the learned weights are saved too: nothing is learned again
    s = _build_story(store, loaded)
    calls = _count_feeds(monkeypatch)
    st2 = Store(home / "stories.db")
    s2 = Session(loaded, st2, st2.load("s"), precision="fp32")
    assert calls == [1]  # only the "\n" every story starts from: nothing of the story was re-fed
    assert s2.text == s.text
    assert s2._states[:-1] == [None] * 3 and s2._states[-1] is not None  # the rest is read when needed
    assert_equal(s2.state, s.state)
    assert_equal(s2.ensure_state(1), s.ensure_state(1))
    assert calls == [1]
    st2.close()


def test_reopen_after_the_cache_is_damaged_rebuilds_it_by_feeding(store, home, loaded, monkeypatch):
    monkeypatch.setattr(learning, "SAVE_CHARS", 0)  # the learned weights are saved: only the states are rebuilt
    s = _build_story(store, loaded)
    store.db.execute("UPDATE turns SET state = x'00ff'")
    calls = _count_feeds(monkeypatch)
    st2 = Store(home / "stories.db")
    s2 = Session(loaded, st2, st2.load("s"), precision="fp32")
    assert sum(calls) == 1 + len(s.text)  # the start, then the whole text
    assert_close(s2.state, s.state)
    assert_close(s2.state, fed_state(loaded, s.text))
    # the rebuilt state was written back to the cache
    last = Store(home / "stories.db").load("s").turns[-1]
    assert last.fingerprint == loaded.fingerprint
    assert_equal(unpack_state(last.state, loaded), s2.state)
    st2.close()


def test_reopen_with_another_model_rebuilds_the_state_from_the_text(store, home, loaded, other_model):
    s = _build_story(store, loaded)
    st2 = Store(home / "stories.db")
    s2 = Session(other_model, st2, st2.load("s"), precision="fp32")
    assert s2.text == s.text
    assert [x.shape for x in s2.state] == [(1, 1, 24), (1, 1, 24)]
    assert_close(s2.state, fed_state(other_model, s.text))
    assert "".join(s2.continue_(20)) != ""  # and it generates with the new model
    st2.close()
    # back to the first model: its cached states for the earlier turns are still good
    st3 = Store(home / "stories.db")
    s3 = Session(loaded, st3, st3.load("s"), precision="fp32")
    assert [x.shape for x in s3.state] == [(2, 1, 48), (2, 1, 48)]
    assert_close(s3.state, fed_state(loaded, s.text))
    st3.close()


def test_pack_state_round_trips_and_unpack_rejects_what_does_not_fit(loaded, other_model):
    state = fed_state(loaded, "every family")
    assert_equal(unpack_state(pack_state(state), loaded), state)
    assert unpack_state(pack_state(state), other_model) is None  # other shapes
    assert unpack_state(None, loaded) is None
    assert unpack_state(b"", loaded) is None
    assert unpack_state(b"\x00\xff", loaded) is None
    assert unpack_state(pack_state(state[:1]), loaded) is None  # an LSTM state has h and c


def test_many_turns_with_unreadable_caches_are_rebuilt(store, home, loaded):
    story = store.create("long")
    now, n = time.time(), 1500
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO turns (id, story_id, seq, author, text, created, state, fingerprint, parent) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (i + 1, story.id, i, PERSON, "ab"[i % 2], now, b"\x00\xff", loaded.fingerprint, i or None)
                for i in range(n)
            ],
        )
        db.execute("UPDATE stories SET head = ?, tip = ? WHERE id = ?", (n, n, story.id))
    s = Session(loaded, store, store.load("long"), precision="fp32")
    assert_close(s.state, fed_state(loaded, "ab" * 750))


# --- switching models -------------------------------------------------------------------------


def test_switch_model_keeps_the_text_and_rebuilds_the_state(store, home, loaded, other_model):
    s = _build_story(store, loaded)
    text = s.text
    s.switch_model(other_model)
    assert s.text == text
    assert [x.shape for x in s.state] == [(1, 1, 24), (1, 1, 24)]
    assert_close(s.state, fed_state(other_model, text))
    runs, story = db_turns(home, "s")
    assert "".join(t for _, t in runs) == text
    assert story.model_path == str(other_model.path)
    s.append_person_turn("every ")
    assert_close(s.state, fed_state(other_model, text + "every "))
    assert len(s.continue_(25).run().text) == 25


def test_context_chars_limits_what_is_fed_on_rebuild(store, loaded, other_model):
    s = _build_story(store, loaded, chars=60)
    s.context_chars = 50
    text = s.text
    assert len(text) > 100
    s.switch_model(other_model)
    assert_close(s.state, fed_state(other_model, text[-50:]))
    # reopening with another model under the same limit gives the same
    s2 = Session(loaded, store, store.load("s"), precision="fp32", context_chars=50)
    assert_close(s2.state, fed_state(loaded, text[-50:]))


# --- characters outside the vocabulary --------------------------------------------------------


def test_person_text_outside_the_vocabulary_is_kept_as_typed(store, home, loaded):
    s = session(store, loaded, chars=40)
    typed = "every caf\u00e9 \u201cis\u201d \u0416\U0001f600 "
    report = s.append_person_turn(typed)
    assert report
    desc = report.describe()
    assert "changed" in desc and "dropped" in desc and "'\u0416'" in desc and "'\U0001f600'" in desc
    assert s.text == typed
    assert db_turns(home, "s")[0] == [(PERSON, typed)]
    assert_close(s.state, fed_state(loaded, typed))

    before = tuple(x.clone() for x in s.state)
    report = s.append_person_turn("\U0001f600\u0416")  # nothing the model knows: the state does not move
    assert report and s.turns[-1].text == "\U0001f600\u0416"
    assert_equal(s.state, before)

    assert len(s.continue_().run().text) == 40
    assert not s.append_person_turn("every ")  # an in-vocabulary turn reports nothing
    # a reopen that has to rebuild folds the same way
    store.db.execute("UPDATE turns SET state = NULL")
    st2 = Store(home / "stories.db")
    s2 = Session(loaded, st2, st2.load("s"), precision="fp32")
    assert s2.text == s.text
    assert_close(s2.state, s.state)
    st2.close()


# --- other writers ----------------------------------------------------------------------------


def test_a_turn_from_another_session_is_merged_before_the_next_one(store, home, loaded):
    a = session(store, loaded)
    a.append_person_turn("every ")
    store_b = Store(home / "stories.db")
    b = session(store_b, loaded, seed=9)
    assert b.text == "every "
    b.append_person_turn("family ")
    b_model = b.continue_(30).run()

    assert a.notices == []
    a.append_person_turn("is happy ")
    assert any("changed in another window" in n for n in a.notices)
    expected = [(PERSON, "every "), (PERSON, "family "), (MODEL, b_model.text), (PERSON, "is happy ")]
    assert a.runs() == expected
    assert db_turns(home, "s")[0] == expected
    assert_close(a.state, fed_state(loaded, a.text))

    # a continuation that was running while b wrote lands after b's turn
    cont = a.continue_(40)
    shown = "".join(cont)
    b.append_person_turn("way. ")
    cont.close()
    expected += [(PERSON, "way. "), (MODEL, shown)]
    assert db_turns(home, "s")[0] == expected == a.runs()
    assert_close(a.state, fed_state(loaded, a.text))
    assert b.sync() and b.runs() == expected
    store_b.close()


# --- drafts and recovery ----------------------------------------------------------------------


def test_a_running_continuation_saves_drafts_every_half_second(store, home, loaded):
    assert session_mod.DRAFT_EVERY == 0.5
    s = session(store, loaded, precision="int8")
    s.append_person_turn("every ")
    cont = s.continue_(100_000)
    it = iter(cont)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.7:
        next(it)
    draft = db_turns(home, "s")[1].draft
    assert draft is not None and draft.author == MODEL
    assert 0 < len(draft.text) <= len(cont.text) and cont.text.startswith(draft.text)
    cont.stop()
    list(it)
    turn = cont.close()
    _, story = db_turns(home, "s")
    assert story.draft is None and story.turns[-1].text == turn.text == cont.text


def test_a_draft_left_behind_is_recovered_as_a_model_turn(store, home, loaded, monkeypatch):
    monkeypatch.setattr(continuation_mod, "DRAFT_EVERY", 0.0)  # where Continuation reads it
    s = session(store, loaded)
    s.append_person_turn("every ")
    cont = s.continue_(5000)
    it = iter(cont)
    for _ in range(60):
        next(it)
    # never closed, as if the process had died here: its writer is no longer live
    store_mod.LIVE_WRITERS.discard(cont.owner)
    shown = cont.text
    st2 = Store(home / "stories.db")
    s2 = Session.open(st2, "s", loaded, precision="fp32")
    recovered = s2.turns[-1]
    assert [t.author for t in s2.turns] == [PERSON, MODEL]
    assert recovered.text and shown.startswith(recovered.text) and len(recovered.text) >= 59
    assert any(f"recovered {len(recovered.text)} chars" in n for n in s2.notices)
    runs, story = db_turns(home, "s")
    assert runs == [(PERSON, "every "), (MODEL, recovered.text)] and story.draft is None
    assert_close(s2.state, fed_state(loaded, "every " + recovered.text))
    # recovered once: the next open has nothing to recover
    st3 = Store(home / "stories.db")
    s3 = Session.open(st3, "s", loaded)
    assert s3.notices == [] and s3.runs() == runs
    st2.close()
    st3.close()


def test_opening_a_story_while_another_window_generates_does_not_steal_its_draft(store, home, loaded, monkeypatch):
    monkeypatch.setattr(continuation_mod, "DRAFT_EVERY", 0.0)  # where Continuation reads it
    a = session(store, loaded)
    a.append_person_turn("every ")
    cont = a.continue_(80)
    it = iter(cont)
    for _ in range(40):
        next(it)
    st2 = Store(home / "stories.db")
    b = Session.open(st2, "s", loaded)  # a second window opens the story mid-generation
    for _ in it:
        pass
    cont.close()
    b.sync()
    assert db_turns(home, "s")[0] == [(PERSON, "every "), (MODEL, cont.text)]
    assert b.runs() == a.runs() == [(PERSON, "every "), (MODEL, cont.text)]
    st2.close()


def _env(home):
    return {
        **os.environ,
        "CHARTERM_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # one char at a time: torch's thread pool only slows it down
    }


@pytest.mark.slow
def test_kill_9_during_generation_loses_at_most_the_last_half_second(home, model_path, loaded):
    proc = subprocess.Popen(
        [sys.executable, "-m", "charterm", "generate", "--story", "S", "--prime", "Anna", "--chars", "100000"]
        + ["--model", str(model_path), "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(home),
    )
    received = []  # (time, total chars so far)
    chunks = []

    def reader():
        while data := os.read(proc.stdout.fileno(), 65536):
            chunks.append(data)
            received.append((time.monotonic(), len(b"".join(chunks).decode("utf-8", "ignore"))))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 90
        while not (received and received[-1][1] >= 300):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no output from charterm generate --story"
            time.sleep(0.02)
        time.sleep(1.5)  # drafts are saved every 0.5 s
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    printed = b"".join(chunks).decode("utf-8")
    assert printed and not printed.startswith("Anna")  # only the new text is printed
    # what had arrived a full second before the kill was shown more than one draft interval earlier
    shown_early = max((n for at, n in received if at <= killed_at - 1.0), default=0)
    assert shown_early > 0

    st = Store(home / "stories.db")
    assert st.integrity_check() == "ok"
    story = st.load("S")
    assert [(t.author, t.text) for t in story.turns] == [(PERSON, "Anna")]
    assert story.draft is not None
    s = Session(loaded, st, story)
    assert [t.author for t in s.turns] == [PERSON, MODEL]
    recovered = s.turns[-1].text
    assert any("recovered" in n for n in s.notices)
    # the draft is what was printed, give or take the last unflushed output buffer (30 ms)
    assert printed.startswith(recovered) or recovered.startswith(printed)
    assert len(recovered) >= shown_early
    runs, fresh = db_turns(home, "S")
    assert runs == [(PERSON, "Anna"), (MODEL, recovered)] and fresh.draft is None
    st.close()


# --- the CLI ----------------------------------------------------------------------------------


def test_generate_story_prints_only_the_new_text_and_saves_turns(home, model_path):
    env = {"CHARTERM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    args = ("generate", "--model", model_path, "--story", "cli tale", "--chars", "120")
    r = run_cli(*args, "--prime", "Anna", "--seed", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 120 and not r.stdout.startswith("Anna")
    assert r.stderr == ""
    runs, story = db_turns(home, "cli tale")
    assert runs == [(PERSON, "Anna"), (MODEL, r.stdout)]
    assert story.model_path == str(model_path.resolve())

    r2 = run_cli(*args, "--prime", " went", "--seed", "2", env=env)
    assert r2.returncode == 0, r2.stderr
    runs, story = db_turns(home, "cli tale")
    assert runs == [(PERSON, "Anna"), (MODEL, r.stdout), (PERSON, " went"), (MODEL, r2.stdout)]
    assert story.revision == 4 and story.draft is None

    shown = run_cli("stories", "show", "cli tale", env=env)
    assert shown.returncode == 0, shown.stderr
    full = "Anna" + r.stdout + " went" + r2.stdout
    assert shown.stdout == full + ("" if full.endswith("\n") else "\n")


# --- the tree of turns --------------------------------------------------------------------------


def clone(state):
    return tuple(s.clone() for s in state)


def test_undo_keeps_the_turn_and_redo_brings_back_its_text_and_exact_state(store, home, loaded):
    s = _build_story(store, loaded)
    text, states = s.text, [clone(s.ensure_state(i)) for i in range(4)]
    assert s.undo().author == MODEL and s.undo().author == PERSON
    assert_equal(s.state, states[1])
    assert [a for a, _ in db_turns(home, "s")[0]] == [PERSON, MODEL]  # the story is the shorter path...
    assert len(store.tree(s.story.id)) == 4  # ...and no turn was deleted
    assert s.redo().author == PERSON and s.redo().author == MODEL and s.redo() is None
    assert s.text == text and db_turns(home, "s")[0] == s.runs()
    assert_equal(s.state, states[3])
    s.undo()
    s.append_person_turn("new ")  # a new turn: redo has nowhere to go
    assert s.redo() is None and len(store.tree(s.story.id)) == 5


def test_retry_adds_a_version_and_switching_versions_is_exact(store, home, loaded):
    s = _build_story(store, loaded)
    first, first_state = s.turns[-1], clone(s.state)
    second = s.retry().run()
    assert s.versions() == (2, 2) and s.turns[-1] is second and first.text != second.text
    second_state = clone(s.state)
    assert s.switch_version(-1) == (1, 2) and s.turns[-1].id == first.id
    assert_equal(s.state, first_state)
    assert s.switch_version(+1) == (2, 2)
    assert_equal(s.state, second_state)
    with pytest.raises(UsageError, match="no version 3: this turn has 2"):
        s.switch_version(+1)
    assert db_turns(home, "s")[0] == s.runs()


def test_checkout_forks_and_the_old_continuation_stays_a_branch(store, home, loaded):
    s = _build_story(store, loaded)
    old_text, fork_at = s.text, s.turns[1]
    s.checkout(fork_at.id)
    assert len(s.turns) == 2 and s.text == old_text[: len(s.turns[0].text) + len(fork_at.text)]
    s.append_person_turn("Then Kitty ")
    s.continue_().run()
    tree = store.tree(s.story.id)
    assert len(tree) == 6 and sorted(t[0] for t in tree if t[1] == fork_at.id) == [3, 5]
    s.checkout(3)  # back on the old branch: the path to turn 3, and redo goes on to its end
    assert len(s.turns) == 3 and s.redo().id == 4 and s.text == old_text
    s.checkout(None)
    assert s.turns == [] and s.text == ""
    assert_equal(s.state, fed_state(loaded, ""))


def test_editing_a_turn_makes_a_new_version_from_the_turn_before_it(store, home, loaded):
    s = _build_story(store, loaded)
    old = s.turns[2]
    s.edit(2, "was happy. ")
    assert [t.text for t in s.turns][:2] == [t.text for t in db_turns(home, "s")[1].turns][:2]
    assert s.turns[-1].text == "was happy. " and s.turns[-1].author == PERSON and s.versions() == (2, 2)
    assert_close(s.state, fed_state(loaded, s.text))
    assert old.id in s.story.versions(s.turns[-1])
    with pytest.raises(UsageError, match="needs some text"):
        s.edit(0, "")


def test_a_branch_made_in_one_window_shows_in_the_other_and_no_turn_is_lost(store, home, loaded):
    a = _build_story(store, loaded)
    other = Store(home / "stories.db")
    b = Session(loaded, other, other.load("s"), precision="fp32")
    a.retry().run()  # a new version in window a
    assert b.sync() and b.versions() == (2, 2) and b.text == a.text
    b.switch_version(-1)
    a.append_person_turn("And a wrote on. ")  # after b moved the head: a reloads, then writes after it
    assert a.turns[-2].id == b.turns[-1].id and a.reloads == 1  # written after the version b chose
    b.sync()
    assert b.text == a.text and len(other.tree(b.story.id)) == 6
    other.close()


def test_moving_in_the_tree_gives_back_the_learned_weights_bit_for_bit(store, home, loaded):
    s = session(store, loaded, chars=30)
    s.append_person_turn("velmorth sat by the stove. ")
    s.continue_().run()
    s.append_person_turn("velmorth said nothing. ")
    s.catch_up()  # the worker, when idle: the weights after the last turn
    learned = {k: v.clone() for k, v in s.learner.adapter.model.state_dict().items()}
    s.checkout(s.turns[1].id)
    s.append_person_turn("kandish came in. ")
    s.catch_up()
    assert not all(torch.equal(v, s.learner.adapter.model.state_dict()[k]) for k, v in learned.items())
    s.checkout(s.turns[1].id)
    s.redo()  # the newest branch: kandish
    s.catch_up()
    s.switch_version(-1)  # the first: velmorth said nothing
    s.catch_up()
    now = s.learner.adapter.model.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in learned.items())

"""A story's model learns the person's turns (charterm.story.learning): exactly undoable, kept across
reopening, re-learned bit for bit when the kept weights are gone, the model's own turns never
learned, and /adapt off|on|reset."""

import sqlite3
from pathlib import Path

import pytest
import torch

from charterm.config import ADAPT_SEGMENT
from charterm.engine.checkpoint import load_model
from charterm.paths import default_model_path
from charterm.story import learning
from charterm.story.session import Session
from charterm.story.store import Store

FIXTURES = Path(__file__).parent / "fixtures"  # stories_v1.db: made by charterm at commit 735a349 (schema 1)
NAMED = "velmorth sat by the kandish stove and velmorth said to kandish, the stove is cold. "


@pytest.fixture(scope="module")
def model_path(request):
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


def weights(session: Session) -> dict[str, torch.Tensor]:
    """The weights the rule gives after the story's last turn (the worker catches up when idle)."""
    session.catch_up()
    return {k: v.clone() for k, v in session.learner.adapter.model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def write(session: Session, text: str, model_chars: int = 40) -> None:
    """A person's turn and the model's, then what the worker does when idle."""
    session.append_person_turn(text)
    session.continue_(model_chars).run()
    session.catch_up()


def test_undo_gives_back_every_weight_bit_for_bit_also_past_the_kept_snapshots(store, loaded):
    s = Session.open(store, "undo", loaded)
    history = [weights(s)]
    for k in range(learning.KEEP + 2):
        write(s, f"{NAMED[: 30 + 10 * k]}")
        history.append(weights(s))
    assert not same(history[0], history[1]) and not same(history[-2], history[-1])
    for want in reversed(history[:-1]):  # the last KEEP from memory, the older ones re-learned
        s.undo()  # the model's turn: nothing learned from it
        s.undo()
        assert same(weights(s), want)
    assert s.learner.chars == 0 and s.adaptation() == {"on": True, "chars": 0, "gain": 0.0}


def test_only_the_person_s_turns_are_learned(store, loaded):
    s = Session.open(store, "whose", loaded)
    s.append_person_turn(NAMED)
    after_person = weights(s)
    s.continue_(120).run()
    assert same(weights(s), after_person) and s.learner.chars == len(NAMED)
    assert s.generation_stepper() is not s.stepper  # the model writes with what it learned


def fed(*models) -> list[int]:
    """The length of every sequence the models read from now on (the steppers that write are not
    models: what they write is not counted)."""
    counts: list[int] = []
    for model in models:
        model.register_forward_pre_hook(lambda _module, args: counts.append(args[0].shape[1]))
    return counts


def test_a_turn_starts_once_its_last_chars_are_learned_and_ends_without_reading_it_again(store, loaded):
    """Before the model's first char the person's turn is learned ADAPT_SEGMENT chars at a time,
    each segment scored by the base and the adapted weights and read once by the weights that
    write, never the story's last READ_CHARS chars again; what was learned while it was typed
    (`prepare`, here after an edit that started it again) is not done again, to the same bits.
    After the model's last char nothing is read before the turn is committed."""
    turn, prepared, after = NAMED[:60] * 5, 3 * ADAPT_SEGMENT, {}
    for ahead in (False, True):
        s = Session.open(store, f"at once {ahead}", loaded)
        s.update_settings(seed=1)  # both stories alike
        write(s, NAMED * (learning.READ_CHARS // len(NAMED) + 1))
        if ahead:
            s.prepare(NAMED[::-1] * 2)  # typed, then rubbed out
            s.prepare(turn[: prepared + ADAPT_SEGMENT // 2])
        learned_before = s.learner.chars
        counts = fed(s.loaded.model, s.learner.adapter.model, *([s.learner.ahead.adapter.model] if ahead else []))
        s.append_person_turn(turn)
        with s.continue_(2_000) as cont:
            chars = iter(cont)
            next(chars)
            assert max(counts) <= ADAPT_SEGMENT  # no re-read of the story
            assert sum(counts) == 3 * (len(turn) - (prepared if ahead else 0))  # scored twice, read once
            assert s.learner.chars == learned_before + len(turn)
            for _ in chars:
                pass
            counts.clear()
        assert s.turns[-1].text == cont.text and len(cont.text) == 2_000 and counts == []
        s.catch_up()  # the worker, when idle: the base model's states of the two turns
        assert sum(counts) == len(turn) + len(cont.text) and all(state is not None for state in s._states)
        after[ahead] = weights(s), s._written[-2]
    assert same(after[False][0], after[True][0])
    assert all(torch.equal(a, b) for a, b in zip(after[False][1], after[True][1], strict=True))


def test_reopening_continues_with_the_saved_weights_or_learns_them_again_exactly(store, home, loaded, monkeypatch):
    monkeypatch.setattr(learning, "SAVE_CHARS", 100)
    s = Session.open(store, "reopen", loaded)
    for text in (NAMED, "the stove was cold. ", NAMED[::-1]):
        write(s, text)
    want, figures = weights(s), s.adaptation()
    s.save_adaptation()
    second = Store(home / "stories.db")
    learn = learning.Learner.learn
    monkeypatch.setattr(learning.Learner, "learn", lambda *a: pytest.fail("the saved weights were learned again"))
    again = Session.open(second, "reopen", loaded)
    assert same(weights(again), want) and again.adaptation() == figures
    monkeypatch.setattr(learning.Learner, "learn", learn)
    second.db.execute("DELETE FROM adaptations")  # the kept weights are only a cache
    third = Session.open(second, "reopen", loaded)
    assert same(weights(third), want) and third.adaptation() == figures
    second.close()


def test_a_short_story_keeps_where_learning_starts_but_not_its_weights(store, loaded):
    s = Session.open(store, "short", loaded)
    write(s, NAMED)
    s.reset_adaptation()
    write(s, "kandish laughed. ")
    s.save_adaptation()
    base, since, after, data = store.load_adaptation(s.story.id)
    assert (base, since, after, data) == (loaded.fingerprint, s.turns[1].id, s.turns[2].id, b"")


def test_another_window_s_turn_is_learned_in_both_windows_alike(store, home, loaded):
    one = Session.open(store, "two windows", loaded)
    write(one, NAMED)
    other_store = Store(home / "stories.db")
    other = Session.open(other_store, "two windows", loaded)
    write(other, "kandish laughed. ")
    one.sync()
    assert one.text == other.text and same(weights(one), weights(other))
    other.undo()
    other.undo()
    write(other, "the stove was cold. ")  # one re-learns from the snapshot it kept before the undone turn
    one.sync()
    assert one.text == other.text and same(weights(one), weights(other))
    other_store.close()


def test_adapt_off_writes_with_the_base_weights_and_on_learns_the_story_again(store, loaded):
    s = Session.open(store, "switch", loaded)
    write(s, NAMED)
    learned = weights(s)
    s.update_settings(adapt=False)
    assert s.learner is None and s.generation_stepper() is s.stepper and s.adaptation() == {"on": False}
    write(s, "the stove was cold. ")  # written while off: learned when it is turned on again
    s.update_settings(adapt=True)
    assert s.learner.chars == len(NAMED) + len("the stove was cold. ")
    s.undo()
    s.undo()
    assert same(weights(s), learned)
    assert store.load("switch").settings["adapt"] is True


def test_reset_forgets_what_was_learned_and_learns_from_there_on(store, home, loaded):
    s = Session.open(store, "reset", loaded)
    base = weights(s)
    write(s, NAMED)
    s.reset_adaptation()
    assert same(weights(s), base) and s.learner.chars == 0
    write(s, "kandish laughed. ")
    assert s.learner.chars == len("kandish laughed. ")
    want = weights(s)
    s.save_adaptation()
    second = Store(home / "stories.db")
    again = Session.open(second, "reset", loaded)
    assert same(weights(again), want) and again.learner.chars == len("kandish laughed. ")
    second.close()


def test_a_story_met_by_another_model_learns_only_its_last_chars(store, loaded, monkeypatch):
    monkeypatch.setattr(learning, "RELEARN_CHARS", 75)
    s = Session.open(store, "new model", loaded)
    for text in ("a" * 40, "b" * 40, "c" * 30):
        write(s, text)
    assert s.learner.chars == 110
    s.switch_model(load_model(default_model_path()))
    assert s.learner.chars == 70 and s.learner.since == s.turns[0].id  # the last two person turns, 70 <= 75


def test_relearn_since_counts_back_the_person_s_chars_only():
    from charterm.story.store import MODEL, PERSON, Turn

    turns = [Turn(a, t, id=i + 1) for i, (a, t) in enumerate([(PERSON, "x" * 6), (MODEL, "y" * 50), (PERSON, "z" * 5)])]
    assert learning.relearn_since(turns, 10) == 1  # the first turn's 6 chars would make 11
    assert learning.relearn_since(turns, 11) == 0


def test_the_learned_story_s_name_gets_likelier(store, loaded):
    s = Session.open(store, "names", loaded)
    for _ in range(6):
        s.append_person_turn(NAMED)
    s.catch_up()
    base, adapted = s.adaptation()["last_base"], s.adaptation()["last_adapted"]
    assert adapted < base - 0.1, s.adaptation()
    assert s.adaptation()["gain"] > 0


# --- the database: schema 1 (today's release) upgrades in place ---------------------------------


TURNS = "SELECT id, story_id, seq, author, text, state, fingerprint FROM turns ORDER BY id"


def test_a_database_from_schema_1_upgrades_in_place_after_a_backup_and_keeps_everything(tmp_path):
    path = tmp_path / "stories.db"
    path.write_bytes((FIXTURES / "stories_v1.db").read_bytes())
    old = sqlite3.connect(path)
    turns = old.execute(TURNS).fetchall()
    stories = old.execute("SELECT name, settings, model_path FROM stories ORDER BY id").fetchall()
    old.close()
    store = Store(path)
    new = sqlite3.connect(path)
    assert new.execute("PRAGMA user_version").fetchone()[0] == 2
    assert (
        new.execute("SELECT id, story_id, seq, author, text, state, fingerprint FROM turns ORDER BY id").fetchall()
        == turns
    )
    assert new.execute("SELECT name, settings, model_path FROM stories ORDER BY id").fetchall() == stories
    new.close()
    story = store.load("the lighthouse")
    assert story.text.startswith("The keeper of the lighthouse was called Velmorth. ") and len(story.turns) == 4
    assert story.settings == {"top_k": 3, "temperature": 0.8, "chars": 40, "stop_at": "sentence", "seed": 7}
    assert all(t.state and t.fingerprint for t in story.turns)
    assert [t.parent for t in story.turns] == [None] + [t.id for t in story.turns[:-1]]  # the line became a path
    assert story.tip == story.turns[-1].id and store.load("second story").turns[0].parent is None
    assert store.load("second story").draft.text == " And then" and store.last_story() == "the lighthouse"
    backup = sqlite3.connect(tmp_path / "stories.db.schema1.bak")
    assert backup.execute("PRAGMA user_version").fetchone()[0] == 1
    assert (
        backup.execute("SELECT id, story_id, seq, author, text, state, fingerprint FROM turns ORDER BY id").fetchall()
        == turns
    )
    backup.close()
    store.close()


def test_the_upgraded_story_opens_with_its_cached_states_and_learns_its_text(tmp_path):
    path = tmp_path / "stories.db"
    path.write_bytes((FIXTURES / "stories_v1.db").read_bytes())
    store = Store(path)
    shipped = load_model(default_model_path())
    s = Session.open(store, "the lighthouse", shipped)
    assert s.settings.top_k == 3 and s.settings.adapt  # a story from before adaptation adapts from now on
    assert all(s._known(i) for i in range(len(s.turns)))  # every cached state was made by this model
    assert s.learner.chars == sum(len(t.text) for t in s.turns if t.author == "person")
    store.close()


def test_a_newer_database_is_refused_and_left_byte_for_byte(tmp_path):
    path = tmp_path / "stories.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(Exception, match="newer charterm") as e:
        Store(path)
    assert "\n" not in str(e.value) and path.read_bytes() == before
    assert not (tmp_path / "stories.db.schema3.bak").exists()


LIGHTHOUSE = [
    "The lighthouse keeper was called Velmorth, and he had lived on the island for thirty years. ",
    "In the morning Velmorth went down to the boat. ",
    '"You are late," said Velmorth to the boy who brought the letters. ',
    "The boy looked at Velmorth and said nothing. ",
    "That evening Velmorth lit the lamp and sat down to write. ",
    "Nobody in the village had ever seen Velmorth smile. ",
]


def test_the_shipped_model_writes_the_story_s_own_name_once_it_has_learned_it(home, model_path):
    """The README's example: the base model turns "Ve" into "Veslovsky" (a name from the book);
    after twelve short turns that name Velmorth, the story's model writes "Velmorth". (`model_path`
    for its one torch thread.)"""
    store = Store()
    shipped = load_model(default_model_path())
    written = {}
    for adapt in (False, True):
        s = Session.open(store, f"lighthouse {adapt}", shipped)
        s.update_settings(adapt=adapt, temperature=0.0)
        for turn in LIGHTHOUSE * 2:
            s.append_person_turn(turn)
        s.append_person_turn("At last Ve")
        written[adapt] = s.continue_(10).run().text
    store.close()
    assert written[False].startswith("slovsky") and written[True].startswith("lmorth"), written

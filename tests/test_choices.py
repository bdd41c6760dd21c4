"""Choices: K continuations of the story at once (charterm/story/choices.py), with the shipped model, one thread.

Checked: a seed gives the same choices again, the choices are kept as versions of one turn (the first shown),
each with the state after its own text, bans hold in every row, every row writes with what the model learned,
undo after a pick gives back the state and the learned weights bit for bit, and the command line.
"""

import json

import pytest
import torch
from conftest import ROOT, cli_in_process, run_cli

from charterm.engine.bans import Bans
from charterm.engine.checkpoint import load_model
from charterm.engine.sampling import run_ids
from charterm.settings import Settings
from charterm.story.choices import row_seed
from charterm.story.session import Session
from charterm.story.store import MODEL, PERSON, Store

ANNA = ROOT / "models" / "anna.safetensors"
LIGHTHOUSE = [
    "The lighthouse keeper was called Velmorth, and he had lived on the island for thirty years. ",
    "In the morning Velmorth went down to the boat. ",
    '"You are late," said Velmorth to the boy who brought the letters. ',
    "The boy looked at Velmorth and said nothing. ",
    "That evening Velmorth lit the lamp and sat down to write. ",
    "Nobody in the village had ever seen Velmorth smile. ",
]


@pytest.fixture(scope="module")
def loaded():
    return load_model(ANNA)


@pytest.fixture
def store(home):
    s = Store()
    yield s
    s.close()


def fed_state(loaded, text: str):
    v = loaded.vocab
    return run_ids(loaded.model, [v.index[c] for c in "\n" + text])[1]


def written(session: Session, k: int = 3, chars: int | None = None) -> list[str]:
    with session.choices(k, chars) as c:
        c.run()
    return [c.text(r) for r in range(k)]


def test_a_seed_gives_the_same_choices_and_each_row_its_own(loaded):
    runs = []
    for seed in (1, 1, 2):
        s = Session(loaded, settings=Settings(seed=seed, chars=120, adapt=False))
        s.append_person_turn("Anna went to the ball")
        runs.append(written(s, 4))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert len(set(runs[0])) == 4 and all(len(t) == 120 for t in runs[0])
    assert len({row_seed(7, r) for r in range(9)}) == 9 and row_seed(7, 0) == row_seed(7, 0)


def test_the_choices_are_versions_of_one_turn_the_first_shown_each_with_its_own_state(store, loaded):
    s = Session.open(store, "ball", loaded, precision="fp32")
    s.update_settings(seed=3, chars=80, adapt=False)
    s.append_person_turn("Anna went to the ball.")
    texts = written(s, 3)
    story = store.load("ball")
    anna = story.turns[0].id
    assert [t.text for t in story.turns] == ["Anna went to the ball.", texts[0]]
    assert len(story.children[anna]) == 3 and s.versions() == (1, 3)
    for k in range(3):
        if k:
            assert s.switch_version(1) == (k + 1, 3)
        assert s.turns[-1].author == MODEL and s.turns[-1].text == texts[k]
        for mine, theirs in zip(s.state, fed_state(loaded, "Anna went to the ball." + texts[k]), strict=True):
            assert torch.allclose(mine, theirs, atol=1e-4)
    reopened = Session.open(Store(), "ball", loaded)  # the states were saved with the turns
    assert reopened.turns[-1].text == texts[2] and reopened.versions() == (3, 3)


def test_every_row_honours_the_bans(loaded):
    s = Session(loaded, settings=Settings(seed=5, chars=1500, adapt=False, bans=("said", "Levin")))
    s.append_person_turn('"Yes," said Levin.')
    with s.choices(4) as c:
        c.run()
    assert all(len(c.text(r)) == 1500 and not Bans(["said", "Levin"]).found_in(c.text(r)) for r in range(4))
    assert sum(row.rewinds for row in c.rows) > 0


def test_stop_keeps_what_each_row_wrote_and_nothing_written_keeps_nothing(store, loaded):
    s = Session.open(store, "stop", loaded)
    s.update_settings(seed=1, adapt=False)
    s.append_person_turn("Kitty")
    c = s.choices(3, 5000)
    for n, _ in enumerate(c):
        if n == 100:
            c.stop()
    turns = c.close()
    assert [t.text for t in turns] == [c.text(r) for r in range(3)] and sum(len(t.text) for t in turns) == 101
    assert [t.author for t in store.load("stop").turns] == [PERSON, MODEL] and store.load("stop").draft is None
    assert s.choices(3, 0).run() == [] and len(s.turns) == 2


def test_every_row_writes_with_what_the_model_learned(store):
    shipped = load_model(ANNA)
    got = {}
    for adapt in (False, True):
        s = Session.open(store, f"lighthouse {adapt}", shipped)
        s.update_settings(adapt=adapt, temperature=0.0)
        for turn in LIGHTHOUSE * 2:
            s.append_person_turn(turn)
        s.append_person_turn("At last Ve")
        got[adapt] = written(s, 3, 10)
    assert all(t.startswith("slovsky") for t in got[False]), got
    assert all(t.startswith("lmorth") for t in got[True]), got


def test_undo_of_a_turn_picked_from_choices_gives_back_the_state_and_the_learned_weights_exactly(store, loaded):
    s = Session.open(store, "undo", loaded)
    s.update_settings(seed=9, chars=60)
    s.append_person_turn("Levin went out into the fields, and")
    state = [t.clone() for t in s.state]
    weights = {k: v.clone() for k, v in s.learner.adapter.model.state_dict().items()}
    turns = written(s, 3)
    s.checkout(store.load("undo").children[s.turns[0].id][1])  # pick the second choice
    assert s.turns[-1].text == turns[1] and s.versions() == (2, 3)
    s.undo()
    assert [t.text for t in s.turns] == ["Levin went out into the fields, and"]
    assert all(torch.equal(a, b) for a, b in zip(s.state, state, strict=True))
    now = s.learner.adapter.model.state_dict()
    assert now.keys() == weights.keys() and all(torch.equal(now[k], weights[k]) for k in now)
    assert s.redo().text == turns[1]


# --- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, says",
    [
        ("0", "charterm: error: --choices must be a whole number from 2 to 9 (got 0)"),
        ("-2", "charterm: error: --choices must be a whole number from 2 to 9 (got -2)"),
        ("10", "charterm: error: --choices must be a whole number from 2 to 9 (got 10)"),
        ("1", "charterm: error: --choices must be a whole number from 2 to 9 (got 1)"),
        ("many", "charterm: error: Invalid value for '--choices'"),
    ],
)
def test_bad_choices_are_one_line_and_exit_2(capsys, monkeypatch, value, says):
    code, out, err = cli_in_process(capsys, monkeypatch, "generate", "--choices", value)
    assert code == 2 and out == "" and err.startswith(says) and err.count("\n") == 1


def test_generate_choices_prints_each_under_a_heading_or_as_json_and_stores_them_as_versions(home):
    env = {"CHARTERM_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    args = ["generate", "--prime", "Anna", "--chars", "60", "--seed", "4", "--choices", "3"]
    r = run_cli(*args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["prime"] == "Anna" and len(got["choices"]) == 3 and all(len(c["text"]) == 60 for c in got["choices"])
    texts = [c["text"] for c in got["choices"]]
    r = run_cli(*args, env=env)
    assert r.stdout == "Anna\n" + "".join(f"--- choice {i} of 3 ---\n{t}\n" for i, t in enumerate(texts, 1))
    r = run_cli(*args, "--story", "ball", "--no-adapt", env=env)
    assert r.returncode == 0 and "the 3 choices are versions 1-3 of the turn" in r.stderr
    story = Store().load("ball")
    assert [t.text for t in story.turns] == ["Anna", texts[0]]
    assert len(story.children[story.turns[0].id]) == 3
    assert run_cli("generate", "--json", env=env).stderr.strip() == "charterm: error: --json goes with --choices K"

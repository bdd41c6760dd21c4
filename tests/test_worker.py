"""The model worker as a real process: the protocol, stop, and what happens when its app goes away.

Each test starts `python -m charterm.worker` (or drives it from a separate "app" process) on a
temporary CHARTERM_HOME with the session's tiny model, and checks the story through a second
connection to the database.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from charterm.story.store import Store
from charterm.worker import protocol as p
from charterm.worker.client import WorkerClient


class Driver:
    """A WorkerClient whose events land in a queue, for a test to read in order."""

    def __init__(self, **kw):
        self.events: queue.Queue = queue.Queue()
        self.exits: queue.Queue = queue.Queue()
        self.client = WorkerClient(**kw)
        self.client.start()
        self.client.listen(self.events.put, lambda code, why: self.exits.put((code, why)))

    def until(self, pred, timeout: float = 30.0) -> list[p.Message]:
        """Events up to and including the first one `pred` accepts."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            seen.append(ev)
            if pred(ev):
                return seen

    def request(self, cls, timeout: float = 30.0, **fields) -> list[p.Message]:
        rid = self.client.send(cls, **fields)
        return self.until(lambda ev: isinstance(ev, p.Done) and ev.id == rid, timeout)


def stored(name: str = "untitled") -> list[tuple[str, str]]:
    store = Store()
    try:
        story = store.load(name)
        return [(t.author, t.text) for t in story.turns] if story else []
    finally:
        store.close()


def model_text(events) -> str:
    return "".join(ev.text for ev in events if isinstance(ev, p.Appended) and ev.author == "model")


def test_a_turn_through_the_protocol_is_what_is_stored(home, tiny_model):
    d = Driver()
    try:
        opened = d.request(p.Open, model=str(tiny_model))
        snap = next(ev for ev in opened if isinstance(ev, p.Snapshot))
        assert snap.story == "untitled" and snap.card["name"] == "tiny.safetensors" and snap.turns == 0
        assert d.request(p.SetSetting, field="chars", value="60")[-2].settings["chars"] == 60
        events = d.request(p.Write, text="Anna")
        kinds = [ev.KIND for ev in events]
        assert kinds[:4] == ["appended", "committed", "snapshot", "generating"] and kinds[-2:] == ["committed", "done"]
        assert events[2].adaptation["on"] and events[2].adaptation["chars"] == 4  # it learned "Anna"
        assert all(ev.id == events[-1].id for ev in events)  # every event names the request
        assert stored() == [("person", "Anna"), ("model", model_text(events))]
        assert 60 <= len(model_text(events)) <= 90
        assert events[-2].turns == 2 and events[-2].chars == 4 + len(model_text(events))
    finally:
        d.client.close()
    assert d.exits.get(timeout=10)[0] == 0


def test_stop_ends_the_turn_and_commits_exactly_what_was_sent(home, tiny_model):
    d = Driver()
    try:
        d.request(p.Open, model=str(tiny_model))
        d.request(p.SetSetting, field="chars", value="1000000")
        rid = d.client.send(p.Write, text="Anna")
        first = d.until(lambda ev: isinstance(ev, p.Appended) and ev.author == "model")
        d.client.send(p.Stop)
        rest = d.until(lambda ev: isinstance(ev, p.Done) and ev.id == rid, 10)
        text = model_text(first + rest)
        assert stored() == [("person", "Anna"), ("model", text)] and 0 < len(text) < 1_000_000
        assert [ev.KIND for ev in rest][-2:] == ["committed", "done"]
    finally:
        d.client.close()


def test_a_stop_sent_before_the_write_starts_still_stops_it(home, tiny_model):
    d = Driver()
    try:
        d.client.send(p.Open, model=str(tiny_model))  # still loading when the next two arrive
        d.client.send(p.SetSetting, field="chars", value="1000000")
        rid = d.client.send(p.Write, text="")
        d.client.send(p.Stop)
        events = d.until(lambda ev: isinstance(ev, p.Done) and ev.id == rid, 30)
        assert len(model_text(events)) < 1_000  # stopped at once, not after a million chars
    finally:
        d.client.close()


def test_bad_requests_are_one_line_errors_and_the_worker_lives_on(home, tiny_model, tmp_path):
    d = Driver()
    try:
        err = d.request(p.Open, model=str(tmp_path / "missing.safetensors"))[-2]
        assert isinstance(err, p.Error) and "no model at" in err.text and "\n" not in err.text
        assert isinstance(d.request(p.Write, text="x")[-2], p.Error)  # no story open yet
        d.client._to.write(b"this is not json\n")  # a damaged line
        d.client._to.flush()
        assert isinstance(d.until(lambda ev: True)[-1], p.Error)
        d.request(p.Open, model=str(tiny_model))
        err = d.request(p.SetSetting, field="top_k", value="-3")[-2]
        assert isinstance(err, p.Error) and err.text.startswith("top-k must be")
        assert isinstance(d.request(p.SetSetting, field="top_k", value="0")[-2], p.Snapshot)  # 0 = all chars
    finally:
        d.client.close()


def test_a_worker_of_another_protocol_version_is_refused(home):
    hello = json.dumps({"type": "hello", "protocol": p.PROTOCOL + 1, "pid": 1})
    d = Driver(argv=[sys.executable, "-c", f"import time; print({hello!r}, flush=True); time.sleep(30)"])
    code, why = d.exits.get(timeout=20)
    assert f"protocol {p.PROTOCOL + 1}, not {p.PROTOCOL}" in why
    assert d.events.empty()


APP = textwrap.dedent(
    """
    import sys, time
    from charterm.worker import protocol as p
    from charterm.worker.client import WorkerClient

    shown = open(sys.argv[2], "w")
    def on_event(ev):
        if isinstance(ev, p.Appended) and ev.author == "model":
            shown.write(ev.text)
            shown.flush()
    client = WorkerClient()
    client.start()
    client.listen(on_event, lambda code, why: None)
    print(client.pid, flush=True)
    client.send(p.Open, model=sys.argv[1])
    client.send(p.SetSetting, field="chars", value="1000000")
    client.send(p.Write, text="Anna")
    time.sleep(600)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9 of the app", "SIGHUP to the worker"])
def test_when_the_app_goes_the_worker_commits_what_was_shown_and_exits(home, tiny_model, tmp_path, how):
    shown = tmp_path / "shown.txt"
    app = subprocess.Popen(
        [sys.executable, "-c", APP, str(tiny_model), str(shown)], stdout=subprocess.PIPE, text=True
    )
    try:
        worker = int(app.stdout.readline())
        deadline = time.monotonic() + 60
        while (not shown.exists() or len(shown.read_text()) < 200) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(shown.read_text()) >= 200, "the model never wrote"
        os.kill(*((app.pid, signal.SIGKILL) if how.startswith("kill") else (worker, signal.SIGHUP)))
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its app"
    finally:
        app.kill()
        app.wait()
    turns = stored()
    assert turns[0] == ("person", "Anna") and turns[1][0] == "model" and len(turns) == 2
    assert turns[1][1].startswith(shown.read_text())  # all that was shown, and at most what was written since
    store = Store()
    assert store.load("untitled").draft is None and store.integrity_check() == "ok"
    store.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"


def test_generate_a_new_story_and_the_app_start_alike(home, tiny_model):
    """One seed, one prime: plain `generate`, `generate --story` and the app's worker write the
    same text (all start a story as after a newline, then feed the prime); a story that learns
    the prime writes other text, the same in the CLI and the app."""
    from conftest import run_cli

    args = ("generate", "--model", tiny_model, "--prime", "Anna", "--chars", "150", "--seed", "5")
    plain = run_cli(*args)
    story = run_cli(*args, "--story", "seeded", "--no-adapt")
    adapted = run_cli(*args, "--story", "learning")
    assert plain.returncode == story.returncode == adapted.returncode == 0, (story.stderr, adapted.stderr)
    assert plain.stdout == "Anna" + story.stdout and len(story.stdout) == 150
    assert adapted.stdout != story.stdout and len(adapted.stdout) == 150
    written = {}
    d = Driver(in_thread=True)
    try:
        for name, adapt in (("in the app", "off"), ("learning in the app", "on")):
            d.request(p.Open, model=str(tiny_model), story=name)
            for field, value in (("seed", "5"), ("chars", "150"), ("adapt", adapt)):
                d.request(p.SetSetting, field=field, value=value)
            written[adapt] = model_text(d.request(p.Write, text="Anna"))
    finally:
        d.client.close()
    assert written["off"][:150] == story.stdout  # the app's turn then runs on to the end of its word
    assert written["on"][:150] == adapted.stdout


def test_a_turn_learned_as_it_is_typed_is_written_on_as_one_learned_at_enter(home, tiny_model):
    """`typing` (the prompt as the person types it) lets the worker learn the turn ahead of Enter;
    the story, the model's answer and what was learned are the same as without it, also when
    the prompt was changed after it was sent."""
    turn = "Anna went to the ball, and Kitty was there, dancing with Vronsky all evening long. " * 2
    answers = {}
    d = Driver()
    try:
        for name, typed in (("at enter", []), ("as typed", [turn[::-1], turn[:120], turn[:-5]])):
            d.request(p.Open, model=str(tiny_model), story=name)
            for field, value in (("seed", "5"), ("chars", "80")):
                d.request(p.SetSetting, field=field, value=value)
            for text in typed:
                assert [ev.KIND for ev in d.request(p.Typing, text=text)] == ["done"]  # nothing to show
            events = d.request(p.Write, text=turn)
            snapshot = next(ev for ev in events if isinstance(ev, p.Snapshot))
            answers[name] = model_text(events), snapshot.adaptation, stored(name)[0]
    finally:
        d.client.close()
    assert answers["as typed"] == answers["at enter"] and answers["at enter"][2] == ("person", turn)
    assert answers["at enter"][1]["chars"] == len(turn)


def test_the_docs_list_every_message_of_the_protocol():
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "worker-protocol.md").read_text(encoding="utf-8")
    assert p.table() in page
    assert f"(protocol version {p.PROTOCOL}," in page


def test_next_offers_words_pick_writes_one_and_each_written_char_has_its_probability(home):
    from pathlib import Path

    anna = Path(__file__).resolve().parent.parent / "models" / "anna.safetensors"
    d = Driver()
    try:
        d.request(p.Open, model=str(anna))
        d.request(p.SetSetting, field="chars", value="30")
        appended = [ev for ev in d.request(p.Write, text="Anna said") if isinstance(ev, p.Appended)]
        assert (appended[0].author, appended[0].probs) == ("person", [])
        for ev in appended[1:]:
            assert len(ev.probs) == len(ev.text) and all(0 <= x <= 1 and round(x, 3) == x for x in ev.probs)
        (offer,) = [ev for ev in d.request(p.Next, words=3) if isinstance(ev, p.Candidates)]
        ps = [w["p"] for w in offer.words]
        assert len(ps) == 3 and ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1
        word = offer.words[1]["text"]
        picked = d.request(p.Pick, text=word)
        assert [ev.KIND for ev in picked] == ["appended", "committed", "done"]
        assert (picked[0].author, picked[0].text, len(picked[0].probs)) == ("model", word, len(word))
        assert stored()[-1] == ("model", word) and picked[1].turns == 3
        assert d.request(p.Next, words=0)[0].text == "words must be a whole number from 1 to 9 (got 0)"
        assert d.request(p.Pick, text="")[0].text.startswith("nothing to pick")
        assert len(stored()) == 3
    finally:
        d.client.close()

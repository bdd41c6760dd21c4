"""The training events: one definition, read back exactly, and the table in docs/training-events.md is it."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from charterm import train_events as te

EVENTS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "training-events.md"


def test_the_docs_table_is_the_module():
    assert te.table() in EVENTS_PAGE.read_text(encoding="utf-8")


@pytest.mark.parametrize("cls", list(te.KINDS.values()))
def test_every_event_round_trips_through_its_json_line(cls):
    values = {int: 3, float: 1.5, bool: True, str: "x", dict: {"a": 1}, list: [1, 2]}
    kw = {}
    for f in fields(cls):
        base = f.type if isinstance(f.type, type) else next(t for t in values if t.__name__ in str(f.type))
        kw[f.name] = values[base]
    event = cls(**kw)
    line = event.to_json()
    assert json.loads(line)["event"] == cls.KIND and "time" in json.loads(line)
    assert te.parse(line) == event == te.parse(json.loads(line))


@pytest.mark.parametrize(
    "junk", ["", "not json", "[1]", "null", '{"event": 3}', '{"event": "step"}', '{"event": "mystery", "a": 1}']
)
def test_anything_else_is_a_log_line(junk):
    assert isinstance(te.parse(junk), te.Log)


def test_the_app_never_needs_torch_to_read_them():
    import subprocess
    import sys

    code = "import sys, charterm.train_events, charterm.worker.jobs; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

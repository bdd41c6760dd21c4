"""The person's environment cannot fail a test (conftest.py pins it): a few representative tests (a
snapshot, the real CLI, the app under Pilot, `train` as typed) run in a fresh `python -m pytest`
started from a shell that sets what commonly differs."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

HOSTILE = {
    "NO_COLOR": "1",
    "FORCE_COLOR": "1",
    "TERM": "dumb",
    "COLUMNS": "40",
    "LINES": "10",
    "LANG": "C",
    "LC_ALL": "C",
    "CHARTERM_HOME": "/nonexistent",
    "CHARTERM_MODEL": "/nonexistent",
    "CHARTERM_CACHE": "/nonexistent",
    "CHARTERM_DEBUG": "1",
    "ESCDELAY": "1000",
    "TEXTUAL_THEME": "nord",
    "TEXTUAL_ANIMATIONS": "none",
    "OMP_NUM_THREADS": "2",
}
REPRESENTATIVE = [
    "tests/test_snapshots.py::test_main_screen_with_a_story",
    "tests/test_snapshots.py::test_help_screen",
    "tests/test_cli.py::test_help_states_each_default_once[train]",
    "tests/test_cli.py::test_bad_input_is_one_line",
    "tests/test_app.py::test_a_turn_is_shown_and_stored",
    "tests/test_notices.py",
    "tests/test_train_defaults.py::test_train_offline_is_one_line_naming_both_ways_on",
]


@pytest.mark.slow
def test_representative_tests_pass_whatever_the_shell_sets(tmp_path):
    env = {**os.environ, **HOSTILE}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-m", "not slow", *REPRESENTATIVE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = next(line for line in r.stdout.splitlines() if re.search(r"\bpassed\b.* in [\d.]+s", line))
    passed = re.search(r"\b(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= len(REPRESENTATIVE), summary
    assert not re.search(r"\b(failed|skipped|errors?|deselected)\b", summary), summary

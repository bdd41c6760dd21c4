"""One rule per setting: the slash commands, the side pane, the worker and the CLI read it alike."""

import re

import pytest
from conftest import run_cli

from charterm.app import commands
from charterm.errors import UsageError
from charterm.settings import RULES, Settings, parse_setting


@pytest.mark.parametrize(
    "key, raw, expected",
    [
        ("topk", "0", ("top_k", 0)),  # 0 = all chars, everywhere
        ("top_k", " 12 ", ("top_k", 12)),
        ("--top-k", "3", ("top_k", 3)),
        ("temp", "0.7", ("temperature", 0.7)),
        ("temperature", "0", ("temperature", 0.0)),
        ("chars", "1,000", ("chars", 1000)),
        ("chars", "0", ("chars", 0)),
        ("stop", "Sentence", ("stop_at", "sentence")),
        ("stop_at", "paragraph", ("stop_at", "paragraph")),
        ("seed", "off", ("seed", None)),
        ("seed", "42", ("seed", 42)),
    ],
)
def test_what_a_person_types_is_read_by_one_rule(key, raw, expected):
    assert parse_setting(key, raw) == expected


@pytest.mark.parametrize(
    "key, raw, says",
    [
        ("topk", "-1", "top-k must be a whole number, 0 (all chars) or more"),
        ("topk", "five", "top-k must be"),
        ("temp", "11", "temperature must be a number from 0 to 10"),
        ("temp", "nan", "temperature must be"),
        ("chars", "1000001", "chars must be a whole number from 0 to 1,000,000"),
        ("stop", "word", "stop must be one of none, sentence, paragraph"),
        ("seed", "-2", "seed must be"),
        ("chars", "", "chars needs a value"),
        ("colour", "red", "unknown setting"),
    ],
)
def test_bad_values_say_what_is_allowed(key, raw, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        parse_setting(key, raw)


def test_the_slash_commands_are_the_rules():
    for rule in RULES:
        cmd = commands.BY_NAME[rule.command]
        assert (cmd.args, cmd.help) == (rule.args, rule.help)
    assert set(commands.SETTING_COMMANDS) == {r.command for r in RULES}


def test_saved_settings_that_break_a_rule_fall_back_to_the_default():
    s = Settings.from_dict({"top_k": -4, "temperature": 0.5, "chars": "many", "stop_at": "sentence", "x": 1})
    assert s == Settings(temperature=0.5, stop_at="sentence")


def test_the_cli_follows_the_same_rules(tiny_model):
    r = run_cli("generate", "--model", tiny_model, "--top-k", "0", "--chars", "50", "--seed", "1")
    assert r.returncode == 0 and len(r.stdout) == 50, r.stderr
    r = run_cli("generate", "--model", tiny_model, "--temperature", "10.5")
    assert r.returncode == 2 and r.stderr.strip() == (
        "charterm: error: --temperature must be a number from 0 to 10 (got 10.5)"
    )

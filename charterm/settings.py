"""How the model continues a story, and the one rule for each setting.

Every front-end parses and checks a setting here: the slash commands (`/topk 5`), the side
pane's fields, `charterm generate`'s options and the worker that applies them. No torch.
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from charterm.errors import UsageError

STOP_AT = ("none", "sentence", "paragraph")
MAX_CHARS = 1_000_000
MAX_TEMPERATURE = 10.0
MAX_BAN = 100  # chars in one banned text
MAX_BANS = 100  # banned texts per story


def _whole(raw: str) -> int:
    return int(raw.strip().replace(",", "").replace("_", ""))


def _seed(raw: str) -> int | None:
    return None if raw.strip().lower() == "off" else _whole(raw)


def _stop(raw: str) -> str:
    return raw.strip().lower()


def _on_off(raw: str) -> bool:
    value = {"on": True, "off": False}.get(raw.strip().lower())
    if value is None:
        raise ValueError(raw)
    return value


def check_ban(text: object, where: str = "ban") -> str:
    """One banned text: 1 to MAX_BAN chars (any, spaces and new lines too; case counts)."""
    if not isinstance(text, str) or not text:
        raise UsageError(f"{where}: a banned text needs at least one char")
    if len(text) > MAX_BAN:
        raise UsageError(f"{where}: a banned text can be at most {MAX_BAN} chars (got {len(text):,})")
    return text


def _bans_ok(value: object) -> bool:
    if not isinstance(value, list | tuple) or len(value) > MAX_BANS or len(set(value)) != len(value):
        return False
    try:
        return all(check_ban(t) for t in value)
    except UsageError:
        return False


def _bans(raw: str) -> tuple[str, ...]:
    """A list of texts as JSON (what the app sends; the store keeps settings as JSON too)."""
    value = json.loads(raw)
    if not isinstance(value, list):
        raise ValueError(raw)
    return tuple(value)


@dataclass(frozen=True)
class Rule:
    """One setting: its field, the slash command and side-pane label that set it, how a typed
    value is read, and what values are allowed (`check` returns what is wrong, or None)."""

    field: str
    command: str
    label: str
    args: str
    help: str
    parse: Callable[[str], object]
    check: Callable[[object], bool]
    allowed: str

    @property
    def name(self) -> str:
        """How errors name it: top-k, temperature, chars, stop, seed."""
        return "stop" if self.field == "stop_at" else self.field.replace("_", "-")


RULES = (
    Rule(
        "top_k", "topk", "top-k", "N", "sample from the N most likely chars (0 = all)", _whole,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number, 0 (all chars) or more",
    ),
    Rule(
        "temperature", "temp", "temp", "T", "temperature: lower is safer, higher is wilder (0 = always the likeliest)",
        lambda raw: float(raw.strip()),
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_TEMPERATURE,
        f"a number from 0 to {MAX_TEMPERATURE:g}",
    ),
    Rule(
        "chars", "chars", "chars", "N", "chars the model writes per turn (0: it writes nothing)", _whole,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_CHARS,
        f"a whole number from 0 to {MAX_CHARS:,}",
    ),
    Rule(
        "stop_at", "stop", "stop", "[none|sentence|paragraph]",
        "no argument: stop the model now (like Esc); "
        "with one: also end each turn at the end of a sentence or paragraph",
        _stop, lambda v: v in STOP_AT, "one of " + ", ".join(STOP_AT),
    ),
    Rule(
        "seed", "seed", "seed", "N|off", "fix the random seed (the same story then gets the same text)", _seed,
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
        "a whole number, 0 or more, or off",
    ),
    Rule(
        "adapt", "adapt", "adapt", "on|off|reset",
        "learn the story's text as it grows (reset: forget what was learned)", _on_off,
        lambda v: isinstance(v, bool), "on or off",
    ),
    Rule(
        "bans", "ban", "bans", "[TEXT]",
        "never let the model write TEXT (case counts; in quotes for spaces at its ends); no TEXT: list the bans",
        _bans, _bans_ok, f"a list of at most {MAX_BANS} different texts of 1 to {MAX_BAN} chars",
    ),
)
BY_FIELD = {r.field: r for r in RULES}
BY_COMMAND = {r.command: r for r in RULES}


def rule_for(key: str) -> Rule:
    """The rule named by a field (`top_k`), a slash command (`topk`) or an option (`top-k`)."""
    key = key.strip().lstrip("-/").replace("-", "_")
    rule = BY_FIELD.get(key) or BY_COMMAND.get(key) or {"temp": BY_FIELD["temperature"]}.get(key)
    if rule is None:
        raise UsageError(f"unknown setting {key!r}: one of {', '.join(r.command for r in RULES)}")
    return rule


def check(rule: Rule, value: object) -> object:
    """`value` if the rule allows it, else a UsageError that says what is allowed."""
    if not rule.check(value):
        raise UsageError(f"{rule.name} must be {rule.allowed} (got {value!r})")
    return value


def parse_setting(key: str, raw: str) -> tuple[str, object]:
    """What a person typed for a setting, as (field, checked value)."""
    rule = rule_for(key)
    if not raw.strip():
        raise UsageError(f"{rule.name} needs a value: {rule.allowed}")
    try:
        value = rule.parse(raw)
    except ValueError:
        raise UsageError(f"{rule.name} must be {rule.allowed} (got {raw.strip()!r})") from None
    return rule.field, check(rule, value)


@dataclass(frozen=True)
class Settings:
    """top-k, temperature, chars per turn, where a turn may end early, the seed, adaptation, and the bans."""

    top_k: int = 5
    temperature: float = 1.0
    chars: int = 300
    stop_at: str = "none"
    seed: int | None = None  # fixed seed: the same story gets the same text
    adapt: bool = True  # the model learns the person's turns (charterm.story.learning)
    bans: tuple[str, ...] = ()  # texts the model never writes (charterm.engine.bans)

    def __post_init__(self) -> None:
        for f in fields(self):
            check(BY_FIELD[f.name], getattr(self, f.name))
        object.__setattr__(self, "bans", tuple(self.bans))

    def to_dict(self) -> dict:
        return {**asdict(self), "bans": list(self.bans)}

    def replace(self, **changes) -> "Settings":
        return Settings(**{**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        """Settings saved with a story; values that no longer validate fall back to defaults."""
        out = cls()
        for k, v in d.items():
            if k in BY_FIELD:
                try:
                    out = out.replace(**{k: v})
                except UsageError:
                    pass
        return out

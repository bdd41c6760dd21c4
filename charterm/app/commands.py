"""Slash commands and keys: the table `/help` shows, parsing, and completion (no widgets here)."""

from dataclasses import dataclass

from charterm.errors import UsageError
from charterm.settings import BY_COMMAND, RULES, STOP_AT


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    help: str
    choices: tuple[str, ...] = ()


CHOICES = {"stop_at": STOP_AT, "seed": ("off",), "adapt": ("on", "off", "reset")}  # what Tab completes
COMMANDS = [
    Command("help", "", "this list of commands and keys"),
    *(
        Command(r.command, r.args, r.help, CHOICES.get(r.field, ()))
        for r in RULES
    ),
    Command("unban", "TEXT", "let the model write TEXT again (/ban lists the bans)"),
    Command("undo", "", "go back one turn (the model's state goes back exactly; /redo brings the turn back)"),
    Command("redo", "", "go forward one turn again, to where undo came back from"),
    Command("retry", "", "write the model's last turn again, as a new version (the old one is kept)"),
    Command("version", "prev|next", "show the previous or next version of the last turn", ("prev", "next")),
    Command("fork", "[N]", "the story's turns (N: go to turn N, 0: before the first); what you write next branches"),
    Command("edit", "[N]", "turn N (no N: your last) in the prompt: Enter saves it as a new version, Esc cancels"),
    Command(
        "choices", "[K]", "the model writes K (2-9, else 3) continuations at once: 1-K or arrows+Enter picks one"
    ),
    Command("next", "[N]", "the N (1-9, else 5) words the model would most likely write next: 1-9 or Enter picks"),
    Command(
        "shade",
        "on|off",
        "mark the chars the model was unsure of: underlined below 20%, reversed below 5% (what it wrote here)",
        ("on", "off"),
    ),
    Command("model", "PATH", "switch to another model file (the state is rebuilt from the story)"),
    Command("load", "", "switch to the model training has just improved"),
    Command("follow", "on|off", "switch to each better model training writes, automatically", ("on", "off")),
    Command("story", "[NAME]", "open or create a story (no name: list them)"),
    Command("export", "PATH [md|json]", "write the story to a text (or markdown) file; json: the whole story"),
    Command("copy", "[last]", "copy the story (or its last turn) to the clipboard, through the terminal", ("last",)),
    Command("wrap", "soft|hard", "soft: paragraphs fill the pane; hard: the text's own line breaks", ("soft", "hard")),
    Command("train", "[options]", "train in the background, e.g. /train --epochs 5 --data my.txt"),
    Command("cancel", "", "stop training (it saves a resume state)"),
    Command("quit", "", "save and leave"),
]
BY_NAME = {c.name: c for c in COMMANDS}
SETTING_COMMANDS = tuple(BY_COMMAND)

KEYS = [
    ("Enter", "add what you typed and let the model continue (empty: just continue)"),
    ("Ctrl+J", "a new line in what you type (in any terminal, tmux too)"),
    ("Shift+Enter", "a new line, if the terminal reports it (or Alt+Enter)"),
    ("Up/Down", "recall what you sent before (in earlier runs too)"),
    ("Esc, Ctrl+C", "stop the model now (what it wrote so far is kept)"),
    ("Ctrl+Z", "undo the last turn"),
    ("Ctrl+Y", "redo: the turn undone comes back"),
    ("Ctrl+R", "retry: a new version of the model's last turn"),
    ("Alt+Left/Right", "the previous/next version of the last turn"),
    ("Ctrl+F", "fork: the story's turns, Enter goes to one (what you write next branches there)"),
    ("Ctrl+N", "the words the model would write next: 1-9 or arrows+Enter picks one, Esc closes"),
    ("Ctrl+O", "choices: the model writes several continuations at once, 1-9 or arrows+Enter picks one, Esc stops"),
    ("Ctrl+T", "start training (Ctrl+T again: cancel it)"),
    ("Ctrl+L", "switch to the model training just improved"),
    ("Ctrl+B", "show or hide the side pane"),
    ("PgUp/PgDn", "scroll the story"),
    ("Tab", "complete a /command"),
    ("Ctrl+P", "command palette: every /command, and the theme"),
    ("F1", "help: every key and /command"),
    ("Ctrl+Q", "save and quit"),
]

ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def parse(line: str) -> tuple[str, str]:
    """'/topk 5' -> ('topk', '5'). Unknown commands are a UsageError naming the close ones."""
    body = line.strip()[1:]
    name, _, rest = body.partition(" ")
    name = name.lower()
    if name not in BY_NAME:
        close = [c.name for c in COMMANDS if c.name.startswith(name[:2])] if name else []
        hint = f" (did you mean /{', /'.join(close)}?)" if close else ""
        raise UsageError(f"unknown command /{name}{hint}; /help lists them")
    return name, rest.strip()


def parse_export(arg: str) -> tuple[str, str]:
    """'/export story.md md' -> ('story.md', 'md'): a path, then an optional format (txt, md or json)."""
    parts = arg.split()
    fmt = "txt"
    if parts and parts[-1].removeprefix("--format=") in ("md", "txt", "json"):
        fmt = parts.pop().removeprefix("--format=")
    if not parts:
        raise UsageError("/export needs a path: /export story.txt (add md for markdown, json for the whole story)")
    return " ".join(parts), fmt


def parse_words(arg: str, default: int) -> int:
    """'/next 3' -> 3: how many next words to offer, 1 to 9 (no argument: `default`)."""
    if not arg:
        return default
    if not (arg.isdigit() and 1 <= int(arg) <= 9):
        raise UsageError(f"/next N: N is how many words to offer, 1 to 9 (got {arg!r})")
    return int(arg)


def parse_ban(command: str, arg: str) -> str:
    """'/ban said' -> 'said'; in double quotes as JSON (spaces at its ends, escapes): '/ban " said"' -> ' said'.
    Unquoted, \\n is a new line and \\t a tab, as in the story's text."""
    from charterm.settings import check_ban

    if arg.startswith('"'):
        import json

        try:
            text = json.loads(arg)
        except ValueError:
            raise UsageError(f'/{command} "TEXT": a text in quotes ends with a quote (got {arg})') from None
        if not isinstance(text, str):
            raise UsageError(f'/{command} "TEXT": one text in quotes (got {arg})')
    else:
        text = unescape(arg)
    return check_ban(text, f"/{command}")


def parse_choices(arg: str, default: int) -> int:
    """'/choices 4' -> 4: how many continuations to write at once, 2 to 9 (no argument: `default`)."""
    if not arg:
        return default
    if not (arg.isdigit() and 2 <= int(arg) <= 9):
        raise UsageError(f"/choices K: K is how many continuations to write at once, 2 to 9 (got {arg!r})")
    return int(arg)


def parse_version(arg: str) -> int:
    """'/version prev' -> -1, '/version next' -> +1: the step to another version of the last turn."""
    steps = {"prev": -1, "next": 1}
    if arg not in steps:
        raise UsageError("/version prev or /version next (Alt+Left, Alt+Right)")
    return steps[arg]


def parse_turn(command: str, arg: str) -> int:
    """'/fork 3' -> 3: a turn's id, as /fork lists them (0: before the first turn)."""
    if not arg.isdigit():
        raise UsageError(f"/{command} N: N is a turn's id, as /fork lists them (got {arg!r})")
    return int(arg)


def option_value(args: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` in an argument list (the last one given), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def unescape(text: str) -> str:
    r"""What the person typed, with \n for a new line, \t for a tab and \\ for a backslash."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def escape(text: str) -> str:
    r"""Text as it goes back in the prompt, so that `unescape` gives it back: a backslash before n, t or \ doubled."""
    return "".join(ch * 2 if ch == "\\" and text[i + 1 : i + 2] in ESCAPES else ch for i, ch in enumerate(text))


def complete(value: str) -> str | None:
    """Completes '/to' to '/topk ', and arguments with fixed choices ('/stop s' to '/stop sentence')."""
    if not value.startswith("/"):
        return None
    name, space, arg = value[1:].partition(" ")
    if not space:
        for c in COMMANDS:
            if c.name.startswith(name.lower()) and c.name != name:
                return f"/{c.name} "
        return None
    cmd = BY_NAME.get(name.lower())
    if cmd and arg:
        for choice in cmd.choices:
            if choice.startswith(arg) and choice != arg:
                return f"/{name} {choice}"
    return None

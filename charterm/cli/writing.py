"""`charterm generate` and `charterm next`: the model writes, or says what it would write."""

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from charterm.cli.common import (
    Precision,
    S,
    StopAt,
    app,
    load_model_or_default,
    warn,
)
from charterm.errors import CharTermError, UsageError
from charterm.settings import BY_FIELD, MAX_BAN, MAX_BANS, Settings, check_ban

BAN_HELP = f"Never write this text (case counts; 1 to {MAX_BAN} chars; repeat for more, at most {MAX_BANS})."


@app.command()
def generate(
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the model shipped in models/]")] = None,
    prime: Annotated[str | None, typer.Option(help="Text to start from (any characters).")] = None,
    prime_file: Annotated[Path | None, typer.Option(help="Read the prime from a file.")] = None,
    chars: Annotated[int, typer.Option(help=BY_FIELD["chars"].help)] = 500,
    top_k: Annotated[int, typer.Option(help=BY_FIELD["top_k"].help)] = S.top_k,
    temperature: Annotated[float, typer.Option(help=BY_FIELD["temperature"].help)] = S.temperature,
    stop: Annotated[StopAt, typer.Option(help="Also end at the first sentence or paragraph end.")] = StopAt.none,
    seed: Annotated[int | None, typer.Option(help="Random seed: same seed, same text.")] = None,
    precision: Annotated[Precision, typer.Option(help="int8 (fast) or fp32 weights for sampling.")] = Precision.int8,
    story: Annotated[
        str | None,
        typer.Option(help="Continue this saved story: the prime and the new text become turns; prints the new text."),
    ] = None,
    adapt: Annotated[
        bool | None,
        typer.Option(
            "--adapt/--no-adapt",
            help="With --story: learn the story's text (saved with it). [default: the story's own, on for a new one]",
        ),
    ] = None,
    retry: Annotated[
        bool, typer.Option("--retry", help="With --story: write a new version of its last model turn (the old kept).")
    ] = False,
    ban: Annotated[list[str] | None, typer.Option("--ban", help=BAN_HELP + " With --story, its own bans too.")] = None,
    choices: Annotated[
        int | None,
        typer.Option(
            help="Write K continuations at once (2 to 9), each under a heading; with --story, kept as versions of "
            "one turn, the first shown."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='With --choices: print {"prime": ..., "choices": [{"text": ...}, ...]}.')
    ] = False,
) -> None:
    """Write the prime and its continuation to stdout, streamed as it is generated.

    A new story and plain `generate` start alike (as after a newline), so for one seed and
    prime they write the same text."""

    _check_choices(choices, as_json)
    bans = _check_bans(ban)
    try:
        settings = Settings(top_k=top_k, temperature=temperature, chars=chars, stop_at=stop.value, seed=seed, bans=bans)
    except UsageError as e:  # the rule names the setting ("chars must be ..."); here it is an option
        raise UsageError(f"--{e}") from None
    prime = _read_prime(prime, prime_file)
    if story is not None:
        from charterm.story.store import check_name

        if retry and prime:
            raise UsageError("--retry writes the last model turn again; it takes no --prime")
        _continue_story(check_name(story), model, prime, settings, precision.value, adapt, retry, choices, as_json)
        return
    if adapt is not None or retry:
        raise UsageError("--adapt, --no-adapt and --retry go with --story NAME")
    from charterm.story.session import Session

    session = Session(load_model_or_default(model), settings=settings, precision=precision.value)
    if prime:
        _feed_prime(session, prime)
    if choices:
        _write_choices(session, choices, prime, as_json)
    else:
        sys.stdout.write(prime)
        _stream(session)
    for notice in session.notices:
        warn(notice)


def _check_choices(choices: int | None, as_json: bool) -> None:
    from charterm.story.choices import check_choices

    if choices is not None:
        try:
            check_choices(choices)
        except UsageError as e:
            raise UsageError(f"--{e}") from None
    elif as_json:
        raise UsageError("--json goes with --choices K")


def _write_choices(session, k: int, prime: str, as_json: bool, retry: bool = False) -> None:
    """K continuations at once, printed when all are written: each under a heading, or as JSON."""
    import torch

    torch.set_num_threads(1)
    if retry and session.turns and session.turns[-1].author == "model":
        session.undo()
    with session.choices(k) as written:
        for _ in written:
            pass
    texts = [written.text(r) for r in range(k)]
    if as_json:
        print(json.dumps({"prime": prime, "choices": [{"text": t} for t in texts]}, ensure_ascii=False))
        return
    out = [prime + "\n"] if prime else []
    for i, text in enumerate(texts, 1):
        out.append(f"--- choice {i} of {k} ---\n{text}\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()


def _check_bans(given: list[str] | None, more: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The --ban texts (after `more`, a story's own), each checked, without repeats."""
    bans = tuple(dict.fromkeys([*more, *(check_ban(t, "--ban") for t in given or ())]))
    if len(bans) > MAX_BANS:
        raise UsageError(f"--ban: at most {MAX_BANS} banned texts (got {len(bans)})")
    return bans


def _read_prime(prime: str | None, prime_file: Path | None) -> str:
    if prime is not None and prime_file is not None:
        raise UsageError("pass --prime or --prime-file, not both")
    if prime_file is not None:
        if prime_file.is_dir() or not prime_file.exists():
            raise UsageError(f"--prime-file {prime_file}: not a readable file")
        from charterm.engine.text import read_text

        prime = read_text(prime_file)
    prime = prime or ""
    try:
        prime.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("--prime is not valid UTF-8; put the text in a file and pass --prime-file") from None
    return prime


def _feed_prime(session, prime: str) -> None:
    report = session.append_person_turn(prime)
    if report:
        warn(f"prime: {report.describe()}")


def _stream(session, retry: bool = False) -> None:
    """The model's turn to stdout, flushed about 30 times a second; committed if there is a store.
    `retry`: a new version of the story's last model turn instead."""
    import torch

    torch.set_num_threads(1)  # one char at a time: as fast as two threads alone, far faster on a busy CPU
    out = sys.stdout
    with session.retry() if retry else session.continue_() as cont:
        last_flush, buf = time.monotonic(), []
        for ch in cont:
            buf.append(ch)
            if time.monotonic() - last_flush > 0.03:
                out.write("".join(buf))
                out.flush()
                buf.clear()
                last_flush = time.monotonic()
        out.write("".join(buf))
    out.write("\n" if out.isatty() else "")
    out.flush()


def _continue_story(name, model, prime, settings, precision, adapt, retry=False, choices=None, as_json=False) -> None:
    from charterm.story.session import Session, model_path_for
    from charterm.story.store import Store

    store = Store()
    existing = store.load(name)
    path, notice = model_path_for(existing, model)
    if notice:
        warn(notice)
    loaded = load_model_or_default(path)
    story = existing or store.open(name)
    own = Settings.from_dict(story.settings)
    settings = settings.replace(adapt=own.adapt, bans=_check_bans(list(settings.bans), own.bans))
    session = Session(loaded, store, story, settings=settings, precision=precision)
    if adapt is not None and adapt != own.adapt:
        session.update_settings(adapt=adapt)
    for notice in session.notices:
        warn(notice)
    if prime:
        _feed_prime(session, prime)
    if choices:
        _write_choices(session, choices, prime, as_json, retry)
        _say_versions(session, name, choices)
    else:
        _stream(session, retry)
    session.catch_up()  # after the text is out: the prime learned, the states saved for the next run
    session.save_adaptation()
    if retry and not choices:
        k, n = session.versions()
        print(f"version {k}/{n} of the last turn (`stories show {name!r} --tree` lists them)", file=sys.stderr)
    for notice in session.notices:
        warn(notice)
    store.set_last_story(name)
    store.close()


def _say_versions(session, name: str, k: int) -> None:
    if not session.turns or session.turns[-1].author != "model":
        return
    first, n = session.versions()
    kept = n - first + 1
    print(
        f"the {kept} choices are versions {first}-{n} of the turn; the story shows version {first} "
        f"(`stories show {name!r} --tree` lists them)" if kept > 1 else f"one choice wrote something: version {first}",
        file=sys.stderr,
    )


# --- next ----------------------------------------------------------------------------------------


@app.command("next")
def next_(
    prime: Annotated[str | None, typer.Option(help="Text to end with (any characters).")] = None,
    story: Annotated[
        str | None,
        typer.Option(
            help="Start from this saved story's text and state (read only; the prime goes after; "
            "the model's own weights, without what it learned of the story)."
        ),
    ] = None,
    words: Annotated[int, typer.Option(help="How many words to show, 1 to 9.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help='Print [{"text": ..., "p": ...}, ...].')] = False,
    model: Annotated[Path | None, typer.Option(help="Model file. [default: the story's, else the shipped one]")] = None,
    ban: Annotated[
        list[str] | None,
        typer.Option("--ban", help=BAN_HELP + " No word offered completes one; with --story, its own too."),
    ] = None,
) -> None:
    """The words the model would most likely write next, each with its probability (the chance
    that its next word is exactly that one: a leading space is part of it, the space after is not)."""
    from charterm.engine.candidates import check_words

    try:
        check_words(words)
    except UsageError as e:
        raise UsageError(f"--{e}") from None
    import torch

    torch.set_num_threads(1)  # a beam of a few rows: as fast as two threads alone, far faster on a busy CPU
    bans = _check_bans(ban)
    prime = _read_prime(prime, None)
    session = _read_only_session(story, model)
    if bans:
        session.update_settings(bans=_check_bans(list(bans), session.settings.bans))
    if prime:
        _feed_prime(session, prime)
    found = session.next_words(words)
    if as_json:
        print(json.dumps([{"text": c.text, "p": round(c.p, 6)} for c in found], ensure_ascii=False))
        return
    for i, c in enumerate(found, 1):
        print(f"{i}  {100 * c.p:6.2f}%  {json.dumps(c.text, ensure_ascii=False)}")


def _read_only_session(name: str | None, model: Path | None):
    """A session on a saved story's text and state that writes nothing (no store), or on nothing."""
    from charterm.story.session import Session, model_path_for

    if name is None:
        return Session(load_model_or_default(model))
    from charterm.story.store import Store, check_name

    store = Store()
    try:
        story = store.load(check_name(name))
    finally:
        store.close()
    if story is None:
        raise CharTermError(f"no story named {name!r} (see `charterm stories list`)")
    path, notice = model_path_for(story, model)
    if notice:
        warn(notice)
    return Session(load_model_or_default(path), story=story)


# --- stories -----------------------------------------------------------------------------------

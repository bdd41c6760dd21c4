"""`charterm stories ...`: the saved stories."""

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from charterm.cli.common import (
    Format,
    find_story,
    stories_app,
)
from charterm.errors import UsageError


@stories_app.command("list")
def stories_list(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Saved stories, most recent first."""
    from charterm.story.store import Store

    store = Store()
    rows = store.list_stories()
    last = store.last_story()
    if as_json:
        print(json.dumps([{**r.__dict__, "last": r.name == last} for r in rows]))
        return
    if not rows:
        print(f"no stories yet in {store.path} (run `charterm` to start one)", file=sys.stderr)
        return
    width = max(len(r.name) for r in rows)
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated))
        mark = "*" if r.name == last else " "
        print(f"{mark} {r.name:<{width}}  {r.turns:>5} turns  {r.chars:>9,} chars  {when}")


@stories_app.command("show")
def stories_show(
    name: Annotated[str, typer.Argument(help="Story name.")],
    tree: Annotated[bool, typer.Option("--tree", help="Every turn, the branches too; * marks the story's.")] = False,
) -> None:
    """Print a story's text (the current path of its turns)."""
    store, story = find_story(name)
    if tree:
        from charterm.story.store import tree_lines

        print("\n".join(tree_lines(store.tree(story.id), {t.id for t in story.turns})))
        return
    sys.stdout.write(story.text + ("\n" if story.text and not story.text.endswith("\n") else ""))


@stories_app.command("checkout")
def stories_checkout(
    name: Annotated[str, typer.Argument(help="Story name.")],
    turn: Annotated[int, typer.Argument(help="The turn to end the story at (0: before the first).", min=0)],
) -> None:
    """Make the path to a turn the story: what is written next starts a branch there (nothing is deleted)."""
    store, story = find_story(name)
    store.move_head(story.id, story.revision, turn or None, story.branch_end(turn or None))
    story = store.load(story.name)
    shown = f"{len(story.turns)} turns, {len(story.text):,} chars"
    print(f"{story.name!r} now ends at turn {turn}: {shown}", file=sys.stderr)


@stories_app.command("export")
def stories_export(
    name: Annotated[str, typer.Argument(help="Story name.")],
    format: Annotated[
        Format, typer.Option("--format", help="txt; md with your parts in bold; json: the whole story (every branch).")
    ] = Format.txt,
    out: Annotated[Path | None, typer.Option(help="Write to this file (atomically). [default: stdout]")] = None,
) -> None:
    """Write a story as text or markdown, or whole as a charterm-story/1 file (docs/story-file.md)."""
    from charterm.files import atomic_write_bytes
    from charterm.story.store import render

    if out is not None and out.is_dir():
        raise UsageError(f"--out {out} is a directory; pass a file name")
    store, story = find_story(name)
    if format == Format.json:
        from charterm.story import exchange

        cached = story.turns[-1].fingerprint if story.turns else None  # whose states: if the model file is gone
        text = exchange.export_text(store, story, exchange.model_info(story.model_path, cached))
    else:
        text = render(story.name, story.turns, format.value)
    if out is None:
        sys.stdout.write(text)
        return
    atomic_write_bytes(out, text.encode())
    print(f"{out}: {len(story.turns)} turns, {len(story.text):,} chars", file=sys.stderr)


@stories_app.command("import")
def stories_import(
    file: Annotated[Path, typer.Argument(help="A story file (.json, from `stories export --format json`) or a text.")],
    name: Annotated[str | None, typer.Option(help="Store it under this name. [default: the file's, or its stem]")] = (
        None
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace a story of that name.")] = False,
) -> None:
    """Add a story from a file: a charterm-story/1 file whole (every branch, head and settings), or a
    .txt or .md file as your turns, one per paragraph, for the model to continue."""
    from charterm.story import exchange
    from charterm.story.store import Store

    story_file = exchange.read_file(file)  # checked whole before the store is opened
    store = Store()
    stored = exchange.import_story(store, story_file, name, force)
    story = store.load(stored)
    store.close()
    print(
        f"imported {file} as {stored!r}: {len(story_file.turns)} turns, {len(story.text):,} chars on its path; "
        f"open it with: charterm --story {shlex.quote(stored)}",
        file=sys.stderr,
    )


@stories_app.command("rm")
def stories_rm(name: Annotated[str, typer.Argument(help="Story name.")]) -> None:
    """Delete a story."""
    store, story = find_story(name)
    store.delete(story.name)
    print(f"removed story {story.name!r} ({len(story.turns)} turns)", file=sys.stderr)


# --- eval and info -----------------------------------------------------------------------------

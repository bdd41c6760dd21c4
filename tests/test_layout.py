"""The house: a folder is a layer, and a layer imports only the layers below it; no file over
600 lines, no function over 60 lines of logic; the app's process never imports torch."""

import ast
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = ROOT / "charterm"
# lowest first; the base modules at the top of charterm/ are below everything
LAYERS = ["base", "engine", "story", "worker", "app", "cli"]
# what a layer may import besides its own modules and those of the layers below it
FORBIDDEN_LIBRARIES = {
    "base": {"torch", "textual", "typer", "rich"},
    "engine": {"textual", "typer"},
    "story": {"textual", "typer"},
    "worker": {"textual", "typer"},
    "app": {"torch", "typer"},
}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 60


def layer_of(module: str) -> str:
    """charterm.engine.model -> engine; charterm.config -> base; charterm -> base; `python -m
    charterm` is the command line's."""
    if module == "charterm.__main__":
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "base"


def module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path) -> list[str]:
    """Every module `path` imports (at the top or inside a function), as absolute names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            if node.module == "charterm":  # from charterm import config
                found += [f"charterm.{a.name}" for a in node.names if a.name != "__version__"]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_folder_of_charterm_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS) - {"base"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_layer_imports_only_the_layers_below_it(path):
    mine = layer_of(module_name(path))
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN_LIBRARIES.get(mine, set()), f"{mine} imports {name}"
        if top != "charterm":
            continue
        theirs = layer_of(name)
        # the command line is the top: with no command it opens the app, which never imports it
        assert LAYERS.index(theirs) <= LAYERS.index(mine), f"{mine} ({module_name(path)}) imports {name} ({theirs})"


def test_the_layer_check_catches_an_import_from_above(tmp_path, monkeypatch):
    """The check above can fail: an engine module that imports the story is caught."""
    fake = tmp_path / "charterm" / "engine" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from charterm.story.session import Session\nimport textual\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="engine"):
        test_a_layer_imports_only_the_layers_below_it(fake)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_is_over_600_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_FILE_LINES


def logic_lines(fn: ast.FunctionDef, source: list[str]) -> int:
    """Lines of a function's body that are not its docstring, blank or only a comment."""
    body = fn.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    lines = source[body[0].lineno - 1 : fn.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_over_60_lines_of_logic(path):
    text = path.read_text(encoding="utf-8")
    source = text.splitlines()
    functions = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    long = [(f.name, n) for f in functions if (n := logic_lines(f, source)) > MAX_FUNCTION_LINES]
    assert long == []


def test_the_app_and_the_command_line_import_no_torch():
    """The app's process (its modules, the worker's client and protocol, the training job) and
    `charterm --help` run without torch."""
    code = (
        "import sys, charterm.app.app, charterm.worker.client, charterm.worker.jobs, charterm.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

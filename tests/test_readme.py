"""The README is a front page that links every page of docs/, every link in them leads to a file,
and docs/layout.md names every file of charterm, and only files that exist."""

import re
import tomllib

from conftest import ROOT

DOCS = ROOT / "docs"
PACKAGE = ROOT / "charterm"
FRONT_PAGE_LINES = 300
# [text](target): the target up to a space, a closing parenthesis or a fragment.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s#]*)(?:#[^)\s]*)?\)")


def layout_rows() -> list[str]:
    return [line for line in (DOCS / "layout.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `")]


def layout_paths() -> set[str]:
    """What the layout's tables name in their first column, as paths relative to the repository."""
    return {re.match(r"\| `([^`]+)`", row).group(1) for row in layout_rows()}


def package_files() -> set[str]:
    """Every module and stylesheet of charterm, relative to charterm/: `engine/model.py`."""
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.tcss")]
    return {p.relative_to(PACKAGE).as_posix() for p in files if "__pycache__" not in p.parts}


def test_the_layout_names_every_file_of_charterm_and_nothing_else():
    named = {p.removeprefix("charterm/") for p in layout_paths() if p.startswith("charterm/")}
    named_files = {p for p in named if p.endswith((".py", ".tcss"))}
    assert package_files() - named_files == set(), "files missing from docs/layout.md"
    assert named_files - package_files() == set(), "docs/layout.md names files that are not there"
    for path in layout_paths() - {f"charterm/{p}" for p in named_files}:  # the folders, benchmarks/, ...
        assert (ROOT / path).exists(), f"docs/layout.md names {path}, which is not there"


def test_the_layout_names_every_benchmark_and_each_exists():
    row = next(row for row in layout_rows() if row.startswith("| `benchmarks/`"))
    named = set(re.findall(r"`(\w+\.py)`", row))
    assert named == {p.name for p in (ROOT / "benchmarks").glob("*.py")}


def test_the_layout_says_the_layer_rule():
    text = (DOCS / "layout.md").read_text(encoding="utf-8")
    assert "A layer imports only the\nlayers below it" in text
    for layer in ("engine", "story", "worker", "app", "cli"):
        assert f"| `charterm/{layer}/` |" in text, layer


def test_the_readme_is_a_front_page_that_links_every_page_of_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= FRONT_PAGE_LINES
    linked = {(ROOT / target).resolve() for target in LINK.findall(readme) if target}
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 8
    assert [p.name for p in pages if p.resolve() not in linked] == []
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in pages if p.name != "README.md" and f"]({p.name})" not in index] == []
    for page in pages:
        assert page.read_text(encoding="utf-8").startswith("# "), f"{page.name} starts without a title"


def test_the_readme_keeps_the_two_set_up_commands_at_the_top():
    top = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/charterm\n" in top
    test = "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e '.[test]' && .venv/bin/ruff check . && "
    assert test + ".venv/bin/python -m pytest\n" in top


def test_every_relative_link_leads_to_a_file_that_exists():
    broken = []
    for page in [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md")]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target and not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_charterm_path_the_docs_name_exists():
    """A path such as `charterm/engine/candidates.py` in a page's text names a file that is there
    (docs/layout.md's tables are checked above)."""
    missing = []
    for page in [ROOT / "README.md", *(p for p in DOCS.glob("*.md") if p.name != "layout.md")]:
        for path in re.findall(r"`(charterm/[\w/]+\.(?:py|tcss))`", page.read_text(encoding="utf-8")):
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert missing == []


def test_the_changelog_has_unreleased_work_and_the_version_is_its_newest_release():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.MULTILINE)
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{releases[0]}]")
    assert releases == sorted(releases, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert version == releases[0]

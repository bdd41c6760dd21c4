"""The README's Layout table names every module of charterm, and only files that exist."""

import re

from conftest import ROOT


def layout_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_the_layout_table_lists_every_module_and_nothing_else():
    named = {re.match(r"\| `([^`]+)`", row).group(1) for row in layout_rows()}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "charterm").glob("*.py")}
    assert modules - named == set(), "modules missing from the README's Layout table"
    assert {n for n in named if n.endswith(".py")} - modules == set(), "the Layout table names files that are gone"
    app_row = next(row for row in layout_rows() if row.startswith("| `charterm/app/`"))
    app_files = {p.name for p in (ROOT / "charterm" / "app").iterdir() if p.suffix in (".py", ".tcss")}
    assert app_files - {"__init__.py"} == set(re.findall(r"`([\w.]+\.(?:py|tcss))`", app_row))
    for name in re.findall(r"`(\w+\.py)`", next(row for row in layout_rows() if row.startswith("| `benchmarks/`"))):
        assert (ROOT / "benchmarks" / name).exists(), name

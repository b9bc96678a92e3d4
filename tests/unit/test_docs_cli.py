"""Every command's ``--help`` and its page in docs/ agree: the page names every option the
command takes, and the options its tables list are options the command has."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mserve.cli.main import parser

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: the page that documents each command (sub-commands of a group share their group's page)
PAGES = {
    "convert": "convert.md",
    "serve": "serve.md",
    "repo": "repo.md",
    "bench": "bench.md",
    "results": "results.md",
    "report": "report.md",
    "tune": "tune.md",
    "compare": "compare.md",
    "deploy": "deploy.md",
    "deploy monitoring": "monitoring.md",
    "monitor": "monitor.md",
    "quickstart": "getting-started.md",
}

#: an option in the first cell of a table row: | `--name ...` |
TABLE_OPTION = re.compile(r"^\|\s*`(--[a-z][a-z0-9-]*)")


def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf command, as the words a user types after ``mserve``."""
    groups = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path
    for group in groups:
        for name, sub in group.choices.items():
            yield from commands(sub, (*path, name))


def sub_parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    p = parser()
    for word in words:
        group = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = group.choices[word]
    return p


def options(p: argparse.ArgumentParser) -> set[str]:
    """The long options of a command (``--help`` aside)."""
    return {o for a in p._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


def page_of(words: tuple[str, ...]) -> Path:
    for n in range(len(words), 0, -1):
        name = PAGES.get(" ".join(words[:n]))
        if name:
            return DOCS / name
    raise AssertionError(f"no page in docs/ is named for 'mserve {' '.join(words)}' (PAGES)")


COMMANDS = sorted(commands(parser()))


def test_every_command_has_a_page() -> None:
    missing = [" ".join(c) for c in COMMANDS if not page_of(c).is_file()]
    assert missing == []


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_page_names_every_option(words: tuple[str, ...]) -> None:
    text = page_of(words).read_text(encoding="utf-8")
    absent = sorted(o for o in options(sub_parser(words)) if not re.search(rf"{o}(?![\w-])", text))
    assert absent == [], f"{page_of(words).name} never names these options of mserve {words}"


@pytest.mark.parametrize("page", sorted(set(PAGES.values())))
def test_tables_list_only_real_options(page: str) -> None:
    """An options table row on a command's page is an option of one of its commands."""
    real: set[str] = set()
    for words in COMMANDS:
        if page_of(words).name == page:
            real |= options(sub_parser(words))
    listed = {
        m.group(1)
        for line in (DOCS / page).read_text(encoding="utf-8").splitlines()
        if (m := TABLE_OPTION.match(line))
    }
    assert sorted(listed - real) == [], f"{page} lists options no command of it has"

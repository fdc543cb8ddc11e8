"""Every command and option of `edge-lstm` and `edge-lstm-export` has a help text, `--help` lists every
subcommand, and README's command table is the one generated from them."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.paths import ROOT


def parsers() -> dict[str, argparse.ArgumentParser]:
    from edge_lstm.cli import build_parser
    from edge_lstm_export.cli import _parser

    return {"edge-lstm": build_parser(every=True), "edge-lstm-export": _parser()}


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, its line in the parent's --help) for every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            lines = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, lines.get(name, "")


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and (not a.help or a.help == argparse.SUPPRESS or len(a.help) < 8)
    ]


@pytest.mark.parametrize("prog", ["edge-lstm", "edge-lstm-export"])
def test_every_command_and_option_has_help(prog: str) -> None:
    top = parsers()[prog]
    assert top.description and "`" not in top.description
    assert undocumented(top) == []
    subs = list(commands(top))
    assert len(subs) >= 3
    for name, sub, line in subs:
        assert line and sub.description, f"{prog} {name}: no help line or description"
        assert undocumented(sub) == [], f"{prog} {name}: options without help: {undocumented(sub)}"


@pytest.mark.parametrize("prog", ["edge-lstm", "edge-lstm-export"])
def test_help_lists_every_subcommand(prog: str) -> None:
    """Through the installed command, as a user types it."""
    exe = Path(sys.executable).parent / prog
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    names = [name for name, _, _ in commands(parsers()[prog])]
    listed = re.findall(r"^    (\w\S*)", out, re.MULTILINE)  # argparse's command lines; wrapped ones indent more
    assert listed == names


def test_an_option_without_help_is_caught() -> None:
    p = argparse.ArgumentParser(description="d")
    p.add_argument("--documented", help="a real help text")
    p.add_argument("--bare")
    assert undocumented(p) == ["--bare"]


def test_readme_command_table_is_generated_from_the_parsers() -> None:
    """`./dev docs` writes it from the same help texts; this fails when an option or command changed."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gen_docs

    readme = (ROOT / "README.md").read_text()
    assert gen_docs.update_text(readme, example=False) == readme, "README's generated tables are stale: ./dev docs"
    for prog, top in parsers().items():
        for name, sub, _ in commands(top):
            for option in [max(a.option_strings, key=len) for a in sub._actions if a.option_strings]:
                if option != "--help":
                    assert f"{option}" in gen_docs.command_table(), f"{prog} {name} {option}"

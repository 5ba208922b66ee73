"""docs/cli.md: every command's ``--help``, as one page a reader can search.

The page is rendered from the parsers themselves (``make cli-reference`` writes it, and a
test fails when it differs), so an option cannot be added, renamed or described anew
without the reference following. It is rendered at a fixed width, with the project's
folder written as a relative path, so the page is the same in every checkout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from scones.paths import PROJECT_ROOT

WIDTH = 100

HEADER = """\
# Command reference

Every `scones` command's `--help`, generated from the command-line parsers by
`make cli-reference` (a test keeps this page in step with them). Paths in defaults are
relative to the project folder, but for the report folder `out/` (`--out` of `run`, `up`
and `retrain`), which is made in the folder the command runs in. The README shows the
commands in use; this page lists every option.
"""


def commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ("scones",)
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command line, parser) of the tool and each command and subcommand, in help order."""
    yield " ".join(words), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*words, name))


def _help(parser: argparse.ArgumentParser) -> str:
    """``parser``'s help at :data:`WIDTH` columns, with the project folder relative."""
    base = parser.formatter_class
    root = f"{PROJECT_ROOT}/"

    class Reference(base):  # type: ignore[valid-type,misc]
        def __init__(self, prog: str, **kwargs: object) -> None:
            super().__init__(prog, **{**kwargs, "width": WIDTH})

        def _expand_help(self, action: argparse.Action) -> str:
            return str(super()._expand_help(action)).replace(root, "")

        def _format_text(self, text: str) -> str:
            return str(super()._format_text(text.replace(root, "")))

    parser.formatter_class = Reference
    try:
        return parser.format_help()
    finally:
        parser.formatter_class = base


def render() -> str:
    """The whole page."""
    from scones.cli.main import build_parser

    found = list(commands(build_parser()))
    contents = "\n".join(
        f"- [`{line}`](#{line.replace(' ', '-')})" for line, _ in found if line != "scones"
    )
    sections = "\n".join(f"## {line}\n\n```text\n{_help(parser)}```\n" for line, parser in found)
    return f"{HEADER}\n{contents}\n\n{sections}"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

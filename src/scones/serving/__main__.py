"""``python -m scones.serving [FLAGS]``: ``scones serve`` on its own.

The container runs this instead of the ``scones`` tool: it builds only the
``serve`` command, so the image needs the serving dependencies alone, not the
training or offline-stack packages other commands import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scones.cli import serve
from scones.cli.errors import CommandError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scones.serving", add_help=False)
    commands = parser.add_subparsers(dest="command", required=True)
    serve.register(commands)
    commands.choices["serve"].prog = parser.prog
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"scones serve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

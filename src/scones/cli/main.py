"""``scones``: the project's command-line tool.

Each subcommand lives in its own module under ``scones.cli`` and exposes
``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from scones.cli.errors import CommandError

# Module name under scones.cli, in the order they appear in --help.
COMMAND_MODULES = (
    "run",
    "up",
    "classify",
    "results",
    "review",
    "redrive",
    "env",
    "invoke",
    "backfill",
    "down",
    "serve",
    "prepare_data",
    "train",
    "evaluate",
    "sagemaker",
    "retrain",
    "deploy",
    "report",
    "bench",
    "cost",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scones",
        description="Classify delivery images as bicycle or motorcycle, on AWS or fully offline.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"scones.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"scones.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"scones: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A path that is missing, a directory or not one, a port in use, a full disk:
        # the operating system's sentence names the file or the address.
        print(f"scones: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # AWS configuration and reachability (an unknown profile, no credentials, an
        # endpoint that does not answer): botocore's sentence says which.
        if type(exc).__module__ != "botocore.exceptions":
            raise
        print(f"scones: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scones: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

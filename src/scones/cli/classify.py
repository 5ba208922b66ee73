"""``scones classify PATH...``: send files through the running offline stack."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scones.cli.display import make_console, records_table
from scones.cli.errors import CommandError
from scones.cli.inputs import collect_inputs
from scones.cli.stack_state import client_from_state
from scones.offline.client import StackClientError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "classify", help="upload files to the running stack and show their records"
    )
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for records")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.set_defaults(handler=classify_command)


def classify_command(args: argparse.Namespace) -> int:
    api = client_from_state()
    inputs = collect_inputs(args.paths, labels=())
    try:
        uploads = [api.upload_file(item.path, item.key) for item in inputs]
        records = api.wait_for_records(uploads, timeout=args.timeout)
    except StackClientError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot read input: {exc}") from exc
    rows = [records[u] for u in uploads]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        make_console().print(
            records_table(rows, title="Classified", strip_prefix=api.endpoints.incoming_prefix)
        )
    return 0

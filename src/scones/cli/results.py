"""``scones results``: the records in the running stack's results table."""

from __future__ import annotations

import argparse
import json

from scones_core.records import TERMINAL_STATUSES

from scones.cli.display import make_console, print_summary, records_table, summarise
from scones.cli.stack_state import client_from_state, read_state


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("results", help="show the records of the running stack")
    parser.add_argument(
        "--status",
        choices=[s.value for s in TERMINAL_STATUSES],
        help="only records with this status",
    )
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.set_defaults(handler=results_command)


def results_command(args: argparse.Namespace) -> int:
    state = read_state()
    api = client_from_state()
    rows = sorted(api.records(), key=lambda r: str(r.get("recorded_at", "")))
    if args.status:
        rows = [r for r in rows if r.get("status") == args.status]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    console = make_console()
    model = state.get("model") or {}
    version = str(model.get("version") or "?")
    console.print(records_table(rows, strip_prefix=api.endpoints.incoming_prefix, detailed=True))
    if model.get("name"):
        console.print(
            f"serving: {model['name']} version {version} (ONNX SHA-256 {model.get('onnx_sha256')})",
            highlight=False,
        )
    print_summary(console, summarise(rows))
    return 0

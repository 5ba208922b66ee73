"""``scones results``: the records in a stack's results table.

Without ``--stack`` (or ``--table``) it reads the offline stack that ``scones up`` keeps
running; with ``--stack NAME`` it reads the table that CloudFormation stack names (AWS,
or any ``--endpoint-url``). Either way the records come through the status index
(``scones_core.record_queries``), so a day's records cost the same to read in a table of
thousands as of millions.

A record this stack's workflow and review did not write as they do (by hand, by another
tool, by an older stack: an attribute missing, of another type or out of its range) is
left out of the table and named, with what is wrong, in a line of its own (on stderr with
``--json``, whose list on stdout holds the readable records only).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from scones_core.monitoring.timestamps import parse_timestamp
from scones_core.record_queries import records_with_status
from scones_core.records import (
    PARTITION_KEY,
    RECORDED_AT_ATTRIBUTE,
    TERMINAL_STATUSES,
    UnreadableRecord,
    json_value,
    unreadable,
)

from scones.cli.arguments import key_prefix, parse_moment, refuse_deployed_options
from scones.cli.aws_stack import stack_outputs
from scones.cli.display import make_console, plain, print_summary, records_table, summarise
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.stack_state import client_from_state, read_state

# The stack outputs this command reads (template.yaml's Outputs).
TABLE_OUTPUT = "ResultsTableName"
INCOMING_OUTPUT = "IncomingPrefix"
# On a deployed stack, without --since: the last day, not every record ever written.
DEPLOYED_SINCE = "1d"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "results", help="show the records of a stack", description=__doc__
    )
    parser.add_argument(
        "--status",
        choices=[s.value for s in TERMINAL_STATUSES],
        help="only records with this status",
    )
    parser.add_argument(
        "--since",
        help="only records written since this time: an age (30m, 2h, 1d) or ISO 8601 "
        f"(default: all of the offline stack's; with --stack, {DEPLOYED_SINCE} before --until "
        "or now)",
    )
    parser.add_argument("--until", help="only records written before this time (as --since)")
    parser.add_argument(
        "--prefix",
        default="",
        help="only records whose key starts with this, with or without the stack's incoming "
        "prefix (misc/ and incoming/misc/ are the same)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the records as a JSON list (the unreadable ones are named on stderr)",
    )
    aws = parser.add_argument_group("AWS (default: the offline stack of `scones up`)")
    aws.add_argument("--stack", help=f"CloudFormation stack name (its {TABLE_OUTPUT} output)")
    aws.add_argument("--table", help="results table name (overrides the stack output)")
    aws.add_argument("--region", help="AWS region (default: your AWS configuration)")
    aws.add_argument("--profile", help="AWS profile")
    aws.add_argument("--endpoint-url", help="send every AWS request to this URL")
    parser.set_defaults(handler=results_command)


def _deployed_table(args: argparse.Namespace) -> tuple[Any, str, str]:
    """The DynamoDB client, table name and incoming prefix of the stack the options name."""
    import boto3

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    outputs = stack_outputs(session, args.stack, args.endpoint_url) if args.stack else {}
    table = args.table or outputs.get(TABLE_OUTPUT, "")
    if not table:
        raise CommandFailed(
            f"stack {args.stack} has no output {TABLE_OUTPUT}: pass --table, or wait until "
            "the stack is created"
        )
    client = session.client("dynamodb", endpoint_url=args.endpoint_url)
    return client, table, outputs.get(INCOMING_OUTPUT, "")


def read_records(
    dynamodb: Any,
    table: str,
    statuses: list[str],
    *,
    since: datetime | None,
    until: datetime | None,
    prefix: str,
) -> tuple[list[dict[str, Any]], list[UnreadableRecord]]:
    """The records of ``statuses`` in the time range, oldest first, and those left out
    as unreadable (``records.unreadable``)."""
    rows: list[dict[str, Any]] = []
    for status in statuses:
        rows.extend(
            records_with_status(dynamodb, table, status, since=since, until=until, prefix=prefix)
        )
    readable, left_out = [], []
    for row in sorted(rows, key=_recorded_order):
        if (bad := unreadable(row)) is None:
            readable.append(row)
        else:
            left_out.append(bad)
    return readable, left_out


def _recorded_order(record: dict[str, Any]) -> tuple[datetime, str]:
    """By the time written, not its text: a whole second is written without a fraction
    (``12:00:00Z`` sorts after ``12:00:00.500Z`` as a string)."""
    try:
        moment = parse_timestamp(record.get(RECORDED_AT_ATTRIBUTE))
    except ValueError:
        moment = datetime.min.replace(tzinfo=UTC)
    return moment, str(record.get(PARTITION_KEY, ""))


def results_command(args: argparse.Namespace) -> int:
    deployed = bool(args.stack or args.table or args.endpoint_url)
    if deployed and not (args.stack or args.table):
        raise CommandError("--endpoint-url says where AWS is: add --stack NAME or --table NAME")
    now = datetime.now(UTC)
    until = parse_moment(args.until, now)
    if args.since or not deployed:
        since = parse_moment(args.since, now)
    else:  # a deployed table is read a day at a time: the day before --until, or the last
        try:
            since = parse_moment(DEPLOYED_SINCE, until or now)
        except CommandError:  # --until within a day of the year 1: everything before it
            since = None
    if since and until and since >= until:
        raise CommandError(f"--since ({since}) must be before --until ({until})")
    from botocore.exceptions import BotoCoreError, ClientError

    model: dict[str, Any] = {}
    if deployed:
        dynamodb, table, incoming = _deployed_table(args)
        where = f"stack {args.stack}" if args.stack else f"table {table}"
    else:
        refuse_deployed_options(
            {"--region": args.region, "--profile": args.profile}, "add --stack NAME"
        )
        api = client_from_state()
        model = read_state().get("model") or {}
        dynamodb, table = api.client("dynamodb"), api.endpoints.table
        incoming, where = api.endpoints.incoming_prefix, "the offline stack"
    statuses = [args.status] if args.status else [s.value for s in TERMINAL_STATUSES]
    try:
        rows, left_out = read_records(
            dynamodb,
            table,
            statuses,
            since=since,
            until=until,
            prefix=key_prefix(args.prefix, incoming),
        )
    except (ClientError, BotoCoreError) as exc:
        raise CommandFailed(f"cannot read the results table {table!r}: {exc}") from exc
    if args.json:
        print(json.dumps(rows, indent=2, default=json_value))
        print_unreadable(make_console(stderr=True), left_out)
        return 0
    console = make_console()
    span = f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""
    console.print(
        records_table(
            rows, title=f"Results of {where}{span}", strip_prefix=incoming, detailed=True
        ),
    )
    if model.get("name"):
        version = str(model.get("version") or "?")
        console.print(
            f"serving: {model['name']} version {version} (ONNX SHA-256 {model.get('onnx_sha256')})",
            highlight=False,
        )
    print_summary(console, summarise(rows))
    print_unreadable(console, left_out)
    return 0


def print_unreadable(console: Any, left_out: list[UnreadableRecord]) -> None:
    """One line per record left out of the table, then how many."""
    for bad in left_out:
        console.print(Text.assemble(("unreadable record ", "yellow"), plain(bad)))
    if left_out:
        console.print(
            f"[yellow]{len(left_out)} unreadable record(s) left out[/]: their attributes are "
            "not as this stack writes them"
        )

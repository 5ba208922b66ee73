"""``scones redrive``: replay FAILED objects and the dead-letter queue.

The work is ``scones_core.redrive``; this module finds the stack and prints the
outcome. Without ``--stack`` (or resource flags) it uses the offline stack that
``scones up`` keeps running; with ``--stack NAME`` it reads the names from that
CloudFormation stack's outputs (AWS, or any ``--endpoint-url``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from scones_core.records import Status
from scones_core.redrive import Outcome, RedriveError, Redriver, RedriveReport, Selection

from scones.cli.arguments import key_prefix, parse_moment, refuse_deployed_options
from scones.cli.aws_stack import stack_outputs
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.stack_state import client_from_state
from scones.shown_text import shown

# The stack outputs the redrive needs (template.yaml's Outputs).
TABLE_OUTPUT = "ResultsTableName"
STATE_MACHINE_OUTPUT = "ClassificationStateMachineArn"
DEAD_LETTER_OUTPUT = "DeadLetterQueueUrl"
MONITOR_OUTPUT = "MonitorFunctionName"
BUCKET_OUTPUT = "ImageBucketName"
PREFIX_OUTPUT = "IncomingPrefix"
# A replayed monitor run is waited for: up to Lambda's longest timeout, sent once (a
# retry of a run still going would only find its window's metrics published).
MONITOR_INVOKE_SECONDS = 900


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "redrive",
        help="replay FAILED objects (or the dead-letter queue) through the workflow",
        description=(
            "Start a new execution (attempt N+1, named <execution>-r<N+1>) for every FAILED "
            "record that matches, or with --dead-letters drain the dead-letter queue. "
            "Running it twice never records an object twice."
        ),
    )
    parser.add_argument(
        "--status",
        default=Status.FAILED.value,
        choices=[s.value for s in Status],
        help="records with this status (default FAILED; only FAILED can be replayed)",
    )
    parser.add_argument(
        "--since", help="recorded at or after: ISO 8601 (UTC if no zone) or an age like 2h, 30m, 1d"
    )
    parser.add_argument("--until", help="recorded before: same forms as --since")
    parser.add_argument(
        "--prefix",
        default="",
        help="only object keys starting with this, with or without the stack's incoming "
        "prefix (camera-7/ and incoming/camera-7/ are the same)",
    )
    parser.add_argument(
        "--dead-letters",
        action="store_true",
        help="drain the dead-letter queue instead: replay S3 events and workflow_failed "
        "messages, run failed monitor runs again (their window), leave (and report) anything "
        "else",
    )
    parser.add_argument(
        "--delete-message",
        action="append",
        default=[],
        metavar="MESSAGE_ID",
        help="with --dead-letters: delete this message (an id a report listed) instead of "
        "replaying it; its body is printed; repeatable",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would start; change nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    aws = parser.add_argument_group("AWS (default: the offline stack of `scones up`)")
    aws.add_argument("--stack", help="CloudFormation stack name: resource names from its outputs")
    aws.add_argument("--table", help="results table name (overrides the stack output)")
    aws.add_argument("--state-machine-arn", help="classification state machine ARN")
    aws.add_argument("--dead-letter-queue-url", help="dead-letter queue URL")
    aws.add_argument(
        "--image-bucket",
        help="the stack's image bucket (overrides the stack output): with --dead-letters, only "
        "its uploads are replayed",
    )
    aws.add_argument(
        "--incoming-prefix",
        help="the stack's upload prefix (overrides the stack output): with --dead-letters, "
        "only uploads under it are replayed",
    )
    aws.add_argument(
        "--monitor-function", help="monitor function name (overrides the stack output)"
    )
    aws.add_argument("--region", help="AWS region (default: your AWS configuration)")
    aws.add_argument("--profile", help="AWS profile")
    aws.add_argument("--endpoint-url", help="send every AWS request to this URL")
    parser.set_defaults(handler=redrive_command)


@dataclass(frozen=True)
class Target:
    client: Callable[[str], Any]
    table: str
    state_machine_arn: str
    dead_letter_queue_url: str
    where: str
    monitor_function: str = ""
    # The stack's uploads: a dead-lettered notification is replayed for these only.
    image_bucket: str = ""
    incoming_prefix: str = ""


def resolve_target(args: argparse.Namespace) -> Target:
    explicit = (
        args.table,
        args.state_machine_arn,
        args.dead_letter_queue_url,
        args.monitor_function,
    )
    if not args.stack and not any(explicit) and not args.endpoint_url:
        refuse_deployed_options(
            {"--region": args.region, "--profile": args.profile},
            "add --stack NAME (or --table, --state-machine-arn and --dead-letter-queue-url)",
        )
        api = client_from_state()
        endpoints = api.endpoints
        return Target(
            client=api.client,
            table=endpoints.table,
            state_machine_arn=endpoints.state_machine_arn,
            dead_letter_queue_url=endpoints.dead_letter_queue_url,
            where=f"offline stack at {endpoints.endpoint_url}",
            monitor_function=endpoints.monitor_function,
            image_bucket=endpoints.bucket,
            incoming_prefix=endpoints.incoming_prefix,
        )
    import boto3
    from botocore.config import Config

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    waits_for_a_run = Config(read_timeout=MONITOR_INVOKE_SECONDS, retries={"total_max_attempts": 1})

    def client(service: str) -> Any:
        config = waits_for_a_run if service == "lambda" else None
        return session.client(service, endpoint_url=args.endpoint_url, config=config)

    outputs = stack_outputs(session, args.stack, args.endpoint_url) if args.stack else {}
    return Target(
        client=client,
        table=args.table or outputs.get(TABLE_OUTPUT, ""),
        state_machine_arn=args.state_machine_arn or outputs.get(STATE_MACHINE_OUTPUT, ""),
        dead_letter_queue_url=args.dead_letter_queue_url or outputs.get(DEAD_LETTER_OUTPUT, ""),
        where=f"stack {args.stack}" if args.stack else "the given resources",
        monitor_function=args.monitor_function or outputs.get(MONITOR_OUTPUT, ""),
        image_bucket=args.image_bucket or outputs.get(BUCKET_OUTPUT, ""),
        incoming_prefix=args.incoming_prefix or outputs.get(PREFIX_OUTPUT, ""),
    )


def _require(value: str, what: str, flag: str, output: str) -> None:
    if not value:
        raise CommandError(f"no {what}: pass --stack (output {output}) or {flag}")


def redrive_command(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    if args.dead_letters and (args.since or args.until or args.prefix):
        raise CommandError(
            "--dead-letters replays the whole queue; --since/--until/--prefix select records"
        )
    if args.delete_message and not args.dead_letters:
        raise CommandError("--delete-message deletes dead letters: it needs --dead-letters")
    selection = Selection(
        status=args.status,
        since=parse_moment(args.since, now),
        until=parse_moment(args.until, now),
        prefix=args.prefix,
    )
    try:
        selection.check()
    except RedriveError as exc:
        raise CommandError(str(exc)) from exc
    target = resolve_target(args)
    selection = replace(selection, prefix=key_prefix(selection.prefix, target.incoming_prefix))
    _require(target.state_machine_arn, "state machine", "--state-machine-arn", STATE_MACHINE_OUTPUT)
    redriver = Redriver(
        stepfunctions=target.client("stepfunctions"),
        state_machine_arn=target.state_machine_arn,
        dynamodb=target.client("dynamodb") if target.table else None,
        table_name=target.table,
        sqs=target.client("sqs") if target.dead_letter_queue_url else None,
        dead_letter_queue_url=target.dead_letter_queue_url,
        s3=target.client("s3"),
        image_bucket=target.image_bucket,
        incoming_prefix=target.incoming_prefix,
        lambda_client=target.client("lambda") if target.monitor_function else None,
        monitor_function=target.monitor_function,
    )
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if args.dead_letters:
            _require(
                target.dead_letter_queue_url,
                "dead-letter queue",
                "--dead-letter-queue-url",
                DEAD_LETTER_OUTPUT,
            )
            # Without them every letter would be replayed, another stack's uploads too.
            _require(target.image_bucket, "image bucket", "--image-bucket", BUCKET_OUTPUT)
            _require(target.incoming_prefix, "upload prefix", "--incoming-prefix", PREFIX_OUTPUT)
            if not target.table:
                print(
                    "scones: warning: no results table (--stack or --table): each letter is "
                    "replayed without reading its object's record, so on an Express workflow "
                    "an object already classified is classified again",
                    file=sys.stderr,
                )
            report = redriver.drain_dead_letters(
                dry_run=args.dry_run, delete=frozenset(args.delete_message)
            )
        else:
            _require(target.table, "results table", "--table", TABLE_OUTPUT)
            report = redriver.redrive_records(selection, dry_run=args.dry_run)
    except RedriveError as exc:
        raise CommandError(str(exc)) from exc
    except (ClientError, BotoCoreError) as exc:
        raise CommandFailed(f"{target.where}: {exc}") from exc
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, target.where, dead_letters=args.dead_letters, dry_run=args.dry_run)
    return 0 if report.clean else 1


_LABELS = {
    Outcome.STARTED: "started",
    Outcome.ALREADY_STARTED: "already replayed",
    Outcome.ALREADY_RECORDED: "already recorded",
    Outcome.WOULD_START: "would start",
    Outcome.RAN: "ran again",
    Outcome.LEFT: "left on the queue",
    Outcome.OUTSIDE: "not this stack's",
    Outcome.DELETED: "deleted as asked",
    Outcome.WOULD_DELETE: "would delete",
    Outcome.ERROR: "ERROR",
}


def print_report(report: RedriveReport, where: str, *, dead_letters: bool, dry_run: bool) -> None:
    for replay in report.replays:
        # Keys and details (which may quote a key or a message) as text a person is shown.
        what = shown(replay.key) if replay.key else f"message {replay.message_id}"
        line = f"{_LABELS[replay.outcome]:<17} {replay.source:<15} {what}"
        if replay.execution_name:
            line += f"  attempt {replay.attempt}  {replay.execution_name}"
        if replay.detail:
            line += f"  ({shown(replay.detail)})"
        print(line)
    counts = report.counts()
    summary = (
        ", ".join(f"{n} {_LABELS[Outcome(k)]}" for k, n in sorted(counts.items())) or "nothing"
    )
    source = "dead-letter queue" if dead_letters else "FAILED records"
    print(f"{source} of {where}: {summary}" + (" (dry run)" if dry_run else ""))
    if dead_letters:
        deleted, left = report.messages_deleted, report.messages_left
        print(f"messages deleted: {deleted}, left on the queue: {left}")

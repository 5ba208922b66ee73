"""``scones backfill PREFIX``: classify every object already under PREFIX.

Starts the backfill state machine (``statemachine/backfill.asl.json``): a Distributed Map
lists the prefix, skips objects that already have a record and starts the classification
workflow for the rest. Run it again to resume: only what has no record is started. Without
``--stack`` it acts on the offline stack of ``scones up``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from scones.cli.arguments import refuse_deployed_options, seconds
from scones.cli.aws_stack import stack_outputs
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.stack_state import client_from_state

BACKFILL_OUTPUT = "BackfillStateMachineArn"
BACKFILL_SUFFIX = "-backfill"

# How long --wait waits by default, in seconds.
DEFAULT_WAIT_SECONDS = 3600.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backfill", help="classify every object already under a prefix", description=__doc__
    )
    parser.add_argument("prefix", help="key prefix, under the stack's IncomingPrefix")
    parser.add_argument("--wait", action="store_true", help="wait until the backfill ends")
    parser.add_argument(
        "--timeout",
        type=seconds,
        help=f"seconds --wait waits (default {DEFAULT_WAIT_SECONDS:.0f})",
    )
    aws = parser.add_argument_group("AWS (default: the offline stack of `scones up`)")
    aws.add_argument("--stack", help="CloudFormation stack name (its BackfillStateMachineArn)")
    aws.add_argument("--region", help="AWS region")
    aws.add_argument("--profile", help="AWS profile")
    parser.set_defaults(handler=backfill_command)


def find_backfill_machine(sfn: Any) -> str:
    """The offline stack's backfill state machine (named ``<stack>-backfill``)."""
    paginator = sfn.get_paginator("list_state_machines")
    for page in paginator.paginate():
        for machine in page["stateMachines"]:
            if machine["name"].endswith(BACKFILL_SUFFIX):
                return str(machine["stateMachineArn"])
    raise CommandFailed("the stack has no backfill state machine")


def has_objects(s3: Any, bucket: str, prefix: str) -> bool:
    """Whether anything is under ``prefix``: an empty one needs no execution."""
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))


def start_backfill(sfn: Any, machine_arn: str, prefix: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return str(
        sfn.start_execution(
            stateMachineArn=machine_arn,
            name=f"backfill-{stamp}",
            input=json.dumps({"prefix": prefix}),
        )["executionArn"]
    )


def wait_for(sfn: Any, execution_arn: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = dict(sfn.describe_execution(executionArn=execution_arn))
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(1)


def failed_result_files(s3: Any, results_uri: str) -> list[str]:
    """The result files of the batches that failed within the tolerated share, from the
    Map Run's manifest (``ResultFiles.FAILED``): each holds those batches' inputs and
    errors. A backfill that succeeded may still have some; running it again retries them."""
    bucket, _, key = results_uri.removeprefix("s3://").partition("/")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    destination = manifest.get("DestinationBucket", bucket)
    return [f"s3://{destination}/{entry['Key']}" for entry in manifest["ResultFiles"]["FAILED"]]


def map_run_progress(sfn: Any, execution_arn: str) -> str:
    """What the backfill's Map Run has done with the listed objects (its ``itemCounts``),
    one line; "" before it has a Map Run. An object in a batch that succeeded was started
    or had its record already; the function's log has which. A caller who may not read
    Map Runs (``states:ListMapRuns``, ``states:DescribeMapRun``) is told so instead."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        if not runs:
            return ""
        counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts", {})
    except (BotoCoreError, ClientError) as exc:
        return f"its Map Run could not be read: {exc}"
    said = [f"{counts.get('total', 0)} objects handed to batches"]
    for name, meaning in (
        ("succeeded", "in batches that succeeded (started, or recorded already)"),
        ("failed", "in batches that failed"),
        ("timedOut", "in batches that timed out"),
        ("aborted", "in batches stopped"),
        ("running", "in batches running"),
        ("pending", "waiting for a batch"),
    ):
        if counts.get(name):
            said.append(f"{counts[name]} {meaning}")
    return ", ".join(said)


def _report_failed_batches(s3: Any, output: str | None) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    results = json.loads(output or "{}").get("results")
    if not results:
        return
    try:
        failed = failed_result_files(s3, results)
    except (BotoCoreError, ClientError, ValueError, KeyError, TypeError) as exc:
        print(f"could not read the backfill's result manifest {results}: {exc}")
        return
    if failed:
        print(
            f"{len(failed)} result file(s) of failed batches (their keys and errors; run the "
            "backfill again to retry them):"
        )
        for uri in failed:
            print(f"  {uri}")


def backfill_command(args: argparse.Namespace) -> int:
    if args.timeout is not None and not args.wait:
        raise CommandError("--timeout is how long --wait waits: add --wait, or leave it out")
    if not args.stack:
        refuse_deployed_options(
            {"--region": args.region, "--profile": args.profile}, "add --stack NAME"
        )
    if args.stack:
        import boto3

        session = boto3.Session(profile_name=args.profile, region_name=args.region)
        sfn, s3 = session.client("stepfunctions"), session.client("s3")
        outputs = stack_outputs(session, args.stack)
        if BACKFILL_OUTPUT not in outputs:
            raise CommandFailed(
                f"stack {args.stack} has no output {BACKFILL_OUTPUT}: is it this project's "
                "stack, and created (not rolled back)?"
            )
        machine, incoming = outputs[BACKFILL_OUTPUT], outputs.get("IncomingPrefix", "")
        bucket = outputs.get("ImageBucketName")
    else:
        api = client_from_state()
        sfn, s3 = api.client("stepfunctions"), api.client("s3")
        machine, incoming = find_backfill_machine(sfn), api.endpoints.incoming_prefix
        bucket = api.endpoints.bucket
    if incoming and not args.prefix.startswith(incoming):
        raise CommandError(
            f"{args.prefix!r} is not under the stack's IncomingPrefix {incoming!r}: "
            "only uploads there are classified"
        )
    if bucket and not has_objects(s3, bucket, args.prefix):
        print(f"nothing under s3://{bucket}/{args.prefix}: no backfill started")
        return 0
    execution = start_backfill(sfn, machine, args.prefix)
    print(f"started {execution}")
    if not args.wait:
        return 0
    timeout = DEFAULT_WAIT_SECONDS if args.timeout is None else args.timeout
    described = wait_for(sfn, execution, timeout)
    progress = map_run_progress(sfn, execution)
    if described["status"] == "RUNNING":
        print(
            f"still running after {timeout:g} s; it goes on"
            + (f" (so far: {progress})" if progress else "")
            + ". `scones results` shows the records as they come."
        )
        return 1
    print(f"{described['status']}: {described.get('output') or described.get('cause') or ''}")
    if progress:
        print(progress)
    if described["status"] != "SUCCEEDED":
        return 1
    _report_failed_batches(s3, described.get("output"))
    return 0

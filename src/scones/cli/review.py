"""``scones review``: a local web page to answer the images waiting for a person.

Against the running offline stack (the default) or a stack on AWS (``--aws --stack
NAME``, with the usual AWS credentials): the same code, only the endpoints differ.
"""

from __future__ import annotations

import argparse
import getpass
import time
from typing import Any

from scones.cli.display import make_console
from scones.cli.errors import CommandError

DEFAULT_PORT = 8765


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "review",
        help="serve a local page to review low-confidence (and sampled accepted) images",
        description=(
            "Serve a local web page listing the images waiting for review. Answer each with "
            "b (bicycle), m (motorcycle) or n (neither); arrows move. Answers are written "
            "to the results table (status REVIEWED) and the images copied to the labelled "
            "data prefix."
        ),
    )
    parser.add_argument(
        "--aws",
        action="store_true",
        help="review a stack on AWS (default: the offline stack of `scones up`)",
    )
    parser.add_argument("--stack", help="CloudFormation stack name (required with --aws)")
    parser.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    parser.add_argument(
        "--reviewer",
        default=getpass.getuser(),
        help="name recorded with each answer (default: your user name)",
    )
    parser.add_argument(
        "--sample-accepted",
        type=_share,
        metavar="SHARE",
        help="share of ACCEPTED images to review too (default: the stack's ReviewSampleShare)",
    )
    parser.add_argument(
        "--sample-days",
        type=float,
        default=1.0,
        help="how far back ACCEPTED images are sampled, in days (default: 1)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.set_defaults(handler=review_command)


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return share


def review_clients(args: argparse.Namespace) -> tuple[Any, Any, Any, str | None]:
    """(s3, dynamodb, cloudformation, bucket hint) for AWS or the offline stack."""
    import boto3

    from scones.review.target import S3_CONFIG

    if args.aws:
        if not args.stack:
            raise CommandError("--aws needs --stack NAME")
        session = boto3.Session(region_name=args.region)
        endpoints: dict[str, Any] = {}
        bucket = None
    else:
        from scones.cli.stack_state import client_from_state
        from scones.offline.client import offline_session

        stack = client_from_state()
        session = offline_session(stack.endpoints.region)
        endpoints = {"endpoint_url": stack.endpoints.endpoint_url}
        bucket = stack.endpoints.bucket
    return (
        session.client("s3", config=S3_CONFIG, **endpoints),
        session.client("dynamodb", **endpoints),
        session.client("cloudformation", **endpoints),
        bucket,
    )


def review_command(args: argparse.Namespace) -> int:
    from scones_core.review import ReviewError, ReviewService

    from scones.review.app import LOOPBACK_HOSTS, ReviewAppSettings, build_app
    from scones.review.target import TargetError, find_target
    from scones.serving.server import ModelServer

    s3, dynamodb, cloudformation, bucket = review_clients(args)
    try:
        target = find_target(cloudformation, stack_name=args.stack, bucket=bucket)
        settings = target.settings(sample_share=args.sample_accepted, sample_days=args.sample_days)
    except (TargetError, ReviewError) as exc:
        raise CommandError(str(exc)) from exc
    service = ReviewService(settings, s3=s3, dynamodb=dynamodb)
    app = build_app(
        service,
        ReviewAppSettings(
            reviewer=args.reviewer,
            table_label=f"{target.stack_name}: {target.table_name}",
            allowed_hosts=LOOPBACK_HOSTS | {args.host},
        ),
    )
    server = ModelServer(app, host=args.host, port=args.port)
    url = server.start()
    console = make_console()
    console.print(
        f"[bold green]review page[/] {url}/  (stack {target.stack_name}, table "
        f"{target.table_name}; reviewer {args.reviewer}; sampling "
        f"{settings.sample_share:.1%} of ACCEPTED images)\n"
        f"answers go to s3://{settings.bucket}/{settings.labelled_prefix}  -  Ctrl-C stops"
    )
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0

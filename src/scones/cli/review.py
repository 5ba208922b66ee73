"""``scones review``: a local web page to answer the images waiting for a person.

Against the running offline stack (the default) or a stack on AWS (``--aws --stack
NAME``, with the usual AWS credentials): the same code, only the endpoints differ.
"""

from __future__ import annotations

import argparse
import getpass
import os
import time
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from scones.cli.arguments import port, refuse_deployed_options
from scones.cli.display import make_console, stdout_failed
from scones.cli.errors import CommandError, CommandFailed

DEFAULT_PORT = 8765


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "review",
        help="serve a local page to review low-confidence (and sampled accepted) images",
        description=(
            "Serve a local web page listing the images waiting for review. Answer each with "
            "one of the stack's labels (ModelLabels) or neither, by key: an answer's first "
            "letter, or its position when another answer took that letter (the page lists "
            "them; b, m and n for the default labels); arrows move. Answers are written "
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
        type=_reviewer,
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
        type=_days,
        default=1.0,
        help="how far back ACCEPTED images are sampled, and drawn ones shown, in days (default: 1)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
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


# How far back ACCEPTED records may be sampled: a year (and a finite span; 1e12 days
# overflowed the clock arithmetic).
MAX_SAMPLE_DAYS = 366.0


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days") from None
    if not 0 < days <= MAX_SAMPLE_DAYS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_SAMPLE_DAYS:g} days, got {value!r}"
        )
    return days


def _reviewer(value: str) -> str:
    name = value.strip()
    if not name:
        raise argparse.ArgumentTypeError("the reviewer needs a name (it is recorded with answers)")
    if not name.isprintable():
        raise argparse.ArgumentTypeError(f"{value!r} has characters that cannot be shown")
    return name


# Where getpass.getuser() looks for the user name, in its order, before the passwd file.
USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


def default_reviewer() -> str:
    """The user name that ``--reviewer`` defaults to, found as ``getpass.getuser`` finds
    it. Looked up only by a review: a container run as a user id with no passwd entry and
    no $USER has none, and that must stop no other command."""
    source = next((f"${name}" for name in USER_VARIABLES if os.environ.get(name)), None)
    try:
        found = getpass.getuser()
    except (KeyError, OSError, ImportError):
        raise CommandError(
            f"no reviewer name: $LOGNAME and $USER are not set and user id {os.getuid()} has "
            "no user name; pass --reviewer NAME"
        ) from None
    try:
        return _reviewer(found)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(
            f"the reviewer name from {source or 'the password database'} is unusable: {exc}; "
            "pass --reviewer NAME"
        ) from None


@dataclass(frozen=True)
class ReviewClients:
    s3: Any
    dynamodb: Any
    cloudformation: Any


def clients_for(session: Any, endpoint_url: str | None = None) -> ReviewClients:
    """The three clients a review needs; ``endpoint_url`` for the offline stack."""
    from scones.review.target import S3_CONFIG

    endpoints = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return ReviewClients(
        s3=session.client("s3", config=S3_CONFIG, **endpoints),
        dynamodb=session.client("dynamodb", **endpoints),
        cloudformation=session.client("cloudformation", **endpoints),
    )


def build_review(
    clients: ReviewClients,
    *,
    stack_name: str | None,
    bucket: str | None,
    reviewer: str,
    sample_share: float | None,
    sample_days: float,
    token: str,
    host: str = "127.0.0.1",
) -> tuple[Any, Any]:
    """(the stack found, the FastAPI app) for a review of that stack; its API wants
    ``token`` in every request."""
    from scones_core.review import ReviewError, ReviewService

    from scones.review.app import LOOPBACK_HOSTS, ReviewAppSettings, build_app
    from scones.review.target import TargetError, find_target

    try:
        target = find_target(clients.cloudformation, stack_name=stack_name, bucket=bucket)
        settings = target.settings(sample_share=sample_share, sample_days=sample_days)
    except (TargetError, ReviewError) as exc:
        raise CommandError(str(exc)) from exc
    service = ReviewService(settings, s3=clients.s3, dynamodb=clients.dynamodb)
    app = build_app(
        service,
        ReviewAppSettings(
            reviewer=reviewer,
            table_label=f"{target.stack_name}: {target.table_name}",
            # An IPv6 address arrives in the Host header in brackets.
            allowed_hosts=LOOPBACK_HOSTS | {host, f"[{host}]"},
            token=token,
        ),
    )
    return target, app


LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})


def served_host(host: str) -> str:
    """``host`` as a browser writes it in the page's URL and in every request's Host
    header: an address in its one form (``fd00::2`` for ``FD00:0:0::2``, ``192.0.2.2``
    for ``192.0.2.002``, octal as browsers and ``inet_aton`` read it), a name in lower
    case. The page answers only that host, so another spelling printed the URL of a page
    that refused every request."""
    import ipaddress
    import socket

    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if bare and all(char in "0123456789abcdefxABCDEFX." for char in bare):
        try:
            return socket.inet_ntoa(socket.inet_aton(bare))
        except OSError:
            pass
    return bare.lower()


def listens_everywhere(host: str) -> bool:
    """Whether binding ``host`` listens on every address: ``0.0.0.0`` and ``::`` in any
    spelling the resolver takes ("0", "::0", "::ffff:0.0.0.0"), or a name resolving to one."""
    import ipaddress
    import socket

    if not host.strip():
        return True
    # "[::]" is how a URL writes an IPv6 address, and how the server is then bound.
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        found = socket.getaddrinfo(bare, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):  # unresolvable: the server's start names it
        return False
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if address.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return True
    return False


def review_command(args: argparse.Namespace) -> int:
    import secrets

    import boto3

    from scones.serving.server import ModelServer, ServerStartError

    if listens_everywhere(args.host):
        raise CommandError(
            f"--host {args.host!r} listens on every address, but the page answers only the "
            "address it is asked for (no DNS rebinding): give the one reviewers will open, "
            "e.g. --host 192.168.1.5"
        )
    # The API wants a secret from the printed URL, on loopback too: the Host and origin
    # checks keep other sites' pages out of a browser, not another user of this machine
    # (a shared host, a CI runner) or of the network, whose answers would become labels.
    token = secrets.token_urlsafe(18)
    host = served_host(args.host)

    if not args.aws:
        refuse_deployed_options({"--stack": args.stack, "--region": args.region}, "add --aws")
    if args.aws and not args.stack:
        raise CommandError("--aws needs --stack NAME")
    reviewer = default_reviewer() if args.reviewer is None else args.reviewer
    if args.aws:
        clients = clients_for(boto3.Session(region_name=args.region))
        bucket = None
    else:
        from scones.cli.stack_state import client_from_state
        from scones.offline.client import offline_session

        endpoints = client_from_state().endpoints
        clients = clients_for(offline_session(endpoints.region), endpoints.endpoint_url)
        bucket = endpoints.bucket
    target, app = build_review(
        clients,
        stack_name=args.stack,
        bucket=bucket,
        reviewer=reviewer,
        sample_share=args.sample_accepted,
        sample_days=args.sample_days,
        host=host,
        token=token,
    )
    settings = target.settings(sample_share=args.sample_accepted, sample_days=args.sample_days)
    server = ModelServer(app, host=host, port=args.port)
    try:
        url = server.start()
    except ServerStartError as exc:
        raise CommandFailed(f"the review page cannot start: {exc}") from None
    console = make_console()
    page = f"{url}/?token={token}"
    if host not in LOOPBACK_ADDRESSES:
        console.print(
            f"[yellow]warning:[/] listening on {host}: whoever has the page's URL (it "
            "holds the API's token) can review and see the images; send it only to reviewers"
        )
    console.print(
        f"[bold green]review page[/] {escape(page)}  (stack {target.stack_name}, table "
        f"{target.table_name}; reviewer {escape(reviewer)}; sampling "
        f"{settings.sample_share:.1%} of ACCEPTED images)\n"
        f"answers go to s3://{settings.bucket}/{settings.labelled_prefix}  -  Ctrl-C stops"
    )
    try:
        if stdout_failed():  # nobody can open a page whose URL (and token) was not shown
            return 0
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0

"""``scones report``: draw captured traffic as a PNG.

``--capture`` is a folder (the model server's capture destination) or an
``s3://bucket/prefix`` (SageMaker's; while ``scones up`` runs and ``AWS_ENDPOINT_URL``
is not set, the offline stack's). ``--stack NAME`` reads a deployed stack's capture
(by default ``s3://<ImageBucketName>/<DataCapturePrefix>/<EndpointName>/``).

The threshold and the labels are those the traffic was classified with: the
``ConfidenceThreshold`` and ``ModelLabels`` parameters of the stack the capture is read
from (the offline stack, or ``--stack``), else template.yaml's defaults; ``--threshold``
and ``--labels`` override them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from scones_core.settings import parse_labels

from scones.cli.arguments import file_or_folder, output_file
from scones.cli.errors import CommandError, CommandFailed


def _capture_source(text: str) -> str:
    """A folder or s3:// prefix; an empty one would read the current folder."""
    file_or_folder(text)  # refuses an empty one
    return text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="draw captured traffic (confidence and label mix over time) as a PNG",
        description=(
            "Read data-capture JSON Lines from a folder or an s3:// prefix and draw each "
            "request's confidence over time against the threshold, and the label mix over time."
        ),
    )
    parser.add_argument(
        "--capture",
        metavar="DIR|s3://BUCKET/PREFIX",
        type=_capture_source,
        help="folder or s3:// prefix holding capture files (*.jsonl), searched recursively "
        "(required without --stack)",
    )
    parser.add_argument("--out", required=True, type=output_file, help="PNG file to write")
    parser.add_argument(
        "--threshold",
        type=_fraction,
        help="review threshold line (default: ConfidenceThreshold of the stack the capture is "
        "read from, the offline one or --stack; else template.yaml's)",
    )
    parser.add_argument(
        "--labels",
        help="comma-separated labels in the model's output order (default: ModelLabels, "
        "as for --threshold)",
    )
    aws = parser.add_argument_group("AWS (default: the offline stack of `scones up`)")
    aws.add_argument(
        "--stack",
        metavar="NAME",
        help="deployed CloudFormation stack: its parameters give the threshold and labels, "
        "and --capture defaults to s3://<ImageBucketName>/<DataCapturePrefix>/<EndpointName>/",
    )
    aws.add_argument("--region", help="AWS region of --stack (default: your AWS configuration)")
    aws.add_argument("--profile", help="AWS profile for --stack")
    parser.set_defaults(handler=run)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


@dataclass(frozen=True)
class _Source:
    """Where the capture is read, and the parameters of the stack that classified it: the
    threshold and labels are that stack's (empty ``parameters``: template.yaml's)."""

    capture: str
    s3_client: Any = None  # None lets boto3 choose as usual
    parameters: Mapping[str, str] = field(default_factory=dict)
    origin: str = "template.yaml"

    def parameter(self, name: str) -> str:
        return _parameter(self.parameters, name)

    def where(self, name: str) -> str:
        if name in self.parameters:
            return f"{name} of {self.origin}"
        return f"{name} default in template.yaml"


def _parameter(parameters: Mapping[str, str], name: str) -> str:
    """The stack's value of ``name``; template.yaml's default when it has none."""
    if name in parameters:
        return parameters[name]
    from scones.template_params import parameter_default

    try:
        return parameter_default(name)
    except (KeyError, OSError) as exc:
        raise CommandError(
            f"no default for {name} in template.yaml ({exc}); pass it as a flag"
        ) from exc


def _stack_parameters(
    cloudformation: Any, stack: str, hint: str = ""
) -> tuple[dict[str, str], dict[str, str]]:
    """The outputs and parameters of ``stack`` (deployed, or the offline one)."""
    from scones.deploy import DeployError, stack_facts

    try:
        return stack_facts(cloudformation, stack)
    except DeployError as exc:
        raise CommandFailed(f"{exc}{hint}") from exc


def _deployed_source(args: argparse.Namespace) -> _Source:
    """``--stack``: its capture (unless ``--capture`` names another) and its parameters."""
    import boto3

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    cloudformation = session.client("cloudformation")
    outputs, parameters = _stack_parameters(
        cloudformation,
        args.stack,
        f" (in {cloudformation.meta.region_name}; another region: --region)",
    )
    capture = args.capture
    if capture is None:
        if "ImageBucketName" not in outputs:
            raise CommandError(
                f"stack {args.stack} has no ImageBucketName output (did its last deployment "
                "complete?): pass --capture"
            )
        prefix = _parameter(parameters, "DataCapturePrefix")
        endpoint = _parameter(parameters, "EndpointName")
        capture = f"s3://{outputs['ImageBucketName']}/{prefix}/{endpoint}/"
    s3 = session.client("s3") if capture.startswith("s3://") else None
    return _Source(capture, s3, parameters, f"stack {args.stack}")


def _source(args: argparse.Namespace) -> _Source:
    if args.stack:
        return _deployed_source(args)
    if args.region or args.profile:
        raise CommandError("--region and --profile are for a deployed stack: add --stack NAME")
    if args.capture is None:
        raise CommandError("--capture is required (or --stack NAME, for a deployed stack's)")
    return _offline_source(args.capture) or _Source(args.capture)


def _threshold(source: _Source) -> float:
    """The stack's (or template's) ``ConfidenceThreshold``, checked as ``--threshold`` is."""
    raw = source.parameter("ConfidenceThreshold")
    try:
        return _fraction(raw)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(
            f"{source.where('ConfidenceThreshold')}: {exc}; pass --threshold"
        ) from None


def _labels(text: str, origin: str) -> list[str]:
    """The labels ``origin`` gives (``parse_labels`` refuses text the figure cannot draw)."""
    try:
        return list(parse_labels(text))
    except ValueError as exc:
        raise CommandError(f"{origin} {text!r}: {exc}") from None


def _offline_source(capture: str) -> _Source | None:
    """For ``s3://`` while ``scones up`` runs (and no ``AWS_ENDPOINT_URL`` says otherwise):
    the offline stack's S3, never real AWS, and the parameters it was started with
    (``--param``), read from its CloudFormation stack as a deployed one's are."""
    import os

    from scones.cli import stack_state

    if not capture.startswith("s3://") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    if not stack_state.STATE_FILE.exists():
        return None
    try:
        api = stack_state.client_from_state()
        name = stack_state.read_state().get("stack_name")
    except CommandError:
        return None  # a stale state file: no stack is running
    if not isinstance(name, str) or not name:
        raise CommandFailed(
            f"{stack_state.STATE_FILE} is corrupt: it names no stack; stop the `scones up` "
            "that wrote it and run it again"
        )
    print(
        f"reading {capture} from the offline stack at {api.endpoints.endpoint_url} "
        "(set AWS_ENDPOINT_URL to read elsewhere)",
        file=sys.stderr,
    )
    _, parameters = _stack_parameters(api.client("cloudformation"), name)
    return _Source(capture, api.client("s3"), parameters, "the offline stack")


# Skipped capture lines listed by name before the summary line.
_SHOWN_WARNINGS = 5


@contextmanager
def _skips_printed_here() -> Iterator[None]:
    """The capture reader logs each line or file it skips, for the monitor's log; with no
    logging set up, Python would print each message bare on stderr. The command prints
    the skips itself, each with where it was found."""
    quiet = logging.NullHandler()
    monitoring = logging.getLogger("scones_core.monitoring")
    monitoring.addHandler(quiet)
    try:
        yield
    finally:
        monitoring.removeHandler(quiet)


def run(args: argparse.Namespace) -> int:
    from scones.reports.capture_plot import render_capture_plot
    from scones.reports.capture_source import CaptureSourceError, load_capture

    if args.out.suffix.lower() != ".png":
        raise CommandError(f"--out {args.out} must be a .png file")
    source = _source(args)
    threshold = args.threshold if args.threshold is not None else _threshold(source)
    if args.labels is not None:
        labels = _labels(args.labels, "--labels")
    else:
        labels = _labels(source.parameter("ModelLabels"), source.where("ModelLabels"))
    try:
        with _skips_printed_here():
            series = load_capture(source.capture, labels, s3_client=source.s3_client)
    except CaptureSourceError as exc:
        raise CommandError(str(exc)) from exc
    for warning in series.warnings[:_SHOWN_WARNINGS]:
        where = warning.source + (f":{warning.line}" if warning.line is not None else "")
        print(f"skipped {where}: {warning.reason}", file=sys.stderr)
    if len(series.warnings) > _SHOWN_WARNINGS:
        print(f"... and {len(series.warnings) - _SHOWN_WARNINGS} more", file=sys.stderr)
    if len(series) == 0:
        raise CommandError(
            f"no usable capture records under {source.capture} "
            f"({series.malformed_lines} malformed line(s) skipped)"
        )
    try:
        data = render_capture_plot(series, args.out, threshold)
    except OSError as exc:
        raise CommandFailed(f"cannot write {args.out}: {exc}") from exc
    except (ValueError, OverflowError) as exc:  # times no axis can hold (year 9999)
        span = f"{series.times[0]:%Y-%m-%d} to {series.times[-1]:%Y-%m-%d}"
        raise CommandError(f"cannot draw requests from {span}: {exc}") from exc
    print(
        f"wrote {args.out}: {len(series)} requests from {series.files} file(s), "
        f"{data.below_threshold_share:.1%} below the threshold {threshold:g}"
        + (
            f", {series.malformed_lines} malformed line(s) skipped"
            if series.malformed_lines
            else ""
        )
    )
    return 0

"""``scones report``: draw captured traffic as a PNG.

``--capture`` is a folder (the model server's capture destination) or an
``s3://bucket/prefix`` (SageMaker's; while ``scones up`` runs and ``AWS_ENDPOINT_URL``
is not set, the offline stack's). The threshold and the labels default to the template's
``ConfidenceThreshold`` and ``ModelLabels`` parameters.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scones_core.settings import parse_labels

from scones.cli.arguments import file_or_folder
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
        required=True,
        metavar="DIR|s3://BUCKET/PREFIX",
        type=_capture_source,
        help="folder or s3:// prefix holding capture files (*.jsonl), searched recursively",
    )
    parser.add_argument("--out", required=True, type=file_or_folder, help="PNG file to write")
    parser.add_argument(
        "--threshold",
        type=_fraction,
        help="review threshold line (default: the template's ConfidenceThreshold)",
    )
    parser.add_argument(
        "--labels",
        help="comma-separated labels in the model's output order (default: ModelLabels)",
    )
    parser.set_defaults(handler=run)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _template_default(name: str) -> str:
    from scones.template_params import parameter_default

    try:
        return parameter_default(name)
    except (KeyError, OSError) as exc:
        raise CommandError(
            f"no default for {name} in template.yaml ({exc}); pass it as a flag"
        ) from exc


def _template_threshold() -> float:
    """``ConfidenceThreshold``'s default, checked as ``--threshold`` is."""
    raw = _template_default("ConfidenceThreshold")
    try:
        return _fraction(raw)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(
            f"ConfidenceThreshold default in template.yaml: {exc}; pass --threshold"
        ) from None


def _labels(text: str, origin: str) -> list[str]:
    """The labels ``origin`` gives (``parse_labels`` refuses text the figure cannot draw)."""
    try:
        return list(parse_labels(text))
    except ValueError as exc:
        raise CommandError(f"{origin} {text!r}: {exc}") from None


def _stack_s3_client(capture: str) -> Any:
    """For ``s3://`` while ``scones up`` runs (and no ``AWS_ENDPOINT_URL`` says otherwise):
    the offline stack's S3, never real AWS. ``None`` lets boto3 choose as usual."""
    import os
    import sys

    from scones.cli.stack_state import STATE_FILE, client_from_state

    if not capture.startswith("s3://") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    if not STATE_FILE.exists():
        return None
    try:
        api = client_from_state()
    except CommandError:
        return None  # a stale state file: no stack is running
    print(
        f"reading {capture} from the offline stack at {api.endpoints.endpoint_url} "
        "(set AWS_ENDPOINT_URL to read elsewhere)",
        file=sys.stderr,
    )
    return api.client("s3")


# Skipped capture lines listed by name before the summary line.
_SHOWN_WARNINGS = 5


def run(args: argparse.Namespace) -> int:
    from scones.reports.capture_plot import render_capture_plot
    from scones.reports.capture_source import CaptureSourceError, load_capture

    threshold = args.threshold if args.threshold is not None else _template_threshold()
    if args.labels is not None:
        labels = _labels(args.labels, "--labels")
    else:
        labels = _labels(_template_default("ModelLabels"), "ModelLabels in template.yaml")
    if args.out.suffix.lower() != ".png":
        raise CommandError(f"--out {args.out} must be a .png file")
    try:
        series = load_capture(args.capture, labels, s3_client=_stack_s3_client(args.capture))
    except CaptureSourceError as exc:
        raise CommandError(str(exc)) from exc
    for warning in series.warnings[:_SHOWN_WARNINGS]:
        where = warning.source + (f":{warning.line}" if warning.line is not None else "")
        print(f"skipped {where}: {warning.reason}", file=sys.stderr)
    if len(series.warnings) > _SHOWN_WARNINGS:
        print(f"... and {len(series.warnings) - _SHOWN_WARNINGS} more", file=sys.stderr)
    if len(series) == 0:
        raise CommandError(
            f"no usable capture records under {args.capture} "
            f"({series.malformed_lines} malformed line(s) skipped)"
        )
    try:
        data = render_capture_plot(series, args.out, threshold)
    except OSError as exc:
        raise CommandFailed(f"cannot write {args.out}: {exc}") from exc
    except ValueError as exc:  # matplotlib: times it cannot place on an axis (year 9999)
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

"""``scones serve``: run the model server in the foreground, with the template's defaults.

The flags, their checks and the run are the server's own
(:mod:`scones.serving.command`); this command only supplies defaults from the
project: the shipped model, 127.0.0.1:8080, and ``template.yaml``'s
``EndpointName``, ``EndpointVariantName`` and ``DataCaptureSamplingPercentage`` (read
when the command runs, and only for flags left out). The pixel and body limits are the
endpoint's, as in the container: the pixel limit follows the model's input size
(``PIXELS_PER_INPUT_PIXEL`` times its area) and a body may be InvokeEndpoint's 6 MiB, not
``MaxImagePixels`` or ``MaxImageBytes``: those guard the original uploads, which the
workflow shrinks to the model's input size before it calls the endpoint.
"""

from __future__ import annotations

import argparse
from typing import Any

from scones.cli.errors import CommandError
from scones.paths import SHIPPED_MODEL_DIR
from scones.serving.command import (
    CONTAINER_HELP,
    ServeDefaults,
    ServeError,
    add_arguments,
    resolve,
    serve,
)
from scones.serving.defaults import (
    DEFAULT_CAPTURE_PERCENT,
    DEFAULT_HOST,
    RUNTIME_MAX_PAYLOAD_BYTES,
    SAGEMAKER_PORT,
)

TEMPLATE_HELP = {
    "model": str(SHIPPED_MODEL_DIR),
    "host": DEFAULT_HOST,
    "port": str(SAGEMAKER_PORT),
    "endpoint_name": "EndpointName",
    "max_body_bytes": CONTAINER_HELP["max_body_bytes"],  # the container's own limit
    "capture_percent": "DataCaptureSamplingPercentage",
    "variant_name": "EndpointVariantName",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the model over HTTP (SageMaker container contract and InvokeEndpoint route)",
        description=(
            "Serve a model artifact with GET /ping, POST /invocations and "
            "POST /endpoints/NAME/invocations (boto3 reaches it through "
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME)."
        ),
    )
    add_arguments(parser, TEMPLATE_HELP)
    parser.set_defaults(handler=run)


def _template_default(name: str) -> str:
    from scones.template_params import TEMPLATE_PATH, parameter_default

    try:
        return parameter_default(name)
    except (OSError, KeyError) as exc:
        raise CommandError(
            f"cannot read the default for template parameter {name} from {TEMPLATE_PATH} "
            f"({exc}); pass it as a flag instead"
        ) from exc


def _template_number(name: str, kind: type[int] | type[float]) -> Any:
    raw = _template_default(name)
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise CommandError(f"template parameter {name} is not {what}: {raw!r}") from None


def template_defaults(args: argparse.Namespace) -> ServeDefaults:
    """The defaults for the flags ``args`` leaves out; the template is read only for those."""
    capture_percent = DEFAULT_CAPTURE_PERCENT
    if args.capture_dest and args.capture_percent is None:
        capture_percent = _template_number("DataCaptureSamplingPercentage", float)
    return ServeDefaults(
        model_dir=SHIPPED_MODEL_DIR,
        host=DEFAULT_HOST,
        port=SAGEMAKER_PORT,
        endpoint_name=(
            args.endpoint_name
            if args.endpoint_name is not None
            else _template_default("EndpointName")
        ),
        max_body_bytes=(
            args.max_body_bytes if args.max_body_bytes is not None else RUNTIME_MAX_PAYLOAD_BYTES
        ),
        capture_percent=capture_percent,
        variant_name=(
            args.variant if args.variant is not None else _template_default("EndpointVariantName")
        ),
    )


def settings_from_args(args: argparse.Namespace) -> Any:
    """Validate the flags and fill defaults from the template: the server's settings."""
    try:
        return resolve(args, template_defaults(args)).settings
    except ServeError as exc:
        raise CommandError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    try:
        return serve(resolve(args, template_defaults(args)))
    except ServeError as exc:
        raise CommandError(str(exc)) from exc

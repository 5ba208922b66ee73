"""``scones serve``: run the model server in the foreground.

Defaults for the endpoint name and the body size limit come from
``template.yaml``'s parameters (``EndpointName``, ``MaxImageBytes``), read when
the command runs; flags override them. The pixel limit follows the model's input
size (``PIXELS_PER_INPUT_PIXEL`` times its area), not ``MaxImagePixels``: that
parameter guards the original uploads, which the workflow shrinks to the model's
input size before it calls the endpoint.
Ctrl-C or SIGTERM shuts down gracefully, writes every buffered capture record
and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from scones.cli.errors import CommandError
from scones.serving.defaults import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_CAPTURE_PERCENT,
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_QUEUE_WAIT_S,
    DEFAULT_VARIANT,
    PIXELS_PER_INPUT_PIXEL,
    SAGEMAKER_PORT,
)
from scones.template_params import PROJECT_ROOT

DEFAULT_MODEL = PROJECT_ROOT / "models" / "bicycle-motorcycle"


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
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="artifact folder (model.json + model.onnx)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=SAGEMAKER_PORT, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--endpoint-name", help="endpoint name for the runtime route (default: EndpointName)"
    )
    parser.add_argument("--variant", default=DEFAULT_VARIANT, help="production variant name")
    parser.add_argument(
        "--capture-dest",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="write data-capture JSON Lines here (default: no capture)",
    )
    parser.add_argument(
        "--capture-percent",
        type=float,
        help="percentage of requests to capture, 0-100 (default: DataCaptureSamplingPercentage)",
    )
    parser.add_argument(
        "--capture-flush-seconds",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL_S,
        help="how often buffered capture records are written",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, help="largest request body (default: MaxImageBytes)"
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        help=f"largest image in pixels (default: model input area x {PIXELS_PER_INPUT_PIXEL})",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        help="requests in inference at once (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--queue-wait-seconds",
        type=float,
        default=DEFAULT_QUEUE_WAIT_S,
        help="how long a request waits for an inference slot before it is refused as throttled",
    )
    parser.add_argument(
        "--header-timeout-seconds",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="a client must send the request line and headers within this time",
    )
    parser.add_argument(
        "--body-timeout-seconds",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="a client must send the whole request body within this time",
    )
    parser.add_argument(
        "--enable-faults",
        action="store_true",
        help="add the /_faults admin route for fault injection (testing only)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level; info also logs each request",
    )
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


def _positive_int(value: int | None, flag: str, parameter: str) -> int:
    if value is None:
        raw = _template_default(parameter)
        try:
            value = int(raw)
        except ValueError:
            raise CommandError(
                f"template parameter {parameter} is not an integer: {raw!r}"
            ) from None
    if value < 1:
        raise CommandError(f"{flag} must be a positive integer, got {value}")
    return value


def _number(raw: str, parameter: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise CommandError(f"template parameter {parameter} is not a number: {raw!r}") from None


def settings_from_args(args: argparse.Namespace) -> Any:
    """Validate the flags and fill defaults from the template."""
    from scones.serving.server import ServerSettings

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535, got {args.port}")
    capture_percent = args.capture_percent
    if capture_percent is None:
        capture_percent = (
            _number(
                _template_default("DataCaptureSamplingPercentage"), "DataCaptureSamplingPercentage"
            )
            if args.capture_dest
            else DEFAULT_CAPTURE_PERCENT
        )
    if not 0 <= capture_percent <= 100:
        raise CommandError(f"--capture-percent must be between 0 and 100, got {capture_percent}")
    if args.capture_flush_seconds <= 0:
        raise CommandError(
            f"--capture-flush-seconds must be positive, got {args.capture_flush_seconds}"
        )
    endpoint_name = args.endpoint_name or _template_default("EndpointName")
    if not endpoint_name:
        raise CommandError("--endpoint-name must not be empty")
    for flag, value in (
        ("--max-image-pixels", args.max_image_pixels),
        ("--max-concurrency", args.max_concurrency),
    ):
        if value is not None and value < 1:
            raise CommandError(f"{flag} must be a positive integer, got {value}")
    if args.queue_wait_seconds < 0:
        raise CommandError(
            f"--queue-wait-seconds must not be negative, got {args.queue_wait_seconds}"
        )
    for flag, seconds in (
        ("--header-timeout-seconds", args.header_timeout_seconds),
        ("--body-timeout-seconds", args.body_timeout_seconds),
    ):
        if seconds <= 0:
            raise CommandError(f"{flag} must be positive, got {seconds}")
    return ServerSettings(
        model_dir=args.model,
        endpoint_name=endpoint_name,
        variant_name=args.variant,
        max_body_bytes=_positive_int(args.max_body_bytes, "--max-body-bytes", "MaxImageBytes"),
        max_image_pixels=args.max_image_pixels,
        capture_destination=args.capture_dest,
        capture_percent=capture_percent,
        capture_flush_interval_s=args.capture_flush_seconds,
        enable_faults=args.enable_faults,
        max_concurrency=args.max_concurrency,
        queue_wait_s=args.queue_wait_seconds,
        header_timeout_s=args.header_timeout_seconds,
        body_timeout_s=args.body_timeout_seconds,
    )


class _Terminated(Exception):
    """SIGTERM arrived (after uvicorn's graceful shutdown)."""


def _exit_quietly_on_sigterm() -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def run(args: argparse.Namespace) -> int:
    from scones.model.artifact import ModelArtifactError
    from scones.serving.capture import CaptureConfigError
    from scones.serving.server import ModelServer, ServerStartError, build_app

    settings = settings_from_args(args)
    try:
        app = build_app(settings)
    except (ModelArtifactError, CaptureConfigError) as exc:
        raise CommandError(str(exc)) from exc
    server = ModelServer(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level in {"info", "debug"},
        configure_logging=True,
        header_timeout_s=settings.header_timeout_s,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")

    def announce(base_url: str) -> None:
        capture = settings.capture_destination or "off"
        faults = ", fault injection ON at /_faults" if settings.enable_faults else ""
        print(
            f"scones serve: endpoint {settings.endpoint_name} (variant {settings.variant_name}) "
            f"serving {settings.model_dir} at {base_url} (capture: {capture}{faults})",
            flush=True,
        )

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to
    # the handler that was installed before it: these become a normal exit here.
    restore = _exit_quietly_on_sigterm()
    try:
        server.serve_forever(on_ready=announce)
    except ServerStartError as exc:
        raise CommandError(str(exc)) from exc
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        restore()
    capture_writer = app.state.capture
    if capture_writer is not None:
        stats = capture_writer.stats()
        print(
            f"scones serve: stopped; {stats.records_written} capture records in "
            f"{stats.files_written} files ({stats.errors} errors)",
            file=sys.stderr,
            flush=True,
        )
    else:
        print("scones serve: stopped", file=sys.stderr, flush=True)
    return 0

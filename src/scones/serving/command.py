"""The server's command line: ``python -m scones.serving`` (the container) and ``scones serve``.

Both share the flags, their checks and the foreground run; each brings its own
defaults (:class:`ServeDefaults`). The container takes them from the environment
SageMaker gives it (:func:`container_defaults`); ``scones serve`` from
``template.yaml``. This module imports no CLI and no template code, so the image
needs only the server's packages.

Ctrl-C or SIGTERM (how SageMaker stops a container) shuts down gracefully, writes
every buffered capture record and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from scones_core.sagemaker_names import NAME_RULE, is_sagemaker_name

from scones.serving.defaults import (
    CONTAINER_ENDPOINT_NAME,
    CONTAINER_HOST,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_CAPTURE_PERCENT,
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_QUEUE_WAIT_S,
    DEFAULT_VARIANT,
    ENV_ENDPOINT_NAME,
    ENV_HOST,
    ENV_MODEL_DIR,
    ENV_PORT,
    ENV_WORKERS,
    MAX_FLUSH_INTERVAL_S,
    PIXELS_PER_INPUT_PIXEL,
    RUNTIME_MAX_PAYLOAD_BYTES,
    SAGEMAKER_MODEL_DIR,
    SAGEMAKER_PORT,
)

if TYPE_CHECKING:
    from scones.serving.server import ServerSettings

# What announces a running server; tests and tools wait for this line.
ANNOUNCE_PREFIX = "scones serve"


class ServeError(Exception):
    """A flag, an environment variable, the model or the port is wrong; the message says which."""


@dataclass(frozen=True)
class ServeDefaults:
    """The values used for flags left out."""

    model_dir: Path
    host: str
    port: int
    endpoint_name: str
    max_body_bytes: int
    capture_percent: float = DEFAULT_CAPTURE_PERCENT
    max_concurrency: int | None = None  # None: the CPUs this process may use
    # SageMaker does not tell a container its variant's name: SageMaker's usual one.
    variant_name: str = DEFAULT_VARIANT


def container_defaults(environ: Mapping[str, str] | None = None) -> ServeDefaults:
    """The container's defaults: SageMaker's contract, then the environment's overrides.

    ``SAGEMAKER_BIND_TO_PORT`` (inference pipelines) and ``SAGEMAKER_MODEL_SERVER_WORKERS``
    (requests in inference at once) are SageMaker's own variables; ``SCONES_MODEL_DIR``,
    ``SCONES_HOST`` and ``SCONES_ENDPOINT_NAME`` are for running the image elsewhere. An
    empty variable counts as unset.
    """
    environ = os.environ if environ is None else environ
    port = SAGEMAKER_PORT
    if raw_port := environ.get(ENV_PORT, "").strip():
        try:
            port = int(raw_port)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ServeError(f"{ENV_PORT}={raw_port!r} is not a port number (0-65535)")
    workers = None
    if raw_workers := environ.get(ENV_WORKERS, "").strip():
        try:
            workers = int(raw_workers)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ServeError(f"{ENV_WORKERS}={raw_workers!r} is not a positive whole number")
    endpoint_name = environ.get(ENV_ENDPOINT_NAME) or CONTAINER_ENDPOINT_NAME
    if not is_sagemaker_name(endpoint_name):
        raise ServeError(
            f"{ENV_ENDPOINT_NAME}={endpoint_name!r} is not a SageMaker name: use {NAME_RULE}"
        )
    return ServeDefaults(
        model_dir=Path(environ.get(ENV_MODEL_DIR) or SAGEMAKER_MODEL_DIR),
        host=environ.get(ENV_HOST) or CONTAINER_HOST,
        port=port,
        endpoint_name=endpoint_name,
        max_body_bytes=RUNTIME_MAX_PAYLOAD_BYTES,
        max_concurrency=workers,
    )


CONTAINER_HELP = {
    "model": f"${ENV_MODEL_DIR}, else {SAGEMAKER_MODEL_DIR} (where SageMaker unpacks the model)",
    "host": f"${ENV_HOST}, else {CONTAINER_HOST}",
    "port": f"${ENV_PORT} (set by SageMaker for inference pipelines), else {SAGEMAKER_PORT}",
    "endpoint_name": f"${ENV_ENDPOINT_NAME}, else {CONTAINER_ENDPOINT_NAME}",
    "max_body_bytes": f"{RUNTIME_MAX_PAYLOAD_BYTES}, InvokeEndpoint's payload limit",
    "capture_percent": f"{DEFAULT_CAPTURE_PERCENT:g}",
    "variant_name": DEFAULT_VARIANT,
}


def add_arguments(parser: argparse.ArgumentParser, defaults_help: Mapping[str, str]) -> None:
    """The server's flags. Those named in ``defaults_help`` default to ``None`` (filled
    in by :func:`resolve`), and their help says where the default comes from."""

    def default(name: str) -> str:
        return f" (default: {defaults_help[name]})"

    parser.add_argument(
        "--model", type=Path, help="artifact folder (model.json + model.onnx)" + default("model")
    )
    parser.add_argument("--host", help="address to listen on" + default("host"))
    parser.add_argument(
        "--port", type=int, help="port to listen on; 0 picks a free one" + default("port")
    )
    parser.add_argument(
        "--endpoint-name",
        help="endpoint name for the runtime route and capture" + default("endpoint_name"),
    )
    parser.add_argument("--variant", help="production variant name" + default("variant_name"))
    parser.add_argument(
        "--capture-dest",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="write data-capture JSON Lines here (default: no capture)",
    )
    parser.add_argument(
        "--capture-percent",
        type=float,
        help="percentage of requests to capture, 0-100" + default("capture_percent"),
    )
    parser.add_argument(
        "--capture-flush-seconds",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL_S,
        help="how often buffered capture records are written",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, help="largest request body" + default("max_body_bytes")
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        help=f"largest image in pixels (default: model input area x {PIXELS_PER_INPUT_PIXEL})",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        help=(
            f"requests in inference at once (default: ${ENV_WORKERS} in the container, "
            "else the CPUs this process may use)"
        ),
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


@dataclass(frozen=True)
class ServeCommand:
    """A checked command line: what to serve, where, and how loudly."""

    settings: ServerSettings
    host: str
    port: int
    log_level: str = "info"


def resolve(args: argparse.Namespace, defaults: ServeDefaults) -> ServeCommand:
    """Check the flags from :func:`add_arguments` and fill the ones left out from ``defaults``."""
    from scones.serving.server import ServerSettings  # uvicorn and fastapi: only when serving

    port = args.port if args.port is not None else defaults.port
    if not 0 <= port <= 65535:
        raise ServeError(f"--port must be between 0 and 65535, got {port}")
    capture_percent = (
        args.capture_percent if args.capture_percent is not None else defaults.capture_percent
    )
    if not 0 <= capture_percent <= 100:
        raise ServeError(f"--capture-percent must be between 0 and 100, got {capture_percent}")
    if not 0 < args.capture_flush_seconds <= MAX_FLUSH_INTERVAL_S:  # also refuses NaN
        raise ServeError(
            f"--capture-flush-seconds must be above 0 and at most {MAX_FLUSH_INTERVAL_S:g} "
            f"(a day), got {args.capture_flush_seconds}"
        )
    destination = args.capture_dest
    if destination is not None and not destination.startswith("s3://"):
        folder = Path(destination)
        if folder.exists() and not folder.is_dir():
            raise ServeError(f"--capture-dest {destination}: a file is there, not a folder")
        if "://" not in destination and (problem := unwritable_folder(folder)):
            # Checked now, not at the first flush: a capture that cannot be written would
            # be lost, record by record, while the server answers as if all were well.
            raise ServeError(f"--capture-dest {destination}: {problem}")
    endpoint_name = args.endpoint_name if args.endpoint_name is not None else defaults.endpoint_name
    # Both name the capture files' folders too (<endpoint>/<variant>/...), as on SageMaker.
    variant_name = args.variant if args.variant is not None else defaults.variant_name
    for flag, name in (("--endpoint-name", endpoint_name), ("--variant", variant_name)):
        if not is_sagemaker_name(name):
            raise ServeError(f"{flag} {name!r} is not a SageMaker name: use {NAME_RULE}")
    max_body_bytes = (
        args.max_body_bytes if args.max_body_bytes is not None else defaults.max_body_bytes
    )
    max_concurrency = (
        args.max_concurrency if args.max_concurrency is not None else defaults.max_concurrency
    )
    for flag, value in (
        ("--max-body-bytes", max_body_bytes),
        ("--max-image-pixels", args.max_image_pixels),
        ("--max-concurrency", max_concurrency),
    ):
        if value is not None and value < 1:
            raise ServeError(f"{flag} must be a positive integer, got {value}")
    if not math.isfinite(args.queue_wait_seconds) or args.queue_wait_seconds < 0:
        raise ServeError(
            f"--queue-wait-seconds must be a number of seconds, not negative, "
            f"got {args.queue_wait_seconds}"
        )
    for flag, seconds in (
        ("--header-timeout-seconds", args.header_timeout_seconds),
        ("--body-timeout-seconds", args.body_timeout_seconds),
    ):
        if not math.isfinite(seconds) or seconds <= 0:
            raise ServeError(f"{flag} must be a positive number of seconds, got {seconds}")
    settings = ServerSettings(
        model_dir=args.model if args.model is not None else defaults.model_dir,
        endpoint_name=endpoint_name,
        variant_name=variant_name,
        max_body_bytes=max_body_bytes,
        max_image_pixels=args.max_image_pixels,
        capture_destination=args.capture_dest,
        capture_percent=capture_percent,
        capture_flush_interval_s=args.capture_flush_seconds,
        enable_faults=args.enable_faults,
        max_concurrency=max_concurrency,
        queue_wait_s=args.queue_wait_seconds,
        header_timeout_s=args.header_timeout_seconds,
        body_timeout_s=args.body_timeout_seconds,
    )
    host = args.host if args.host is not None else defaults.host
    return ServeCommand(settings=settings, host=host, port=port, log_level=args.log_level)


def unwritable_folder(folder: Path, *, create: bool = False) -> str | None:
    """Why files cannot be written in ``folder``, or None if they can. A file is tried in
    it: permissions alone say nothing to root, and /proc or a read-only mount refuse what
    the modes allow. ``create`` makes the folder first (``scones run`` and ``up`` write
    into it next); otherwise a folder still to be made is judged by its nearest existing
    parent and nothing is created, so a command that then fails for another reason leaves
    no folder behind (``scones evaluate``, ``scones serve --capture-dest``)."""
    import tempfile

    try:
        existing = folder
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is not a folder"
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as exc:
        return f"cannot write there ({exc.strerror or exc})"
    return None


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


def serve(command: ServeCommand) -> int:
    """Load the model and serve in the foreground until SIGINT or SIGTERM; the exit status."""
    from scones.model.artifact import ModelArtifactError
    from scones.serving.capture import CaptureConfigError
    from scones.serving.server import ModelServer, ServerStartError, build_app

    settings = command.settings
    try:
        app = build_app(settings)
    except (ModelArtifactError, CaptureConfigError) as exc:
        raise ServeError(str(exc)) from exc
    server = ModelServer(
        app,
        host=command.host,
        port=command.port,
        log_level=command.log_level,
        access_log=command.log_level in {"info", "debug"},
        configure_logging=True,
        header_timeout_s=settings.header_timeout_s,
    )
    logging.basicConfig(level=command.log_level.upper(), format="%(levelname)s: %(message)s")

    def announce(base_url: str) -> None:
        capture = settings.capture_destination or "off"
        faults = ", fault injection ON at /_faults" if settings.enable_faults else ""
        print(
            f"{ANNOUNCE_PREFIX}: endpoint {settings.endpoint_name} "
            f"(variant {settings.variant_name}) serving {settings.model_dir} at {base_url} "
            f"(capture: {capture}{faults})",
            flush=True,
        )

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to
    # the handler that was installed before it: these become a normal exit here.
    restore = _exit_quietly_on_sigterm()
    try:
        server.serve_forever(on_ready=announce)
    except ServerStartError as exc:
        raise ServeError(str(exc)) from exc
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        restore()
    capture_writer = app.state.capture
    if capture_writer is not None:
        stats = capture_writer.stats()
        print(
            f"{ANNOUNCE_PREFIX}: stopped; {stats.records_written} capture records in "
            f"{stats.files_written} files ({stats.errors} errors)",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"{ANNOUNCE_PREFIX}: stopped", file=sys.stderr, flush=True)
    return 0

"""Run the model server: embedded in a background thread, or in the foreground.

``ModelServer(app).start()`` serves on ``127.0.0.1`` in a daemon thread and
returns once ``/ping`` answers; ``stop()`` shuts down gracefully, which makes the
app close its capture writer (every buffered record is written). The offline
stack and the tests embed the server this way; ``scones serve`` and the
container's ``serve`` script run :meth:`ModelServer.serve_forever` instead.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from scones.serving.app import create_app
from scones.serving.capture import CaptureWriter, sink_for_destination
from scones.serving.defaults import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_CAPTURE_PERCENT,
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_QUEUE_WAIT_S,
    DEFAULT_VARIANT,
)
from scones.serving.faults import FaultPlan
from scones.serving.protocol import header_timeout_protocol
from scones.serving.sockets import ServerStartError, bind_socket

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """Everything needed to serve a model directory.

    ``max_image_pixels=None`` derives the limit from the model's input size and
    ``max_concurrency=None`` uses one inference slot per available CPU.
    """

    model_dir: Path
    endpoint_name: str
    max_body_bytes: int
    max_image_pixels: int | None = None
    variant_name: str = DEFAULT_VARIANT
    capture_destination: str | None = None
    capture_percent: float = DEFAULT_CAPTURE_PERCENT
    capture_flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    enable_faults: bool = False
    max_concurrency: int | None = None
    queue_wait_s: float = DEFAULT_QUEUE_WAIT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S


def build_app(settings: ServerSettings, *, s3_client: Any | None = None) -> FastAPI:
    """Load the model and wire capture and faults as ``settings`` ask."""
    from scones.model.artifact import OnnxClassifier

    classifier = OnnxClassifier(settings.model_dir)
    capture = None
    if settings.capture_destination:
        capture = CaptureWriter(
            sink_for_destination(settings.capture_destination, s3_client=s3_client),
            endpoint_name=settings.endpoint_name,
            variant_name=settings.variant_name,
            sampling_percentage=settings.capture_percent,
            flush_interval_s=settings.capture_flush_interval_s,
        )
    return create_app(
        classifier,
        endpoint_name=settings.endpoint_name,
        variant_name=settings.variant_name,
        max_body_bytes=settings.max_body_bytes,
        max_image_pixels=settings.max_image_pixels,
        capture=capture,
        faults=FaultPlan() if settings.enable_faults else None,
        max_concurrency=settings.max_concurrency,
        queue_wait_s=settings.queue_wait_s,
        body_timeout_s=settings.body_timeout_s,
    )


class ModelServer:
    """uvicorn serving ``app`` on one socket; embeddable and stoppable, once.

    ``header_timeout_s`` bounds how long a client may take to send a request head
    (:mod:`scones.serving.protocol`); the app bounds the body.
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        log_level: str = "warning",
        access_log: bool = False,
        configure_logging: bool = False,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        graceful_shutdown_s: int = 10,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                # h11 with a deadline for the request head (uvicorn has none).
                http=header_timeout_protocol(header_timeout_s),
                log_level=log_level,
                access_log=access_log,
                lifespan="on",
                # How long a stop waits for requests in flight; a body still arriving
                # then is answered 503 (scones.serving.app).
                timeout_graceful_shutdown=graceful_shutdown_s,
                # Embedded servers leave the host program's logging alone.
                log_config=uvicorn.config.LOGGING_CONFIG if configure_logging else None,
            )
        )

    @classmethod
    def for_model(
        cls,
        settings: ServerSettings,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        s3_client: Any | None = None,
        **options: Any,
    ) -> ModelServer:
        """Load the model in ``settings`` and wrap it: ``ModelServer.for_model(s).start()``."""
        options.setdefault("header_timeout_s", settings.header_timeout_s)
        return cls(build_app(settings, s3_client=s3_client), host=host, port=port, **options)

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the server is not bound yet; call start() first")
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self) -> int:
        """Reserve the port now (idempotent); return the real port."""
        if self._socket is None:
            self._socket = bind_socket(self.host, self._requested_port)
        return self.port

    def start(self, timeout_s: float = 30.0) -> str:
        """Serve in a background thread; return the base URL once ``/ping`` answers."""
        if self._thread is not None:
            return self.base_url
        if self._stopped:
            raise ServerStartError("a stopped ModelServer cannot start again; create a new one")
        self.bind()
        assert self._socket is not None
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": sockets},
            name=f"scones-model-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._thread is None or not self._thread.is_alive():
                raise ServerStartError("the model server stopped during startup (see the log)")
            if time.monotonic() > deadline:
                raise ServerStartError(f"the model server did not start within {timeout_s} s")
            time.sleep(0.01)
        wait_for_ping(self.base_url, timeout_s=max(0.1, deadline - time.monotonic()))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut down gracefully (capture is flushed); idempotent."""
        thread, self._thread = self._thread, None
        self._stopped = True
        if thread is not None:
            self._server.should_exit = True
            thread.join(timeout_s)
            if thread.is_alive():
                self._server.force_exit = True
                thread.join(5)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in this (main) thread until SIGINT/SIGTERM; ``on_ready(base_url)`` once up."""
        self.bind()
        assert self._socket is not None
        if on_ready is not None:
            threading.Thread(
                target=self._announce, args=(on_ready,), name="scones-ready", daemon=True
            ).start()
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()
            self._socket = None
        if not self._server.started:
            raise ServerStartError("the model server failed to start (see the log above)")

    def _announce(self, on_ready: Callable[[str], None]) -> None:
        base_url = self.base_url
        while not self._server.started:
            if self._server.should_exit:
                return
            time.sleep(0.01)
        on_ready(base_url)

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_ping(base_url: str, timeout_s: float = 30.0) -> None:
    """Block until ``GET {base_url}/ping`` returns 200."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/ping", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        if time.monotonic() > deadline:
            raise ServerStartError(f"{base_url}/ping did not answer 200 in time: {last_error}")
        time.sleep(0.05)

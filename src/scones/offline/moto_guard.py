"""The offline stack's AWS emulator answers its own clients only, never a web page.

moto's server takes any credentials, names no Host it serves and, by default, answers
every web origin's CORS preflight: a page open in the user's browser could list the
uploads, scan the records, plant an upload or wipe the whole stack (``POST
/moto-api/reset`` needs no preflight) while it runs on 127.0.0.1. The stack's clients
(boto3 in the CLI, the Lambda workers and the model server, moto's own Step Functions
interpreter, an SDK the user points at it) never send ``Origin`` or ``Sec-Fetch-Site``,
and always name a loopback host; browsers send at least one of them with every request, and a
DNS-rebinding page names its own host. Another user of the same machine is not kept out:
the stack trusts the machine's users (docs/offline.md).

The emulator listens twice, on one state: on the published endpoint (``scones up``'s
state file, ``scones env``) and on one of the stack's own, which its SQS poller, its
Lambda workers (processes of their own), moto's interpreter, the model server's capture
and the records' save use. A stopping stack closes the published one first
(:class:`StackDoor`), so that it acknowledges no upload or StartExecution after it has
begun to account for what has no record, while its own clients go on until it has saved.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from scones.serving.loopback import is_loopback_host

# Headers only browsers send: fetch metadata's Sec-Fetch-Site on every request to a
# loopback address, Origin on cross-origin ones. Not Sec-Fetch-Mode: Node's built-in
# fetch (undici) sends it too, and an SDK may use that fetch.
_BROWSER_HEADERS = ("HTTP_ORIGIN", "HTTP_SEC_FETCH_SITE")

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def refusal(environ: dict[str, Any]) -> str | None:
    """Why a request is not the stack's own, or None."""
    if any(environ.get(header) for header in _BROWSER_HEADERS):
        return "a browser's request: the offline stack's AWS emulator serves its own clients only"
    if not is_loopback_host(str(environ.get("HTTP_HOST", ""))):
        return "the Host is not a loopback name: the offline stack serves 127.0.0.1 only"
    return None


class LoopbackClientsOnly:
    """WSGI middleware that answers 403, with the reason, what :func:`refusal` refuses."""

    def __init__(self, app: Wsgi) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        reason = refusal(environ)
        if reason is None:
            return self.app(environ, start_response)
        body = reason.encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]


STOPPING = "the offline stack is stopping"
# How often the servers' loops look for a shutdown (socketserver's default is 0.5 s, and
# a stop waits for it once per server).
SHUTDOWN_POLL_SECONDS = 0.05


def _stopping_answer(environ: dict[str, Any]) -> tuple[str, bytes]:
    """A 503 ServiceUnavailable in the request's protocol, so an SDK names its code and
    message: JSON for the APIs that name their operation in ``X-Amz-Target`` (Step
    Functions, DynamoDB, SQS), XML for the others (S3's error shape; the query APIs')."""
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = {"__type": "ServiceUnavailable", "message": STOPPING}
        return "application/x-amz-json-1.0", json.dumps(body).encode()
    xml = f"<Error><Code>ServiceUnavailable</Code><Message>{STOPPING}</Message></Error>"
    return "application/xml", xml.encode()


class StackDoor:
    """WSGI middleware of the published endpoint: once :meth:`close` ran, every request
    is answered 503 ServiceUnavailable, "the offline stack is stopping", and no request
    that came in before is still being served."""

    def __init__(self, app: Wsgi) -> None:
        self.app = app
        self._closed = False
        self._serving = 0
        self._changed = threading.Condition()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        with self._changed:
            closed = self._closed
            if not closed:
                self._serving += 1
        if closed:
            content_type, body = _stopping_answer(environ)
            start_response(
                "503 Service Unavailable",
                [("Content-Type", content_type), ("Content-Length", str(len(body)))],
            )
            return [body]
        try:
            # Whole: moto has done the request's work (stored the upload) when it returns.
            return list(self.app(environ, start_response))
        finally:
            with self._changed:
                self._serving -= 1
                self._changed.notify_all()

    def close(self, timeout: float) -> int:
        """Refuse every request from now on; wait up to ``timeout`` for the ones being
        served to be done. Returns how many still are (0 unless moto hangs)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._closed = True
            while self._serving and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return self._serving


def guarded_moto_server(ip_address: str, port: int) -> Any:
    """moto's threaded server with :class:`LoopbackClientsOnly` in front of its app, on
    ``port`` behind a :class:`StackDoor` (``close_door``), and on a free port of the
    stack's own (``own_host_and_port``) that stays open until ``stop``."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import BaseWSGIServer, make_server

    class GuardedMotoServer(ThreadedMotoServer):
        door: StackDoor
        _own_server: BaseWSGIServer | None = None
        _own_thread: threading.Thread | None = None

        _start_error: BaseException | None = None

        def _server_entry(self) -> None:  # as moto's, with the guard around the app
            try:
                app = DomainDispatcherApplication(create_backend_app)
                self.door = StackDoor(app)
                self._server = make_server(
                    self._ip_address,
                    self._port,
                    LoopbackClientsOnly(self.door),
                    True,
                    request_handler=MotoRequestHandler,
                )
                self._own_server = make_server(
                    self._ip_address,
                    0,
                    LoopbackClientsOnly(app),
                    True,
                    request_handler=MotoRequestHandler,
                )
            except BaseException as exc:
                # moto's start() waits for the ready event with no timeout: a port or
                # descriptor that cannot be had must end that wait, and be raised there.
                self._start_error = exc
                if self._server is not None:
                    self._server.server_close()
                    self._server = None
                self._server_ready_event.set()
                return
            self._own_thread = threading.Thread(
                target=self._own_server.serve_forever,
                args=(SHUTDOWN_POLL_SECONDS,),
                name="moto-own-clients",
                daemon=True,
            )
            self._own_thread.start()
            self._server_ready_event.set()
            self._server.serve_forever(SHUTDOWN_POLL_SECONDS)

        def start(self) -> None:
            super().start()
            if self._start_error is not None:
                error, self._start_error = self._start_error, None
                self._thread.join()  # type: ignore[union-attr]
                raise error

        def own_host_and_port(self) -> tuple[str, int]:
            assert self._own_server is not None, "Make sure to call start() first"
            host, own_port = self._own_server.server_address[:2]
            return (str(host), own_port)

        def close_door(self, timeout: float) -> int:
            """Close the published endpoint (:meth:`StackDoor.close`)."""
            return self.door.close(timeout)

        def stop(self) -> None:
            super().stop()
            if self._own_server is not None:
                self._own_server.shutdown()
                self._own_server.server_close()
            if self._own_thread is not None:
                self._own_thread.join()
            if self._server is not None:
                self._server.server_close()

    # verbose=False: no "Starting a new Thread with MotoServer..." line on every command.
    return GuardedMotoServer(ip_address=ip_address, port=port, verbose=False)

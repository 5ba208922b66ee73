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
"""

from __future__ import annotations

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


def guarded_moto_server(ip_address: str, port: int) -> Any:
    """moto's threaded server with :class:`LoopbackClientsOnly` in front of its app."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class GuardedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # as moto's, with the guard around the app
            app = LoopbackClientsOnly(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    # verbose=False: no "Starting a new Thread with MotoServer..." line on every command.
    return GuardedMotoServer(ip_address=ip_address, port=port, verbose=False)

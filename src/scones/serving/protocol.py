"""uvicorn's h11 protocol with a deadline for the request head (slowloris guard).

uvicorn bounds only the idle time between requests (``timeout_keep_alive``), and
that timer restarts on every byte, so a client that trickles one header byte at
a time holds its connection open forever; enough of them exhaust the server's
sockets. Here the whole request line and headers must arrive within
``header_timeout_s``, counted from the connection (or, on a kept-alive
connection, from the first byte of the next request). The body has its own
deadline in the app (``create_app(body_timeout_s=...)``), where the body is read;
a body the app never reads gets this deadline once the request is answered.

The timer is one ``loop.call_later`` per request head, on the event loop: a
trickling client costs no thread and never delays other connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LOGGER = logging.getLogger(__name__)

_TIMEOUT_BODY = b"request head not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeaderTimeoutProtocol(H11Protocol):
    """``H11Protocol`` that closes connections whose request head is too slow.

    The same deadline covers a body the app answered without reading (``/ping``
    with a body, a refused Content-Type): uvicorn drains such a body after the
    response, and without a deadline a trickling client would hold it forever.
    """

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        # The client state the running timer guards: IDLE (a head) or SEND_BODY (a drain).
        self._timer_state: type[h11.IDLE] | type[h11.SEND_BODY] | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a request is held to the same deadline.
        self._start_timer(h11.IDLE)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._head_bytes += len(data)
            if self._timer is None:
                self._start_timer(h11.IDLE)
        super().data_received(data)
        if self.conn.their_state is not self._timer_state:
            # The head is complete (or refused: uvicorn has answered 400), or the drain is over.
            self._cancel_timer()
        if self.conn.their_state is not h11.IDLE:
            self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            # Answered before the body was read: uvicorn drains the rest, within the deadline.
            self._start_timer(h11.SEND_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _start_timer(self, state: type[h11.IDLE] | type[h11.SEND_BODY]) -> None:
        self._cancel_timer()
        self._timer_state = state
        self._timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_state = None

    def _timed_out(self) -> None:
        state = self._timer_state
        self._timer = None
        self._timer_state = None
        if self.transport.is_closing() or self.conn.their_state is not state:
            return
        if state is h11.SEND_BODY:
            LOGGER.info(
                "closing %s: the unread rest of an answered request took over %g s",
                _peer(self.client),
                self.header_timeout_s,
            )
        elif self._head_bytes:
            # Part of a request arrived: say why before closing, as Apache's reqtimeout does.
            LOGGER.info(
                "closing %s: request head incomplete after %g s (%d bytes received)",
                _peer(self.client),
                self.header_timeout_s,
                self._head_bytes,
            )
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def header_timeout_protocol(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with this head deadline."""
    if header_timeout_s <= 0:
        raise ValueError(f"the header timeout must be positive, got {header_timeout_s}")
    seconds = header_timeout_s

    class Configured(HeaderTimeoutProtocol):
        header_timeout_s = seconds

    return Configured


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"

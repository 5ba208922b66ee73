"""uvicorn's h11 protocol with a deadline for the request head (slowloris guard).

uvicorn bounds only the idle time between requests (``timeout_keep_alive``), and
that timer restarts on every byte, so a client that trickles one header byte at
a time holds its connection open forever; enough of them exhaust the server's
sockets. Here the whole request line and headers must arrive within
``header_timeout_s``, counted from the connection (or, on a kept-alive
connection, from the first byte of the next request). The body has its own
deadline in the app (``create_app(body_timeout_s=...)``), where the body is read.

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
    """``H11Protocol`` that closes connections whose request head is too slow."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a request is held to the same deadline.
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        waiting_for_head = self.conn.their_state is h11.IDLE
        if waiting_for_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._start_head_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            # h11 has parsed a whole request head (or failed: uvicorn has answered 400).
            self._cancel_head_timer()
            self._head_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_bytes:
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

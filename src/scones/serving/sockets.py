"""The listening socket the model server, the review page and the offline stack's port
check share: without uvicorn or FastAPI, so checking a port costs no web framework's
import."""

from __future__ import annotations

import errno
import socket


class ServerStartError(RuntimeError):
    """The server could not start (port taken, host no name, model missing, startup failure)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one. Raises a clear error if taken,
    or if ``host`` is no name at all (the socket module raises ``TypeError`` for a name
    it cannot encode, such as undecodable bytes from the command line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY only on sockets that say so,
    # and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except (TypeError, ValueError) as exc:
        sock.close()
        raise ServerStartError(f"cannot listen on {host!r}: not a host name ({exc})") from exc
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServerStartError(
                f"port {port} on {host} is already in use; stop the other server or pick "
                "another port (0 picks a free one)"
            ) from exc
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock

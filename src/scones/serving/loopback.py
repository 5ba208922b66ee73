"""Whether a request's ``Host`` names this machine: the one test the local servers (the
model server's fault route, the offline stack's AWS emulator) use against DNS-rebinding
pages, which reach 127.0.0.1 under a name of their own and send it."""

from __future__ import annotations

import ipaddress


def host_name(host: str) -> str:
    """The name part of a ``Host`` header, brackets off (``[::1]:5000`` -> ``::1``,
    ``localhost:80`` -> ``localhost``; a bare IPv6 address stays whole)."""
    name = host.strip().lower()
    if name.startswith("["):
        return name[1:].partition("]")[0]
    if name.count(":") == 1:
        return name.partition(":")[0]
    return name


def is_loopback_host(host: str) -> bool:
    """``localhost`` (or a name under it, RFC 6761) or a loopback address."""
    name = host_name(host).rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

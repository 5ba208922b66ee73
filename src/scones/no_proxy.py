"""Loopback is reached directly, whatever proxy the environment names.

The offline stack's emulator, its model server and the review page listen on this
machine. A proxy named by ``HTTP_PROXY``/``HTTPS_PROXY`` (a corporate laptop, a CI runner)
cannot reach them: its 127.0.0.1 is its own, so a request sent through it fails
(botocore's ``ProxyConnectionError``). botocore, urllib and httpx send a host that
``NO_PROXY``/``no_proxy`` names straight to it, so every ``scones`` command, the offline
stack as it starts and every session made for it (``offline_session``) add the loopback
names there, after the user's own entries: their own clients, moto's interpreter
(in-process) and the model server's capture (a child, which inherits them) reach loopback
directly, and every other host, AWS's endpoints among them, still goes through the proxy.
Lambda workers get neither variable: their environment is Lambda's, which names no proxy
(``lambda_runtime._PASSTHROUGH_ENV``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Python (urllib, so botocore and httpx) prefers the lower-case spelling, Go's and some other
# tools the upper-case one: both are written when neither is set.
SPELLINGS = ("NO_PROXY", "no_proxy")


def names_a_proxy(environ: Mapping[str, str]) -> bool:
    """Whether a ``<scheme>_proxy`` variable (any case) has a value, as urllib reads them."""
    return any(
        name.lower().endswith("_proxy") and name.lower() != "no_proxy" and value
        for name, value in environ.items()
    )


def no_proxy_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``NO_PROXY``/``no_proxy`` as they must be for loopback to be reached directly: the
    entries they hold, then each loopback name they lack; nothing when no proxy is named.

    A spelling set alone stays alone (setting the other would hide it from the tools that
    prefer that one). A value that is ``*`` alone (no proxy for any host) is kept as it is;
    a ``*`` among other entries means nothing to urllib (it honours it only as the whole
    value), so loopback is added there too.
    """
    if not names_a_proxy(environ):
        return {}
    present = [name for name in SPELLINGS if name in environ] or list(SPELLINGS)
    variables = {}
    for name in present:
        value = environ.get(name, "")
        entries = {entry.strip().lower() for entry in value.split(",")}
        missing = [host for host in LOOPBACK_HOSTS if host not in entries]
        if value == "*" or not missing:
            variables[name] = value
        else:
            kept = value.strip().rstrip(",")
            variables[name] = ",".join([kept, *missing] if kept else missing)
    return variables


def reach_loopback_directly() -> None:
    """Add the loopback names to this process's ``NO_PROXY``/``no_proxy`` (and so to its
    children's) when a proxy is named; idempotent."""
    os.environ.update(no_proxy_variables(os.environ))

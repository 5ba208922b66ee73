"""Remember which moto backend serves a host, instead of searching on every request.

moto 5.2.5's server routes each request in
``DomainDispatcherApplication.get_backend_for_host(host)``: it lists moto's
package folder (``backends.list_of_moto_modules``: an ``os.listdir`` and an
``os.path.isdir`` for each of about 200 folders) and then tries the URL pattern
of every backend, all under the dispatcher's one lock. In the offline stack
every Lambda invoke, S3 read and DynamoDB write the workflow makes is such a
request (about seven per image), and py-spy showed this search at 5-8 % of the
stack process. The answer depends only on the host text and on moto's installed
files, so it is memoised per host (answers that found no backend are not kept).

A test checks that moto still searches on every call, so an upgrade that caches
it fails loudly and this module can go.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_ORIGINAL = DomainDispatcherApplication.get_backend_for_host
_found: dict[str, Any] = {}
_lock = threading.Lock()


def _cached_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
    if host is None:
        return None
    backend = _found.get(host)
    if backend is None:
        backend = _ORIGINAL(self, host)
        if backend is not None:
            with _lock:
                _found[host] = backend
    return backend


def install() -> None:
    DomainDispatcherApplication.get_backend_for_host = _cached_backend_for_host  # type: ignore[method-assign]


def uninstall() -> None:
    DomainDispatcherApplication.get_backend_for_host = _ORIGINAL  # type: ignore[method-assign]
    with _lock:
        _found.clear()

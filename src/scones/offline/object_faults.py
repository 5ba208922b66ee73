"""Injected S3 read faults: make some objects unreadable, on purpose.

An object can be listed and yet refused to every read: a bucket policy that denies its key,
an SSE-C object read without its key. The workflow records such an object FAILED at once
(``scones_core.images``: a 4xx no retry fixes), and the backfill, which cannot head it,
starts it from its listed current version so that it gets that record. moto refuses no
read, so, to prove both offline, :class:`ObjectReadFaults` wraps
``moto.s3.models.S3Backend.get_object`` in this process (the offline stack's moto server
runs in-process; HeadObject reads through it too) and answers reads of the armed keys
with S3's ``AccessDenied`` (HTTP 403). Listings are not refused. Nothing is installed
unless the stack runs with ``enable_faults``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.s3.exceptions import S3ClientError
from moto.s3.models import S3Backend

_ORIGINAL_GET_OBJECT: Callable[..., Any] = S3Backend.get_object


class ReadDenied(S3ClientError):
    code = "AccessDenied"

    def __init__(self) -> None:
        super().__init__("AccessDenied", "Access Denied")


class ObjectReadFaults:
    """Thread-safe: refuse every read of the armed ``(bucket, key)`` pairs until cleared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._denied: set[tuple[str, str]] = set()
        self.refused = 0  # reads answered AccessDenied since install()

    def deny(self, bucket: str, keys: Iterable[str]) -> None:
        with self._lock:
            self._denied |= {(bucket, key) for key in keys}

    def clear(self) -> None:
        with self._lock:
            self._denied.clear()

    def _refuses(self, bucket: str, key: str) -> bool:
        with self._lock:
            if (bucket, key) not in self._denied:
                return False
            self.refused += 1
            return True

    def install(self) -> None:
        faults = self

        def get_object(
            backend: S3Backend, bucket_name: str, key_name: str, *args: Any, **kw: Any
        ) -> Any:
            if faults._refuses(bucket_name, key_name):
                raise ReadDenied()
            return _ORIGINAL_GET_OBJECT(backend, bucket_name, key_name, *args, **kw)

        S3Backend.get_object = get_object  # type: ignore[method-assign,assignment]

    @staticmethod
    def uninstall() -> None:
        S3Backend.get_object = _ORIGINAL_GET_OBJECT  # type: ignore[method-assign]

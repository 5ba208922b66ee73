"""Injected S3 read faults: make some objects unreadable, on purpose.

An object can be listed and yet refused to every read: a bucket policy that denies its key,
an SSE-C object read without its key. The workflow records such an object FAILED at once
(``scones_core.images``: a 4xx no retry fixes), and the backfill, which cannot head it,
starts it from its listed current version so that it gets that record. moto refuses no
read, so, to prove both offline, :class:`ObjectReadFaults` wraps moto's GetObject and
HeadObject request handlers (``moto.s3.responses.S3Response``) in this process (the
offline stack's moto server runs in-process) and answers those requests for the armed
keys with S3's ``AccessDenied`` (HTTP 403). Listings, writes, copies and every other
call that reads the object inside moto are not refused, as a policy denying
``s3:GetObject`` would not refuse them. Nothing is installed unless the stack runs with
``enable_faults``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.s3.exceptions import S3ClientError
from moto.s3.responses import S3Response

_ORIGINAL_GET: Callable[..., Any] = S3Response.get_object
_ORIGINAL_HEAD: Callable[..., Any] = S3Response.head_object


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

        def get_object(response: S3Response) -> Any:
            if faults._refuses(response.bucket_name, response.parse_key_name()):
                raise ReadDenied()
            return _ORIGINAL_GET(response)

        def head_object(
            response: S3Response, bucket_name: str, query: Any, key_name: str, headers: Any
        ) -> Any:
            if faults._refuses(bucket_name, key_name):
                raise ReadDenied()
            return _ORIGINAL_HEAD(response, bucket_name, query, key_name, headers)

        S3Response.get_object = get_object  # type: ignore[method-assign,assignment]
        S3Response.head_object = head_object  # type: ignore[method-assign,assignment]

    @staticmethod
    def uninstall() -> None:
        S3Response.get_object = _ORIGINAL_GET  # type: ignore[method-assign]
        S3Response.head_object = _ORIGINAL_HEAD  # type: ignore[method-assign]

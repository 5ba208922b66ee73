"""Keep moto from holding on to every model object it ever creates.

moto 5.2.5's ``BaseModel.__new__`` appends each instance to its class's
``instances_tracked`` list, for its dashboard, and only a reset empties it. A DynamoDB
scan builds a fresh copy of every item it returns and each SQS receive copies the
messages, so a long-running stack kept every copy: ``scones run`` polls the results
table every 0.2 s, which kept about 2 KB per record per poll (quadratic in a run's
uploads), and 11,000 messages left 22,000 kept copies.

While the stack runs, new objects are not tracked, except S3's keys and multipart
uploads: moto's S3 reset walks those lists to close their spooled files. The exception
to the exception is ListObjectVersions: it deep-copies every version in the bucket (each
with a buffer holding the object's bytes) to answer one page, so each call kept a copy of
the whole bucket. The copies it makes are not tracked, and their buffers are closed once
the answer is written: nothing else holds them.

A test fails once moto stops tracking, or stops copying for ListObjectVersions, so this
module (or that part) can go.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.core.common_models import BaseModel
from moto.s3.responses import S3Response

_ORIGINAL_NEW = BaseModel.__dict__["__new__"]
_ORIGINAL_LIST_VERSIONS = S3Response.list_object_versions
# The classes whose instances moto's own reset needs (S3 disposes of their buffers).
_KEEP_TRACKING = "moto.s3."

# The S3 objects built on this thread while it answers a ListObjectVersions (else unset).
_answering = threading.local()


def _new(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
    if cls.__module__.startswith(_KEEP_TRACKING):
        copies: list[Any] | None = getattr(_answering, "copies", None)
        if copies is None:
            return _ORIGINAL_NEW.__func__(cls, *args, **kwargs)
        copy = super(BaseModel, cls).__new__(cls)
        copies.append(copy)
        return copy
    return super(BaseModel, cls).__new__(cls)


@functools.wraps(_ORIGINAL_LIST_VERSIONS)
def _list_object_versions(self: S3Response) -> Any:
    outer = getattr(_answering, "copies", None)
    copies: list[Any] = []
    _answering.copies = copies
    try:
        return _ORIGINAL_LIST_VERSIONS(self)  # the answer's body is built by now
    finally:
        _answering.copies = outer
        for copy in copies:
            dispose = getattr(copy, "dispose", None)  # keys and multipart uploads
            if dispose is not None:
                dispose()


def install() -> None:
    BaseModel.__new__ = staticmethod(_new)  # type: ignore[method-assign]
    S3Response.list_object_versions = _list_object_versions  # type: ignore[method-assign]


def uninstall() -> None:
    BaseModel.__new__ = _ORIGINAL_NEW  # type: ignore[method-assign]
    S3Response.list_object_versions = _ORIGINAL_LIST_VERSIONS  # type: ignore[method-assign]

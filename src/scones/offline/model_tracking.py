"""Keep moto from holding on to every model object it ever creates.

moto 5.2.5's ``BaseModel.__new__`` appends each instance to its class's
``instances_tracked`` list, for its dashboard, and only a reset empties it. A DynamoDB
scan builds a fresh copy of every item it returns and each SQS receive copies the
messages, so a long-running stack kept every copy: ``scones run`` polls the results
table every 0.2 s, which kept about 2 KB per record per poll (quadratic in a run's
uploads), and 11,000 messages left 22,000 kept copies.

While the stack runs, new objects are not tracked, except S3's keys and multipart
uploads: moto's S3 reset walks those lists to close their spooled files. A test fails
once moto stops tracking, so this module can go.
"""

from __future__ import annotations

from typing import Any

from moto.core.common_models import BaseModel

_ORIGINAL_NEW = BaseModel.__dict__["__new__"]
# The classes whose instances moto's own reset needs (S3 disposes of their buffers).
_KEEP_TRACKING = "moto.s3."


def _new(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
    if cls.__module__.startswith(_KEEP_TRACKING):
        return _ORIGINAL_NEW.__func__(cls, *args, **kwargs)
    return super(BaseModel, cls).__new__(cls)


def install() -> None:
    BaseModel.__new__ = staticmethod(_new)  # type: ignore[method-assign]


def uninstall() -> None:
    BaseModel.__new__ = _ORIGINAL_NEW  # type: ignore[method-assign]

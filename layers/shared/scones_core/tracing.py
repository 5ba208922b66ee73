"""Powertools' ``Tracer`` only when the function's tracing is on.

Creating ``aws_lambda_powertools.Tracer`` imports the X-Ray SDK (``aws_xray_sdk.core``)
even when tracing is disabled: about 540 ms of a 900 ms cold import on Python 3.13
(docs/benchmarks.md, "Cold import"). The template sets ``POWERTOOLS_TRACE_DISABLED`` from
its ``TracingMode`` parameter (``"false"`` only for ``Active``), so a function deployed
with ``PassThrough``, the default, gets :class:`NoOpTracer` here and never imports the SDK.

``tracer()`` follows Powertools' own reading of the variable: tracing is off when it is
truthy (``1``, ``true``, ``yes``, ``on``, any case). When it is unset or falsy the real
``Tracer`` is returned, which still applies Powertools' other rules (off outside Lambda,
under SAM local, or in ``chalice local``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, cast, overload

TRACE_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"
_TRUTHY = frozenset({"1", "y", "yes", "t", "true", "on"})

F = TypeVar("F", bound=Callable[..., Any])


class TracerLike(Protocol):
    """The part of Powertools' ``Tracer`` the handlers use."""

    def capture_lambda_handler(self, lambda_handler: Any = None, **kwargs: Any) -> Any: ...

    def capture_method(self, method: Any = None, **kwargs: Any) -> Any: ...

    def put_annotation(self, key: str, value: Any) -> None: ...

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None: ...


class NoOpTracer:
    """The ``Tracer`` decorators and annotations, doing nothing.

    Both decorators work bare (``@tracer.capture_method``) and with Powertools' keyword
    arguments (``@tracer.capture_method(capture_response=False)``) and return the function
    itself, so a traced handler and an untraced one behave the same.
    """

    disabled = True

    @overload
    def capture_lambda_handler(self, lambda_handler: F, **kwargs: Any) -> F: ...

    @overload
    def capture_lambda_handler(self, lambda_handler: None = None, **kwargs: Any) -> Any: ...

    def capture_lambda_handler(self, lambda_handler: Any = None, **kwargs: Any) -> Any:
        return _passthrough(lambda_handler)

    @overload
    def capture_method(self, method: F, **kwargs: Any) -> F: ...

    @overload
    def capture_method(self, method: None = None, **kwargs: Any) -> Any: ...

    def capture_method(self, method: Any = None, **kwargs: Any) -> Any:
        return _passthrough(method)

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        return None


def _passthrough(function: Any) -> Any:
    if function is None:
        return functools.partial(_passthrough)
    return function


def tracing_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """What ``POWERTOOLS_TRACE_DISABLED`` says (Powertools' truthy values)."""
    value = (os.environ if environ is None else environ).get(TRACE_DISABLED_ENV, "false")
    return value.strip().lower() in _TRUTHY


def tracer(environ: Mapping[str, str] | None = None) -> TracerLike:
    """Powertools' ``Tracer`` when tracing may be on, :class:`NoOpTracer` when it is off."""
    if tracing_disabled(environ):
        return NoOpTracer()
    from aws_lambda_powertools import Tracer

    return cast(TracerLike, Tracer())

"""A failed invocation's error in the function's own log, at ERROR.

With the JSON log format Lambda keeps only lines at or above the function's application
log level (``LogLevel``: WARNING by default), read from each line's ``level`` key. The
Python runtime has written an uncaught error with ``log_level`` instead (fixed in its
interface client in September 2026), which Lambda rates INFO and drops at WARN: a runtime
without the fix would lose every failure's traceback. The handlers of the JSON-logging
functions therefore log the error themselves, through Powertools' Logger, before it
propagates to the runtime (and to Step Functions, or SQS, which act on it).

The classification workflow's functions raise their own errors (``SconesError``) to a
Catch that reads the message out of Lambda's error payload (``DescribeFailure``): their
message is cut to ``errors.MAX_FAILURE_MESSAGE`` once logged whole, so the payload stays
far below the 32,768 characters at which Step Functions cuts a Cause, and parsing it can
never fail (``States.Runtime``, which no Catch takes, would leave the upload unrecorded).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from scones_core.errors import SconesError, bounded_message

F = TypeVar("F", bound=Callable[..., Any])


class ErrorLogger(Protocol):
    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None: ...


def logs_failures(logger: ErrorLogger, *, bound_messages: bool = False) -> Callable[[F], F]:
    """Decorate a handler: an exception it raises is logged at ERROR, then raised on; with
    ``bound_messages``, a ``SconesError`` is raised on with its message bounded."""

    def decorate(handler: F) -> F:
        @functools.wraps(handler)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except Exception as exc:
                logger.exception("invocation failed", extra={"error_type": type(exc).__name__})
                if bound_messages and isinstance(exc, SconesError):
                    message = str(exc)
                    if (bounded := bounded_message(message)) != message:
                        exc.args = (bounded,)  # same class: the Retry and Catch names hold
                raise

        return cast(F, run)

    return decorate

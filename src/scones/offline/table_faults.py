"""Injected DynamoDB write faults: make the results table throttle, on purpose.

The state machine writes every record itself (a direct ``dynamodb:putItem``) and
retries DynamoDB throttling (``DynamoDB.ProvisionedThroughputExceededException``).
moto never throttles, so, to prove those retries offline, :class:`TableWriteFaults`
wraps ``moto.dynamodb.models.DynamoDBBackend.put_item`` in this process (the offline
stack's moto server runs in-process) and answers the next *n* matching ``PutItem``
calls with the error DynamoDB sends: HTTP 400,
``com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException``.
Step Functions names it ``DynamoDB.ProvisionedThroughputExceededException``.

Other codes DynamoDB answers a write with when it is busy or failing
(``RequestLimitExceeded``, the account's request quota; ``InternalServerError``, HTTP 500)
can be armed the same way (``WRITE_FAULTS``), to prove that the states retry each.

A fault can also be armed as a lost answer (``landed``): the write is applied, and then
the error is answered, as when DynamoDB's reply to a write that went through is lost or
it answers HTTP 500 after applying it (a 500 does not say whether the write happened).

Only items whose partition key starts with the armed prefix are throttled (a
record id is ``<bucket>/<key>#<version>``), so other uploads in flight are not
affected. Nothing is installed unless the stack runs with ``enable_faults``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException
from moto.dynamodb.models import DynamoDBBackend

_ORIGINAL_PUT_ITEM: Callable[..., Any] = DynamoDBBackend.put_item

# DynamoDB's own message for this error.
THROTTLED_MESSAGE = (
    "The level of configured provisioned throughput for the table was exceeded. "
    "Consider increasing your provisioning level with the UpdateTable API."
)


THROTTLED = "ProvisionedThroughputExceededException"
# The write faults that can be armed: DynamoDB's error code -> (HTTP status, its message).
WRITE_FAULTS = {
    THROTTLED: (400, THROTTLED_MESSAGE),
    "RequestLimitExceeded": (
        400,
        "Throughput exceeds the current throughput limit for your account. Please contact "
        "AWS Support at https://aws.amazon.com/support request a limit increase",
    ),
    "InternalServerError": (500, "Internal server error"),
}


class InjectedWriteFault(DynamodbException):
    def __init__(self, code: str) -> None:
        status, message = WRITE_FAULTS[code]
        super().__init__(ERROR_TYPE_PREFIX + code, message)
        self.code = status


class TableWriteFaults:
    """Thread-safe: throttle the next *n* ``PutItem`` calls whose ``pk`` has a prefix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remaining = 0
        self._prefix = ""
        self._code = THROTTLED
        self._landed = False
        self.throttled = 0  # PutItem calls answered with the error since install()

    def throttle(
        self, times: int, pk_prefix: str, code: str = THROTTLED, *, landed: bool = False
    ) -> None:
        """Answer the next ``times`` writes of items whose ``pk`` starts with ``pk_prefix``
        with the error ``code`` (one of ``WRITE_FAULTS``); with ``landed``, after applying
        each write."""
        if times < 0:
            raise ValueError(f"times must be >= 0, got {times}")
        if code not in WRITE_FAULTS:
            raise ValueError(f"code must be one of {', '.join(WRITE_FAULTS)}, got {code!r}")
        with self._lock:
            self._remaining, self._prefix, self._code = times, pk_prefix, code
            self._landed = landed

    def clear(self) -> None:
        with self._lock:
            self._remaining, self._prefix, self._landed = 0, "", False

    def remaining(self) -> int:
        with self._lock:
            return self._remaining

    def _consume(self, item_attrs: Any) -> tuple[str, bool] | None:
        """The error code to answer this write with and whether the write lands first, or
        None to write it and answer as usual."""
        pk = item_attrs.get("pk", {}).get("S", "") if isinstance(item_attrs, dict) else ""
        with self._lock:
            if self._remaining <= 0 or not str(pk).startswith(self._prefix):
                return None
            self._remaining -= 1
            self.throttled += 1
            return self._code, self._landed

    def install(self) -> None:
        faults = self

        def put_item(
            backend: DynamoDBBackend, table_name: str, item_attrs: Any, *args: Any, **kw: Any
        ) -> Any:
            fault = faults._consume(item_attrs)
            if fault is None:
                return _ORIGINAL_PUT_ITEM(backend, table_name, item_attrs, *args, **kw)
            code, landed = fault
            if landed:
                _ORIGINAL_PUT_ITEM(backend, table_name, item_attrs, *args, **kw)
            raise InjectedWriteFault(code)

        DynamoDBBackend.put_item = put_item  # type: ignore[method-assign,assignment]

    @staticmethod
    def uninstall() -> None:
        DynamoDBBackend.put_item = _ORIGINAL_PUT_ITEM  # type: ignore[method-assign]

"""Locks moto 5.2.5 does not take, where the offline stack calls it from several threads.

The stack's AWS emulator serves requests on threads, Lambda's SQS poller receives on
two, and a burst writes many records at once. Two of moto's operations check and then
act without a lock, so concurrent calls could do what AWS never does:

* ``SQSBackend.receive_message`` checks that a message is visible and only later marks
  it received: two receives could both take it, and one upload would run in two
  executions. It now runs under the queue's own ``_messages_lock``, the Condition that
  ``add_message`` takes and a long poll waits on (an RLock: the wait releases it).
* ``DynamoDBBackend.put_item``, ``update_item`` and ``delete_item`` read the item,
  evaluate the condition expression, then write: two conditional writes could both
  pass (in 1 of 1,000 simultaneous pairs), so a record's "exactly once" condition
  would not hold. They now run one at a time per backend.

Installed with the stack whether or not the speedups are on (they are correctness, not
speed). A test fails once moto takes these locks itself, so this module can go.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.sqs.models import SQSBackend

_ORIGINAL_RECEIVE = SQSBackend.receive_message
_WRITES = ("put_item", "update_item", "delete_item")
# What install() wrapped (moto's own, or a fault injector installed before it).
_wrapped: dict[str, Callable[..., Any]] = {}
_write_lock = threading.RLock()


@functools.wraps(_ORIGINAL_RECEIVE)
def _receive_atomically(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
    with self.get_queue(queue_name)._messages_lock:
        return _ORIGINAL_RECEIVE(self, queue_name, *args, **kwargs)


def _one_at_a_time(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def write(*args: Any, **kwargs: Any) -> Any:
        with _write_lock:
            return original(*args, **kwargs)

    return write


def install() -> None:
    """Lock what is installed now: install after any other wrapper of these writes."""
    SQSBackend.receive_message = _receive_atomically  # type: ignore[method-assign]
    for name in _WRITES:
        _wrapped[name] = getattr(DynamoDBBackend, name)
        setattr(DynamoDBBackend, name, _one_at_a_time(_wrapped[name]))


def uninstall() -> None:
    SQSBackend.receive_message = _ORIGINAL_RECEIVE  # type: ignore[method-assign]
    for name, original in _wrapped.items():
        setattr(DynamoDBBackend, name, original)
    _wrapped.clear()

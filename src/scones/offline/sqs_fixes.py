"""Keep moto's SQS from counting the whole queue on every send and receive.

moto 5.2.5 builds ``Queue.attributes`` (every attribute, including the three
``ApproximateNumberOfMessages*`` counts, each a walk over every message in the
queue) where it needs a single setting:

* ``SQSBackend.send_message`` reads ``queue.attributes["ContentBasedDeduplication"]``:
  three walks over the queue per message sent.
* ``SQSBackend.receive_message`` calls ``is_message_valid_based_on_retention_period``
  for every message it returns, which asks ``get_queue_attributes`` for
  ``MessageRetentionPeriod``; that builds ``queue.attributes`` three times: nine
  walks over the queue per message received.

* ``Queue.delete_message`` walks the queue twice per message deleted, building a
  list of every message's receipt handles on the way (``had_receipt_handle``).
* ``Queue.messages`` (the visible messages, which every receive walks) reads the clock
  twice per message in the queue, through ``Message.visible`` and ``Message.delayed``:
  with 10,000 messages waiting, about a tenth of the stack process's samples early in a
  burst, and the reason a burst of 10,000 drained slower than one of 1,000.

With a backlog of N messages (a burst of uploads), draining it costs O(N²). The
fixes here read the setting itself instead:

* the retention check reads ``queue.message_retention_period`` (the value that
  ``get_queue_attributes`` returns), and
* while ``send_message`` runs on a thread, the three counts are not computed (they
  are 0 in the attributes it builds, which it never reads: it reads
  ``ContentBasedDeduplication`` only). ``GetQueueAttributes`` and every other
  caller still get the real counts.

The faster ``Queue.messages`` reads the clock once per walk and compares each message's
``visible_at`` and ``delayed_until`` with it, as the two properties do.

The faster ``delete_message`` swaps the message list under the queue's own
``_messages_lock`` (the Condition moto's ``add_message`` takes): Lambda's poller
deletes on two threads, and two unlocked swaps could undo each other (a deleted batch
back after its visibility timeout). ``concurrency_fixes`` locks moto's receive.

moto remembers the receipt handles of every message ever deleted
(``Queue.deleted_messages``, so that deleting again succeeds), about 230 bytes per
message for as long as the stack runs. AWS honours a receipt handle only while its
visibility timeout lasts (after that it may answer ``The receipt handle has expired``),
so the faster delete forgets a deleted message's handles one visibility timeout of the
queue after the later of its delete and the end of its last visibility timeout: a
retried delete within that still succeeds, as it did.

A test checks that moto still counts the queue in both places (and still has the
signatures patched here), so an upgrade that fixes moto fails loudly and this
module can go; another checks that the same records come out with and without it.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from moto.core.utils import unix_time
from moto.sqs import models as sqs_models
from moto.sqs.exceptions import ReceiptHandleIsInvalid
from moto.sqs.models import Message, Queue, SQSBackend

COUNT_PROPERTIES = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)

_ORIGINAL_RETENTION_CHECK = SQSBackend.is_message_valid_based_on_retention_period
_ORIGINAL_SEND = SQSBackend.send_message
_ORIGINAL_COUNTS: dict[str, property] = {name: getattr(Queue, name) for name in COUNT_PROPERTIES}

_ORIGINAL_DELETE = Queue.delete_message
_ORIGINAL_MESSAGES: property = vars(Queue)["messages"]

_sending = threading.local()

# Per queue, oldest first: when the handles of a deleted message may be forgotten, and them.
_forget: weakref.WeakKeyDictionary[Queue, deque[tuple[float, list[str | None]]]] = (
    weakref.WeakKeyDictionary()
)


def _index_of(messages: list[Any], receipt_handle: str) -> int:
    for index, message in enumerate(messages):
        if (
            message.receipt_handle == receipt_handle
            or receipt_handle in message._old_receipt_handles
        ):
            return index
    raise ReceiptHandleIsInvalid()


def _delete_message(self: Queue, receipt_handle: str) -> None:
    with self._messages_lock:
        if receipt_handle in self.deleted_messages:
            return  # already deleted: moto (and SQS) accept it again
        messages = self._messages
        index = _index_of(messages, receipt_handle)
        message = messages[index]
        self.pending_messages.discard(message)
        handles = message.all_receipt_handles
        self.deleted_messages.update(handles)  # type: ignore[arg-type]
        self._messages = messages[:index] + messages[index + 1 :]
        _forget_expired(self, handles, message.visible_at / 1000)


def _forget_expired(queue: Queue, handles: list[str | None], visible_until: float) -> None:
    """Remember when ``handles`` may go; forget those whose time has come (under the lock)."""
    now = unix_time()
    due = _forget.setdefault(queue, deque())
    margin = float(queue.visibility_timeout)  # type: ignore[attr-defined]
    due.append((max(now, visible_until) + margin, handles))
    while due and due[0][0] <= now:
        queue.deleted_messages.difference_update(due.popleft()[1])


def _visible_messages(self: Queue) -> list[Message]:
    """moto's ``Queue.messages`` (visible and not delayed), with the clock read once."""
    now = sqs_models.unix_time_millis()
    return [m for m in self._messages if m.visible_at < now and not now < m.delayed_until]


def _retention_check(self: SQSBackend, queue_name: str, message: Any) -> bool:
    retention_period = self.get_queue(queue_name).message_retention_period  # type: ignore[attr-defined]
    retain_until = retention_period + message.sent_timestamp / 1000
    return bool(retain_until > unix_time())


@functools.wraps(_ORIGINAL_SEND)
def _send_without_counting(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
    outer = getattr(_sending, "active", False)
    _sending.active = True
    try:
        return _ORIGINAL_SEND(self, *args, **kwargs)
    finally:
        _sending.active = outer


def _count_unless_sending(original: property) -> property:
    getter: Callable[[Queue], int] = original.fget  # type: ignore[assignment]

    def count(queue: Queue) -> int:
        if getattr(_sending, "active", False):
            return 0  # send_message builds the attributes for ContentBasedDeduplication only
        return getter(queue)

    return property(count)


def install() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _retention_check  # type: ignore[method-assign]
    SQSBackend.send_message = _send_without_counting  # type: ignore[method-assign]
    for name, original in _ORIGINAL_COUNTS.items():
        setattr(Queue, name, _count_unless_sending(original))
    Queue.delete_message = _delete_message  # type: ignore[method-assign]
    Queue.messages = property(_visible_messages)  # type: ignore[assignment,method-assign]


def uninstall() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _ORIGINAL_RETENTION_CHECK  # type: ignore[method-assign]
    SQSBackend.send_message = _ORIGINAL_SEND  # type: ignore[method-assign]
    for name, original in _ORIGINAL_COUNTS.items():
        setattr(Queue, name, original)
    Queue.delete_message = _ORIGINAL_DELETE  # type: ignore[method-assign]
    Queue.messages = _ORIGINAL_MESSAGES  # type: ignore[assignment,method-assign]

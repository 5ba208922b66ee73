"""Locks moto 5.2.5 does not take, where the offline stack calls it from several threads.

The stack's AWS emulator serves requests on threads, Lambda's SQS poller receives on
two, and a burst writes many records at once. Three of moto's operations check and then
act without a lock, so concurrent calls could do what AWS never does:

* ``SQSBackend.receive_message`` checks that a message is visible and only later marks
  it received: two receives could both take it, and one upload would run in two
  executions. It now runs under the queue's own ``_messages_lock``, the Condition that
  ``add_message`` takes and a long poll waits on (an RLock: the wait releases it).
* ``DynamoDBBackend.put_item``, ``update_item`` and ``delete_item`` read the item,
  evaluate the condition expression, then write: two conditional writes could both
  pass (in 1 of 1,000 simultaneous pairs), so a record's "exactly once" condition
  would not hold. They now run one at a time per backend.
* S3's conditional writes (``PutObject`` with ``If-Match`` or ``If-None-Match: *``,
  ``DeleteObject`` with ``If-Match``, ``CompleteMultipartUpload`` with
  ``If-None-Match: *``) compare the stored object in ``S3Response`` and write it later:
  writers holding the same ETag could all succeed (8 at once: more than one in 92 of
  600 rounds), where on S3 one does and the others get 412. A day's review manifest is
  such a read-modify-write, so an answer's line could be lost. Every write of one key
  (``CopyObject`` into it and unconditional ones too: on S3 no write comes between a
  condition's check and its write) now runs under that key's own lock, so other keys are
  not held up. ``DeleteObjects`` (the batch delete) does not take it.

Installed with the stack whether or not the speedups are on (they are correctness, not
speed). A test fails once moto takes these locks itself, so this module can go.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.s3.responses import S3Response
from moto.sqs.models import SQSBackend

_ORIGINAL_RECEIVE = SQSBackend.receive_message
_WRITES = ("put_item", "update_item", "delete_item")
# What install() wrapped (moto's own, or a fault injector installed before it).
_wrapped: dict[str, Callable[..., Any]] = {}
_write_lock = threading.RLock()
# S3Response's handlers that write one key, each checking its conditions first.
_KEY_WRITES = ("put_object", "copy_object", "delete_object")
_ORIGINAL_KEY_POST = S3Response._key_response_post
_s3_originals: dict[str, Callable[..., Any]] = {}


class _KeyLocks:
    """One lock per (bucket, key) being written, dropped when no writer holds it, so a
    stack that writes millions of keys keeps none of them."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[tuple[str, str], tuple[threading.RLock, list[int]]] = {}

    @contextmanager
    def hold(self, bucket: str, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._held.setdefault((bucket, key), (threading.RLock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._held[(bucket, key)]


_key_locks = _KeyLocks()


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


def _one_writer_per_key(original: Callable[..., Any]) -> Callable[..., Any]:
    """A ``PUT``/``DELETE`` handler of one key (``self`` is the request's S3Response)."""

    @functools.wraps(original)
    def write(self: S3Response) -> Any:
        with _key_locks.hold(self.bucket_name, self.parse_key_name()):
            return original(self)

    return write


@functools.wraps(_ORIGINAL_KEY_POST)
def _complete_one_writer_per_key(  # noqa: PLR0917 (moto's signature)
    self: S3Response, request: Any, body: bytes, bucket_name: str, query: Any, key_name: str
) -> Any:
    """A ``POST`` to a key: only CompleteMultipartUpload (``?uploadId=``) writes it."""
    if "uploadId" not in query:
        return _ORIGINAL_KEY_POST(self, request, body, bucket_name, query, key_name)
    with _key_locks.hold(bucket_name, key_name):
        return _ORIGINAL_KEY_POST(self, request, body, bucket_name, query, key_name)


@contextmanager
def writes_held() -> Iterator[None]:
    """No DynamoDB write runs while this is held (once installed): a consistent read of
    moto's items, which an UpdateItem changes in place."""
    with _write_lock:
        yield


def install() -> None:
    """Lock what is installed now: install after any other wrapper of these writes."""
    SQSBackend.receive_message = _receive_atomically  # type: ignore[method-assign]
    for name in _WRITES:
        _wrapped[name] = getattr(DynamoDBBackend, name)
        setattr(DynamoDBBackend, name, _one_at_a_time(_wrapped[name]))
    for name in _KEY_WRITES:
        _s3_originals[name] = getattr(S3Response, name)
        setattr(S3Response, name, _one_writer_per_key(_s3_originals[name]))
    S3Response._key_response_post = _complete_one_writer_per_key  # type: ignore[method-assign]


def uninstall() -> None:
    SQSBackend.receive_message = _ORIGINAL_RECEIVE  # type: ignore[method-assign]
    for name, original in _wrapped.items():
        setattr(DynamoDBBackend, name, original)
    _wrapped.clear()
    for name, original in _s3_originals.items():
        setattr(S3Response, name, original)
    _s3_originals.clear()
    S3Response._key_response_post = _ORIGINAL_KEY_POST  # type: ignore[method-assign]

"""Partial batch responses for an SQS event source (``ReportBatchItemFailures``).

What Powertools' ``BatchProcessor(EventType.SQS)`` with ``process_partial_response`` does
for this project, without importing ``aws_lambda_powertools.utilities.batch``: that package
imports every event data class and costs about 70 ms of a cold start, a seventh of
``import boto3`` (docs/benchmarks.md, "Cold import"). The rules are Powertools' own:

- each record is handled on its own; one that raises is reported in ``batchItemFailures``
  (by its ``messageId``), so only it returns to the queue, and after the queue's
  ``maxReceiveCount`` receives moves to the dead-letter queue;
- when every record of a non-empty batch failed, :class:`BatchFailed` is raised instead,
  so the invocation itself fails (Lambda's ``Errors`` metric, and its poller backs off);
- a record that cannot be told apart (no ``messageId``) fails the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


class BatchFailed(Exception):
    """Every record of the batch failed; the first error is the ``__cause__``."""


def process_sqs_batch(
    event: Mapping[str, Any],
    handle: Callable[[Mapping[str, Any]], None],
    on_failure: Callable[[Mapping[str, Any], Exception], None] | None = None,
) -> PartialBatchResponse:
    """Call ``handle`` for every record of the SQS ``event``; report the ones that raised.

    ``on_failure(record, error)`` is called for each failed record (to log it) before it is
    reported.
    """
    records: Sequence[Mapping[str, Any]] = event.get("Records") or []
    if not isinstance(records, list):
        raise BatchFailed("the SQS event has no list of Records")
    failures: list[BatchItemFailure] = []
    errors: list[Exception] = []
    for record in records:
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        if not isinstance(message_id, str) or not message_id:
            raise BatchFailed(f"an SQS record without a messageId: {record!r:.200}")
        try:
            handle(record)
        except Exception as exc:
            if on_failure is not None:
                on_failure(record, exc)
            failures.append({"itemIdentifier": message_id})
            errors.append(exc)
    if records and len(failures) == len(records):
        raise BatchFailed(
            f"all {len(records)} records of the batch failed; the first: "
            f"{type(errors[0]).__name__}: {errors[0]}"
        ) from errors[0]
    return {"batchItemFailures": failures}

"""``scones.offline.concurrency_fixes`` (and the locked delete of ``sqs_fixes``): moto's
SQS receive and DynamoDB conditional writes under the threads the offline stack runs.

Each race is provoked with a tiny thread switch interval, many times over; with the
fixes it cannot happen (the locks make it impossible, not rare). A guard fails once
moto takes the locks itself.
"""

from __future__ import annotations

import collections
import inspect
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from moto import mock_aws
from moto.dynamodb.exceptions import ConditionalCheckFailed
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.sqs.models import SQSBackend, sqs_backends

from scones.offline import concurrency_fixes, sqs_fixes

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def fixed() -> Iterator[None]:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    concurrency_fixes.install()
    sqs_fixes.install()
    try:
        with mock_aws():
            yield
    finally:
        sqs_fixes.uninstall()
        concurrency_fixes.uninstall()
        sys.setswitchinterval(switch)


def test_two_pollers_never_take_one_message_nor_undo_a_delete(fixed: None) -> None:
    """Two pollers (as Lambda's) and a sender: every message received exactly once, and
    nothing deleted comes back."""
    backend = sqs_backends[ACCOUNT][REGION]
    queue = backend.create_queue("ingest", VisibilityTimeout="180")
    total = 2000
    for n in range(total // 2):
        backend.send_message("ingest", f"m{n}")
    received: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def sender() -> None:
        for n in range(total // 2, total):
            backend.send_message("ingest", f"m{n}")

    def poller() -> None:
        idle = 0
        while idle < 50:
            messages = backend.receive_message("ingest", 10, 0, 180)
            if not messages:
                idle += 1
                time.sleep(0.002)
                continue
            idle = 0
            with lock:
                received.update(m.body for m in messages)
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)
            ]
            backend.delete_message_batch("ingest", entries)

    threads = [threading.Thread(target=poller) for _ in range(2)]
    threads.append(threading.Thread(target=sender))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(received) == sorted(f"m{n}" for n in range(total))
    assert max(received.values()) == 1
    assert queue._messages == []  # nothing deleted came back


def test_of_two_simultaneous_conditional_writes_exactly_one_wins(fixed: None) -> None:
    """The record's "new, or replaces an earlier FAILED attempt" condition, raced by two
    writers 500 times: exactly one write per record."""
    backend = dynamodb_backends[ACCOUNT][REGION]
    backend.create_table(
        "results",
        schema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        attr=[{"AttributeName": "pk", "AttributeType": "S"}],
        throughput=None,
        billing_mode="PAY_PER_REQUEST",
        indexes=[],
        global_indexes=[],
        streams=None,
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )
    rounds = 500
    wins = [[False] * rounds for _ in range(2)]
    barrier = threading.Barrier(2)

    def writer(who: int) -> None:
        for n in range(rounds):
            barrier.wait()
            try:
                backend.put_item(
                    "results",
                    {"pk": {"S": f"img{n}"}, "status": {"S": "ACCEPTED"}, "who": {"S": str(who)}},
                    condition_expression="attribute_not_exists(pk) OR #status = :failed",
                    expression_attribute_names={"#status": "status"},
                    expression_attribute_values={":failed": {"S": "FAILED"}},
                )
                wins[who][n] = True
            except ConditionalCheckFailed:
                pass

    threads = [threading.Thread(target=writer, args=(who,)) for who in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [a + b for a, b in zip(wins[0], wins[1], strict=True)] == [1] * rounds


def test_moto_still_checks_and_acts_without_a_lock() -> None:
    """When this fails, moto locks these itself: drop ``concurrency_fixes``."""
    receive = inspect.getsource(SQSBackend.receive_message)
    assert "_messages_lock" not in receive and "mark_received" in receive
    for name in ("put_item", "update_item", "delete_item"):
        source = inspect.getsource(getattr(DynamoDBBackend, name))
        assert "lock" not in source.lower(), name


def test_scans_and_receives_leave_no_copies_behind() -> None:
    """``model_tracking``: a scan copies every item and a receive every message; moto
    kept each copy for its dashboard until a reset. S3 keys stay tracked (moto's reset
    closes their buffers)."""
    import boto3
    from moto.dynamodb.models.dynamo_type import Item
    from moto.s3.models import FakeKey
    from moto.sqs.models import Message

    from scones.offline import model_tracking

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="results",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="ingest")["QueueUrl"]
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="uploads-bucket")
        for n in range(20):
            dynamodb.put_item(TableName="results", Item={"pk": {"S": str(n)}})
            sqs.send_message(QueueUrl=queue, MessageBody=str(n))

        def growth() -> tuple[int, int, int]:
            items, messages, keys = (
                len(Item.instances_tracked),  # type: ignore[attr-defined]
                len(Message.instances_tracked),  # type: ignore[attr-defined]
                len(FakeKey.instances_tracked),  # type: ignore[attr-defined]
            )
            for _ in range(5):
                assert len(dynamodb.scan(TableName="results")["Items"]) == 20
            sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0)
            s3.put_object(Bucket="uploads-bucket", Key="photo.png", Body=b"x")
            return (
                len(Item.instances_tracked) - items,  # type: ignore[attr-defined]
                len(Message.instances_tracked) - messages,  # type: ignore[attr-defined]
                len(FakeKey.instances_tracked) - keys,  # type: ignore[attr-defined]
            )

        untracked = growth_with(model_tracking, growth)
        tracked = growth()
    assert untracked[:2] == (0, 0) and untracked[2] >= 1
    assert tracked[0] >= 100 and tracked[1] >= 10  # moto alone: the guard (drop the fix)


def test_listing_object_versions_leaves_no_copies_behind() -> None:
    """``model_tracking``: moto's ListObjectVersions deep-copies every version in the bucket
    (the object's bytes included), and the copies were tracked as S3 keys, so each call
    kept a copy of the whole bucket. The answer stays the same; the stored objects too."""
    import boto3
    from moto.s3.models import FakeKey

    from scones.offline import model_tracking

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="uploads-bucket")
        s3.put_bucket_versioning(
            Bucket="uploads-bucket", VersioningConfiguration={"Status": "Enabled"}
        )
        for n in range(20):
            s3.put_object(Bucket="uploads-bucket", Key=f"photo-{n % 10}.png", Body=b"x" * 1000)
        s3.delete_object(Bucket="uploads-bucket", Key="photo-0.png")  # a delete marker

        def listing() -> tuple[int, list[tuple[str, str, str, int]], int]:
            before = len(FakeKey.instances_tracked)  # type: ignore[attr-defined]
            pages = []
            for _ in range(3):
                pages = [
                    page
                    for page in s3.get_paginator("list_object_versions").paginate(
                        Bucket="uploads-bucket", PaginationConfig={"PageSize": 7}
                    )
                ]
            versions = [
                (v["Key"], v["VersionId"], v["ETag"], v["Size"])
                for page in pages
                for v in page.get("Versions", [])
            ]
            markers = sum(len(page.get("DeleteMarkers", [])) for page in pages)
            return len(FakeKey.instances_tracked) - before, versions, markers  # type: ignore[attr-defined]

        fixed = growth_with(model_tracking, listing)
        moto_alone = listing()
        kept = s3.get_object(Bucket="uploads-bucket", Key="photo-9.png")["Body"].read()
    assert moto_alone[0] >= 3 * 20  # the guard: moto keeps every copy (drop the fix)
    assert fixed[0] == 0
    assert fixed[1:] == moto_alone[1:] and len(fixed[1]) == 20 and fixed[2] == 1
    assert kept == b"x" * 1000


def growth_with(module: object, measure: object) -> tuple[int, int, int]:
    module.install()  # type: ignore[attr-defined]
    try:
        return measure()  # type: ignore[operator,no-any-return]
    finally:
        module.uninstall()  # type: ignore[attr-defined]

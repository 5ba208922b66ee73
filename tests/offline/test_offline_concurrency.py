"""``scones.offline.concurrency_fixes`` (and the locked delete of ``sqs_fixes``): moto's
SQS receive, DynamoDB conditional writes and S3 conditional writes under the threads
the offline stack runs.

Each race is provoked with a tiny thread switch interval, many times over, or with the
moment between moto's check and its write held open; with the fixes it cannot happen
(the locks make it impossible, not rare). A guard fails once moto takes the locks itself.
"""

from __future__ import annotations

import collections
import inspect
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.exceptions import ConditionalCheckFailed
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response
from moto.sqs.models import SQSBackend, sqs_backends

from scones.offline import concurrency_fixes, sqs_fixes
from scones.offline.moto_guard import guarded_moto_server

ACCOUNT, REGION = "123456789012", "us-east-1"
# A lock a moto method could take: ``with self._lock:``, ``threading.Lock()``.
THREAD_LOCK = re.compile(r"with [^\n]*lock|Lock\(", re.IGNORECASE)


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
    # S3's write conditions are checked in the handlers the fix locks, and nowhere else.
    conditions = {
        "put_object": ("If-Match", "If-None-Match"),
        "delete_object": ("If-Match",),
        "_key_response_post": ("If-None-Match",),
    }
    for name, headers in conditions.items():
        source = inspect.getsource(getattr(S3Response, name))
        assert all(f'"{header}"' in source for header in headers), name
        assert not THREAD_LOCK.search(source), name  # (its "lock"s are S3 Object Lock's)
    for name in ("put_object", "delete_object", "complete_multipart_upload", "copy_object"):
        source = inspect.getsource(getattr(S3Backend, name))
        assert "if_match" not in source.lower() and not THREAD_LOCK.search(source), name


# S3 conditional writes, raced through moto's server as the offline stack runs it.
BUCKET = "conditional-writes"
KEY = "labelled/manifest-2026-11-25.jsonl"
WRITERS = 4
# How long moto's write of the key is held open after its check: every writer has
# checked by then (they start together), so without a lock each of them writes.
WINDOW_S = 1.0


class Emulator:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.s3 = self.client()

    def client(self, read_timeout: float = 60) -> Any:
        return boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id="offline",
            aws_secret_access_key="offline",
            config=Config(retries={"max_attempts": 1}, read_timeout=read_timeout),
        )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """moto's server as the offline stack starts it; its endpoint URL."""
    moto = guarded_moto_server("127.0.0.1", 0)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        moto.stop()


@contextmanager
def served(server: str, *, fixes: bool) -> Iterator[Emulator]:
    """The server emptied (moto's backends are module globals), with ``concurrency_fixes``
    when ``fixes``, and a versioned bucket, as the stack's."""
    reset = urllib.request.Request(f"{server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    if fixes:
        concurrency_fixes.install()
    try:
        emulator = Emulator(server)
        emulator.s3.create_bucket(Bucket=BUCKET)
        emulator.s3.put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        yield emulator
    finally:
        if fixes:
            concurrency_fixes.uninstall()
        urllib.request.urlopen(reset, timeout=10).close()


@pytest.fixture
def emulator(server: str) -> Iterator[Emulator]:
    with served(server, fixes=True) as emulator:
        yield emulator


@pytest.fixture
def moto_alone(server: str) -> Iterator[Emulator]:
    with served(server, fixes=False) as emulator:
        yield emulator


# One request of a client: the boto3 method and its arguments.
Write = tuple[str, dict[str, Any]]


def _completions(emulator: Emulator) -> list[Write]:
    """``WRITERS`` multipart uploads of KEY, each ready to complete if KEY is new."""
    completions = []
    for n in range(WRITERS):
        upload = emulator.s3.create_multipart_upload(Bucket=BUCKET, Key=KEY)["UploadId"]
        part = emulator.s3.upload_part(
            Bucket=BUCKET, Key=KEY, UploadId=upload, PartNumber=1, Body=f"writer {n}".encode()
        )
        parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
        completions.append(
            (
                "complete_multipart_upload",
                {"UploadId": upload, "MultipartUpload": parts, "IfNoneMatch": "*"},
            )
        )
    return completions


def _writers(emulator: Emulator, case: str) -> tuple[str, list[Write]]:
    """The moto backend method that writes, and ``WRITERS`` writes all holding one
    condition: on S3 exactly one of them succeeds."""
    if case == "complete If-None-Match":
        return "complete_multipart_upload", _completions(emulator)
    if case == "put If-None-Match":
        condition = {"IfNoneMatch": "*"}
    else:
        condition = {"IfMatch": emulator.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"a\n")["ETag"]}
    if case == "delete If-Match":
        return "delete_object", [("delete_object", condition)] * WRITERS
    puts = [("put_object", {"Body": b"%d\n" % n, **condition}) for n in range(WRITERS)]
    return "put_object", puts


def _race(emulator: Emulator, case: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """How many of the writers succeeded, and the errors of the others."""
    backend_write, writes = _writers(emulator, case)
    original = getattr(S3Backend, backend_write)

    def held_open(*args: Any, **kwargs: Any) -> Any:
        time.sleep(WINDOW_S)  # after S3Response checked the condition, before the write
        return original(*args, **kwargs)

    monkeypatch.setattr(S3Backend, backend_write, held_open)
    clients = [emulator.client() for _ in writes]
    barrier = threading.Barrier(len(writes))
    wins: list[int] = []
    errors: list[str] = []

    def write(n: int) -> None:
        operation, arguments = writes[n]
        barrier.wait()
        try:
            getattr(clients[n], operation)(Bucket=BUCKET, Key=KEY, **arguments)
            wins.append(n)
        except ClientError as exc:
            errors.append(str(exc.response["Error"]["Code"]))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(writes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return len(wins), errors


CONDITIONAL_WRITES = [
    "put If-Match",
    "put If-None-Match",
    "delete If-Match",
    "complete If-None-Match",
]


@pytest.mark.parametrize("case", CONDITIONAL_WRITES)
def test_of_simultaneous_conditional_s3_writes_exactly_one_wins(
    emulator: Emulator, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day's review manifest is rewritten with ``If-Match`` (``If-None-Match`` when it is
    new): two answers holding the same ETag both wrote it, and one answer's line was lost."""
    wins, errors = _race(emulator, case, monkeypatch)
    assert wins == 1
    refusal = "NoSuchKey" if case.startswith("delete") else "PreconditionFailed"
    assert errors == [refusal] * (WRITERS - 1)
    assert concurrency_fixes._key_locks._held == {}  # no lock kept once its writers left


@pytest.mark.parametrize("case", CONDITIONAL_WRITES)
def test_moto_alone_lets_every_conditional_s3_writer_win(
    moto_alone: Emulator, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When this fails, moto's S3 writes are atomic with their conditions: drop the S3
    locks of ``concurrency_fixes``."""
    wins, _ = _race(moto_alone, case, monkeypatch)
    assert wins > 1


def test_a_write_held_on_one_key_holds_up_no_other_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is the key's: uploads and other days' manifests are written meanwhile."""
    original = S3Backend.put_object
    inside, release = threading.Event(), threading.Event()

    def held(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        if key_name == KEY:
            inside.set()
            release.wait(timeout=30)
        return original(self, bucket_name, key_name, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", held)
    slow = threading.Thread(
        target=emulator.client().put_object,
        kwargs={"Bucket": BUCKET, "Key": KEY, "Body": b"x", "IfNoneMatch": "*"},
    )
    slow.start()
    try:
        assert inside.wait(timeout=30)
        other = emulator.client(read_timeout=5)  # held up: ReadTimeoutError
        other.put_object(Bucket=BUCKET, Key="incoming/photo.png", Body=b"y", IfNoneMatch="*")
        other.delete_object(Bucket=BUCKET, Key="incoming/photo.png")
        assert not release.is_set() and slow.is_alive()  # written while KEY was held
    finally:
        release.set()
        slow.join(timeout=30)


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

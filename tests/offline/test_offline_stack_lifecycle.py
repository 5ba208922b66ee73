"""What a stopped stack leaves behind in its process: nothing of the emulator's state.

moto keeps its backends in module globals, so they outlive the server thread. A stack
that did not empty them would keep every object, item and execution history of its run
in memory, and every later garbage collection of the process would walk them.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.s3.models import S3Backend, s3_backends
from moto.stepfunctions.models import stepfunctions_backends

from scones.offline import emulator_snapshot
from scones.offline import stack as stack_module
from scones.offline.client import REGION, offline_session
from scones.offline.executions import running_executions
from scones.offline.model_process import ModelProcess
from scones.offline.records_file import records_document
from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import PROJECT_ROOT

pytestmark = pytest.mark.xdist_group("offline-stack")

DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"


def _emulator_state() -> dict[str, Any]:
    return {
        "buckets": len(s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets),
        "tables": len(dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables),
        "state machines": len(stepfunctions_backends[DEFAULT_ACCOUNT_ID][REGION].state_machines),
    }


def test_a_stopped_stack_leaves_no_emulator_state_behind() -> None:
    """Nor a frozen heap (``scones.heap``): while it runs, what its start built is left
    out of the collector's walks; once it stops, the process collects it as usual."""
    png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
    assert gc.get_freeze_count() == 0
    with OfflineStack(StackOptions()) as stack:
        assert gc.isenabled()
        assert gc.get_freeze_count() > 100_000  # moto, botocore's models, the ASL parser
        api = stack.api()
        records = api.wait_for_records([api.upload_bytes("one.png", png, "image/png")], 120)
        assert [r["status"] for r in records.values()] in (["ACCEPTED"], ["NEEDS_REVIEW"])
        running = _emulator_state()
        assert all(count > 0 for count in running.values()), running
    assert _emulator_state() == dict.fromkeys(running, 0)
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_a_stack_stopped_mid_run_saves_what_ran_and_names_what_did_not(tmp_path: Path) -> None:
    """Stopped while executions run and S3 events wait: the running ones end as they
    would have, before the endpoint and the functions go away (torn down under them they
    wrote FAILED records of the stop's own making), and what has no record is named."""
    pngs = sorted(DATA.glob("*/*.png"))[:5]
    stack = OfflineStack(StackOptions(records_dir=tmp_path, enable_faults=True)).start()
    try:
        api = stack.api()
        machine = {stack.stack.outputs["ClassificationStateMachineArn"]}
        stack.set_faults({"latency_ms": 1500})  # each answer takes 1.5 s
        for number, png in enumerate(pngs[:3]):
            api.upload_bytes(f"running/{number}.png", png.read_bytes(), "image/png")
        sqs, queue = api.client("sqs"), stack.stack.outputs["IngestQueueUrl"]

        def delivering() -> bool:
            """An upload's event waits to be received, or no execution runs yet (a received
            event stays in flight until the start function's Express run ends)."""
            counts = sqs.get_queue_attributes(
                QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return int(counts["ApproximateNumberOfMessages"]) > 0 or not running_executions(machine)

        deadline = time.monotonic() + 60
        while delivering():
            assert time.monotonic() < deadline, "the uploads' executions did not start"
            time.sleep(0.05)
        with stack.delivery_paused():
            queued = [
                api.upload_bytes(f"queued/{number}.png", png.read_bytes(), "image/png")
                for number, png in enumerate(pngs[3:])
            ]
            stack.stop()
    finally:
        stack.stop()
    assert stack.saved_records is not None
    saved = json.loads(stack.saved_records.read_text())
    records = saved["records"]
    # Every upload without a record, in full, where it outlives the stack: the stop's line
    # names only the first five.
    assert saved["unrecorded"] == [
        {"bucket": u.bucket, "key": u.key, "version": u.version_id} for u in queued
    ]
    outcomes = sorted((r["key"].rsplit("/", 2)[-2], r["status"]) for r in records)
    assert [folder for folder, _ in outcomes] == ["running"] * 3
    assert {status for _, status in outcomes} <= {"ACCEPTED", "NEEDS_REVIEW"}, outcomes
    prefix = stack.incoming_prefix
    assert stack.unrecorded == [f"{prefix}queued/0.png", f"{prefix}queued/1.png"]
    assert stack.unfinished == (
        f"2 upload(s) had no record when the stack stopped: {prefix}queued/0.png, "
        f"{prefix}queued/1.png"
    )


def test_uploads_that_could_not_be_listed_at_the_stop_are_null_not_an_empty_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``unrecorded: []`` says every upload has a record; when the stop could not list
    the uploads it cannot say that, and the records file must not either."""
    png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
    stack = OfflineStack(StackOptions(records_dir=tmp_path)).start()
    try:
        api = stack.api()
        with stack.delivery_paused():
            api.upload_bytes("queued/0.png", png, "image/png")

            def unlistable(records: list[dict[str, Any]]) -> list[Any]:
                raise ClientError({"Error": {"Code": "InternalError"}}, "ListObjectVersions")

            monkeypatch.setattr(stack, "_unrecorded_uploads", unlistable)
            stack.stop()
    finally:
        stack.stop()
    assert stack.saved_records is not None
    assert json.loads(stack.saved_records.read_text())["unrecorded"] is None
    assert stack.unrecorded == []
    assert stack.unfinished == (
        "1 S3 event message(s) were still in the ingest queue when the stack stopped: those "
        "uploads may have no record"
    )


def test_the_stop_closes_the_published_endpoint_first_and_names_every_upload_without_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scones down` while a client uploads: the stop counted what had no record, then went
    on acknowledging uploads (200 and a VersionId) until its emulator stopped, and those
    were in neither the records file nor the count. Now the published endpoint answers 503
    from the stop's first step on, while the stack's own clients go on, and every upload
    acknowledged before is either recorded or named."""
    png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
    stack = OfflineStack(StackOptions(records_dir=tmp_path)).start()
    prefix = stack.incoming_prefix
    # A user's client on the published endpoint; one attempt: a 503 is retried otherwise.
    s3 = offline_session().client(
        "s3", endpoint_url=stack.endpoint_url, config=Config(retries={"total_max_attempts": 1})
    )
    acknowledged: list[str] = []
    refusals: list[Exception] = []

    def upload(name: str) -> bool:
        try:
            s3.put_object(Bucket=stack.bucket, Key=prefix + name, Body=png)
        except (ClientError, BotoCoreError) as exc:
            refusals.append(exc)
            return False
        acknowledged.append(prefix + name)
        return True

    def uploader() -> None:  # a client racing the stop, until it is refused
        number = 0
        while upload(f"racing/{number:05d}.png"):
            number += 1

    save = stack_module.save_records

    def save_while_a_client_uploads(*args: Any, **kwargs: Any) -> Path:
        upload("during-the-save.png")  # acknowledged and never mentioned, before
        return save(*args, **kwargs)

    monkeypatch.setattr(stack_module, "save_records", save_while_a_client_uploads)
    racing = threading.Thread(target=uploader)
    try:
        api = stack.api()
        recorded = api.wait_for_records([api.upload_bytes("recorded.png", png, "image/png")], 120)
        with stack.delivery_paused():
            upload("queued.png")  # acknowledged; its S3 event is never delivered
            racing.start()
            deadline = time.monotonic() + 30
            while len(acknowledged) < 7:
                assert time.monotonic() < deadline and racing.is_alive(), refusals
                time.sleep(0.01)
            stack.stop()
    finally:
        stack.stop()
        racing.join(30)
    assert f"{prefix}during-the-save.png" not in acknowledged
    [during, *_] = [exc for exc in refusals if isinstance(exc, ClientError)]
    assert during.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert during.response["Error"] == {
        "Code": "ServiceUnavailable",
        "Message": "the offline stack is stopping",
    }
    assert stack.saved_records is not None
    document = json.loads(stack.saved_records.read_text())
    saved = {r["key"] for r in document["records"]}
    assert saved == {record["key"] for record in recorded.values()}
    assert sorted(acknowledged) == stack.unrecorded
    # The records file names all of them (the line below only the first five).
    assert [u["key"] for u in document["unrecorded"]] == stack.unrecorded
    assert all(u["bucket"] == stack.bucket and u["version"] for u in document["unrecorded"])
    assert stack.unfinished == (
        f"{len(acknowledged)} upload(s) had no record when the stack stopped: "
        + ", ".join(sorted(acknowledged)[:5])
        + f" and {len(acknowledged) - 5} more"
    )


def test_a_stack_whose_start_and_stop_both_fail_raises_the_start_error_and_leaves_no_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start fails late (its baseline cannot be published: the disk is full) and a
    step of the stop on the way down fails too (the model server's): the start's own
    error is the one raised, and the temporary work folder (every function's package and
    log) is removed whatever failed."""
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    stop_model = ModelProcess.stop

    def publish(self: OfflineStack) -> None:
        raise full

    def stop_then_fail(self: ModelProcess) -> None:
        stop_model(self)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(OfflineStack, "_publish_baseline", publish)
    monkeypatch.setattr(ModelProcess, "stop", stop_then_fail)
    stack = OfflineStack(StackOptions())
    try:
        with pytest.raises(OSError) as raised:
            stack.start()
        assert raised.value is full
        assert not stack.work_dir.exists()
        assert not stack_module._ACTIVE.locked()
        assert gc.isenabled()  # off while the start built the heap, on again
        assert gc.get_freeze_count() == 0
    finally:
        monkeypatch.undo()
        stack.stop()  # the steps after the failed one


LIMITED_START = """
import resource, sys
from pathlib import Path
from scones.offline.stack import OfflineStack, StackError, StackOptions

resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
try:
    OfflineStack(StackOptions(model_dir=Path(sys.argv[3]))).start()
except StackError as exc:
    print(exc)
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def start_with_open_file_limits(soft: int, hard: int, tmp_path: Path) -> list[str]:
    """A stack started under these limits (no model: it stops right after the check),
    in a process of its own; what it printed, and the limits it ended with."""
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_START, str(soft), str(hard), str(tmp_path / "no-model")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_the_open_file_soft_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    """A shell's soft limit (often 1024, here 64) is not what the machine allows: out of
    descriptors, moto failed requests and no Lambda worker could start."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    said, limits = start_with_open_file_limits(64, hard, tmp_path)
    assert said.startswith("no model at")  # the start went on past the limit
    assert limits == f"{hard} {hard}"


def test_a_hard_open_file_limit_below_what_the_stack_needs_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    said, limits = start_with_open_file_limits(64, 128, tmp_path)
    assert re.fullmatch(
        r"the open-file limit is 128 \(hard limit; `ulimit -Hn`\), and the offline stack needs "
        r"(\d+): raise it \(`ulimit -n \1` as a user allowed to\) and start again",
        said,
    ), said
    assert limits == "64 128"


def _classify_one(stack: OfflineStack) -> None:
    api = stack.api()
    png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
    api.wait_for_records([api.upload_bytes("classified.png", png, "image/png")], 120)


def _fill_for_the_stop(stack: OfflineStack) -> None:
    """Beside a classified upload, what the stop must account for: items of every
    DynamoDB type, large enough that a Scan takes several pages; an upload with two
    versions, one recorded; uploads without a record, one of them deleted since (a delete
    marker is no upload); an object outside the incoming prefix. Called with delivery
    paused: these uploads' events are never delivered."""
    png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
    ddb, s3 = stack.client("dynamodb"), stack.client("s3")
    bucket, prefix = stack.bucket, stack.incoming_prefix
    first, second = (
        s3.put_object(Bucket=bucket, Key=f"{prefix}twice.png", Body=body)["VersionId"]
        for body in (png, png + b"\0")
    )
    for name in ("unrecorded/a.png", "unrecorded/b.png"):
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=png)
    s3.delete_object(Bucket=bucket, Key=f"{prefix}unrecorded/b.png")
    s3.put_object(Bucket=bucket, Key="elsewhere/c.png", Body=png)
    every_type = {
        "n": {"N": "0.125"},
        "b": {"B": b"\x00\xff"},
        "ss": {"SS": ["x", "y"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "m": {"M": {"p": {"N": "0.5"}, "l": {"L": [{"S": "s"}, {"NULL": True}]}}},
        "t": {"BOOL": True},
        "none": {"NULL": True},
    }
    pks = [f"{bucket}/{prefix}twice.png#{first}"] + [f"other/{n}" for n in range(4)]
    for pk in pks:  # about 1.2 MB: a Scan page holds at most 1 MB
        item = {"pk": {"S": pk}, "padding": {"S": "p" * 300_000}, **every_type}
        ddb.put_item(TableName=stack.table_name, Item=item)
    assert second != first


def _listed_through_the_api(stack: OfflineStack) -> list[dict[str, str]]:
    """Every object version under IncomingPrefix, one ListObjectVersions page per version."""
    pages = (
        stack.client("s3")
        .get_paginator("list_object_versions")
        .paginate(
            Bucket=stack.bucket,
            Prefix=stack.incoming_prefix,
            PaginationConfig={"PageSize": 1},
        )
    )
    return [
        {"bucket": stack.bucket, "key": v["Key"], "version": v["VersionId"]}
        for page in pages
        for v in page.get("Versions", [])
    ]


def _as_saved(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` as a records file holds them (sorted, in JSON)."""
    text = records_document(records, stack_name="", table="", now=datetime.now(UTC))
    return list(json.loads(text)["records"])


def _unrecorded_by_the_api(
    stack: OfflineStack, records: list[dict[str, Any]]
) -> list[dict[str, str]]:
    recorded = {record["pk"] for record in records}
    return [
        upload
        for upload in _listed_through_the_api(stack)
        if f"{upload['bucket']}/{upload['key']}#{upload['version']}" not in recorded
    ]


def test_the_stop_saves_the_tables_content_without_scanning_it_through_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop read the table with a paged Scan and listed the uploads with paged
    ListObjectVersions through moto's API: minutes for 12,000 records. It now reads
    moto's backends in this process; the records file is still exactly what the API
    returns (every attribute type, over several Scan pages), and the unrecorded uploads
    are the API's object versions without a record, in its order. Should moto's internals
    change, this fails: the stop then falls back to the API (the test below)."""
    stack = OfflineStack(StackOptions(records_dir=tmp_path)).start()
    scans: list[str] = []
    listings: list[str] = []
    try:
        _classify_one(stack)
        with stack.delivery_paused():
            _fill_for_the_stop(stack)
            ddb = stack.client("dynamodb")
            assert "LastEvaluatedKey" in ddb.scan(TableName=stack.table_name)  # several pages
            expected = stack._own_api().records()
            unrecorded = _unrecorded_by_the_api(stack, expected)
            names = [u["key"].rpartition("/")[2] for u in unrecorded]
            assert names == ["twice.png", "a.png", "b.png"]
            scan, listing = DynamoDBBackend.scan, S3Backend.list_object_versions

            def counted_scan(*args: Any, **kwargs: Any) -> Any:
                scans.append(str(args[1]))
                return scan(*args, **kwargs)

            def counted_listing(*args: Any, **kwargs: Any) -> Any:
                listings.append(str(args[1]))
                return listing(*args, **kwargs)

            monkeypatch.setattr(DynamoDBBackend, "scan", counted_scan)
            monkeypatch.setattr(S3Backend, "list_object_versions", counted_listing)
            stack.stop()
    finally:
        stack.stop()
    assert (scans, listings) == ([], [])
    assert stack.saved_records is not None
    document = json.loads(stack.saved_records.read_text())
    assert document["count"] == len(expected) == 6
    assert document["records"] == _as_saved(expected)
    assert document["unrecorded"] == unrecorded == stack.unrecorded_uploads


def test_a_stop_that_cannot_read_the_emulator_directly_saves_the_same_through_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's internals changed: the stop reads the table and lists the uploads through
    the API instead, and saves the same."""
    stack = OfflineStack(StackOptions(records_dir=tmp_path)).start()
    try:
        _classify_one(stack)
        with stack.delivery_paused():
            _fill_for_the_stop(stack)
            expected = stack._own_api().records()
            unrecorded = _unrecorded_by_the_api(stack, expected)

            def changed(*args: Any) -> Any:
                raise AttributeError("'Table' object has no attribute 'all_items'")

            monkeypatch.setattr(emulator_snapshot, "table_records", changed)
            monkeypatch.setattr(emulator_snapshot, "object_versions", changed)
            stack.stop()
    finally:
        stack.stop()
    assert stack.saved_records is not None
    document = json.loads(stack.saved_records.read_text())
    assert document["records"] == _as_saved(expected)
    assert document["unrecorded"] == unrecorded == stack.unrecorded_uploads
    assert stack.save_error is None

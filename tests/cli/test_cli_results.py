"""``scones results`` on a deployed stack: the records its outputs name, read by status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws
from scones_core.records import Status

from scones.cli.main import main
from tests.monitoring.conftest import create_table_as_declared

REGION = "us-east-1"
TABLE = "scones-results"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Stack:
    def __init__(self) -> None:
        self.ddb = boto3.client("dynamodb", region_name=REGION)
        create_table_as_declared(self.ddb, "ResultsTable", TABLE)
        self.cloudformation = boto3.client("cloudformation", region_name=REGION)
        template = {
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {
                "ResultsTableName": {"Value": TABLE},
                "IncomingPrefix": {"Value": "incoming/"},
            },
        }
        self.cloudformation.create_stack(StackName="scones", TemplateBody=json.dumps(template))
        self.operations: list[str] = []
        # Ages count from the test's own start: `scones results` counts its relative
        # bounds (--since 2h) from the time it runs, moments later.
        self.now = datetime.now(UTC)

    def record(self, name: str, status: Status, age: timedelta, label: str = "bicycle") -> None:
        item: dict[str, Any] = {
            "pk": {"S": f"scones-images#incoming/{name}#v1"},
            "bucket": {"S": "scones-images"},
            "key": {"S": f"incoming/{name}"},
            "status": {"S": status.value},
            "recorded_at": {"S": stamp(self.now - age)},
        }
        if status in (Status.ACCEPTED, Status.NEEDS_REVIEW):
            item["label"] = {"S": label}
            item["confidence"] = {"N": "0.97" if status is Status.ACCEPTED else "0.6"}
        if status in (Status.REJECTED, Status.FAILED):
            item["error_code"] = {"S": "NotAnImage" if status is Status.REJECTED else "Throttled"}
            item["reason"] = {"S": "the upload is not an image"}
        self.ddb.put_item(TableName=TABLE, Item=item)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        stack = Stack()
        make_api_call = BaseClient._make_api_call

        def seen(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            stack.operations.append(operation)
            return make_api_call(client, operation, params)

        # Every client the command makes for itself, in its own session.
        monkeypatch.setattr(BaseClient, "_make_api_call", seen)
        yield stack


def scones(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own exits
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def keys(out: str) -> list[str]:
    return [r["key"] for r in json.loads(out)]


def test_a_deployed_stacks_last_day_of_records_by_default(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.record("old.png", Status.ACCEPTED, timedelta(days=3))
    stack.record("a.png", Status.ACCEPTED, timedelta(hours=5))
    stack.record("b.png", Status.NEEDS_REVIEW, timedelta(hours=4))
    stack.record("c.txt", Status.REJECTED, timedelta(hours=3))
    stack.record("d.png", Status.FAILED, timedelta(hours=2))
    where = ["--stack", "scones", "--region", REGION]

    code, out, err = scones(capsys, "results", *where, "--json")
    assert code == 0, err
    # Oldest first across every status; three days ago is outside the default day.
    assert keys(out) == ["incoming/a.png", "incoming/b.png", "incoming/c.txt", "incoming/d.png"]

    code, out, err = scones(capsys, "results", *where, "--since", "4d", "--json")
    assert code == 0, err
    assert keys(out)[0] == "incoming/old.png" and len(keys(out)) == 5
    code, out, err = scones(capsys, "results", *where, "--status", "FAILED", "--json")
    assert keys(out) == ["incoming/d.png"]
    code, out, err = scones(capsys, "results", *where, "--until", "210m", "--json")
    assert code == 0, err
    assert keys(out) == ["incoming/a.png", "incoming/b.png"]
    # --until alone reads the day before it; within a day of the year 1, all before it.
    code, out, err = scones(capsys, "results", *where, "--until", "60h", "--json")
    assert code == 0, err
    assert keys(out) == ["incoming/old.png"]
    code, out, err = scones(capsys, "results", *where, "--until", "0001-01-01T06:00:00Z")
    assert code == 0, err
    assert "0 uploads" in out
    code, out, err = scones(capsys, "results", *where, "--prefix", "incoming/c", "--json")
    assert keys(out) == ["incoming/c.txt"]
    # As the table shows the key: without the incoming prefix.
    code, out, err = scones(capsys, "results", *where, "--prefix", "c", "--json")
    assert keys(out) == ["incoming/c.txt"]
    assert "Query" in stack.operations
    assert "Scan" not in stack.operations, "records are read through the status index"

    code, out, err = scones(capsys, "results", *where)
    assert code == 0, err
    assert "Results of stack scones since" in out
    # Keys are shown without the stack's IncomingPrefix, and the summary counts them.
    assert "a.png" in out and "incoming/a.png" not in out
    assert "4 uploads:" in out and "FAILED 1" in out


def test_a_table_named_directly_needs_no_stack(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.record("a.png", Status.ACCEPTED, timedelta(minutes=5))
    code, out, err = scones(capsys, "results", "--table", TABLE, "--region", REGION, "--json")
    assert code == 0, err
    assert keys(out) == ["incoming/a.png"]


def put_accepted(
    stack: Stack, name: str, recorded_at: str, attributes: dict[str, Any] | None = None
) -> None:
    """An ACCEPTED record of ``incoming/<name>`` written straight into the table (with
    ``attributes`` over the layout's)."""
    stack.ddb.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": f"scones-images#incoming/{name}#v1"},
            "bucket": {"S": "scones-images"},
            "key": {"S": f"incoming/{name}"},
            "status": {"S": "ACCEPTED"},
            "recorded_at": {"S": recorded_at},
            "label": {"S": "bicycle"},
            "confidence": {"N": "0.97"},
            **(attributes or {}),
        },
    )


def test_records_not_as_the_stack_writes_them_are_named_and_counted_not_a_traceback(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items written by hand, by another tool or by an older stack: the good records are
    shown as ever (--json: valid JSON, an attribute of another tool's in base64), and each
    other one is named once with what is wrong (on stderr with --json)."""
    stack.record("good.png", Status.NEEDS_REVIEW, timedelta(hours=3))
    stack.ddb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "scones-images#incoming/good.png#v1"}},
        UpdateExpression="SET thumbnail = :b",
        ExpressionAttributeValues={":b": {"B": b"\x89PNG"}},
    )
    hour = stamp(stack.now - timedelta(hours=1))
    foreign: dict[str, dict[str, Any]] = {
        "text.png": {"confidence": {"S": "high"}, "label": {"N": "3"}},
        "bytes.png": {"reason": {"B": b"\x00\xff"}},
        "odd.png": {"probabilities": {"M": {"bicycle": {"S": "most"}}}},
        "when.png": {"recorded_at": {"S": "yesterday"}},
    }
    for name, attributes in foreign.items():
        put_accepted(stack, name, hour, attributes)
    # Only the keys of the table and of its status index.
    bare = {"pk": {"S": "scones-images#incoming/bare.png#v1"}, "status": {"S": "NEEDS_REVIEW"}}
    stack.ddb.put_item(TableName=TABLE, Item={**bare, "recorded_at": {"S": hour}})
    where = ["--stack", "scones", "--region", REGION, "--since", "1d"]

    code, out, err = scones(capsys, "results", *where, "--json")
    assert code == 0 and "Traceback" not in err, err
    (good,) = json.loads(out)
    assert good["key"] == "incoming/good.png" and good["thumbnail"] == "iVBORw=="
    unreadable = [
        # A time that is none sorts first; it is named, not dropped by --since.
        {
            "pk": "scones-images#incoming/when.png#v1",
            "problems": ["recorded_at: 'yesterday' is not an ISO 8601 timestamp"],
        },
        {
            "pk": "scones-images#incoming/bare.png#v1",
            "problems": ["no bucket", "no key", "no label", "no confidence"],
        },
        {
            "pk": "scones-images#incoming/bytes.png#v1",
            "problems": ["reason is binary, not a string"],
        },
        {
            "pk": "scones-images#incoming/odd.png#v1",
            "problems": ["probabilities holds more than numbers"],
        },
        {
            "pk": "scones-images#incoming/text.png#v1",
            "problems": ["confidence is a string, not a number", "label is a number, not a string"],
        },
    ]

    for shown in (err, scones(capsys, "results", *where)[1]):
        lines = shown.splitlines()
        for bad in unreadable:
            named = [line for line in lines if bad["pk"] in line]
            assert named == [f"unreadable record {bad['pk']}: {'; '.join(bad['problems'])}"]
        assert "5 unreadable record(s) left out" in shown
    code, out, err = scones(capsys, "results", *where)
    assert code == 0 and "Traceback" not in err, err
    assert "good.png" in out and "1 uploads:" in out


def test_what_cannot_be_read_is_named(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
    stack.cloudformation.create_stack(StackName="bare", TemplateBody=json.dumps(template))
    code, _, err = scones(capsys, "results", "--stack", "bare", "--region", REGION)
    assert code == 1 and "stack bare has no output ResultsTableName" in err

    code, _, err = scones(capsys, "results", "--stack", "missing", "--region", REGION)
    assert code == 1 and "cannot read stack 'missing' in us-east-1: " in err
    assert "(another region: --region)" in err

    code, _, err = scones(capsys, "results", "--table", "nope", "--region", REGION)
    assert code == 1 and "cannot read the results table 'nope'" in err

    code, _, err = scones(
        capsys, "results", "--table", TABLE, "--since", "1h", "--until", "2h", "--region", REGION
    )
    assert code == 2 and "--since" in err and "must be before --until" in err

    code, _, err = scones(capsys, "results", "--endpoint-url", "http://127.0.0.1:1")
    assert code == 2 and "add --stack NAME or --table NAME" in err

    code, _, err = scones(capsys, "results", "--table", TABLE, "--since", "yesterday")
    assert code == 2 and "or give an age such as 30m, 2h or 1d" in err
    assert "Traceback" not in err


def test_a_whole_second_record_is_ordered_and_bounded_by_its_time(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step Functions writes 10:00:00.000 as ``10:00:00Z``, which sorts after
    ``10:00:00.500Z`` as a string: the order and the bounds follow the time written."""
    second = stack.now.replace(microsecond=0) - timedelta(hours=1)
    for name, text in (
        ("first.png", second.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("second.png", stamp(second + timedelta(milliseconds=500))),
        ("third.png", stamp(second + timedelta(milliseconds=1200))),
    ):
        put_accepted(stack, name, text)
    where = ["--stack", "scones", "--region", REGION, "--json"]
    code, out, err = scones(capsys, "results", *where)
    assert code == 0, err
    assert keys(out) == ["incoming/first.png", "incoming/second.png", "incoming/third.png"]

    def iso(moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    within = second + timedelta(milliseconds=600)
    code, out, err = scones(capsys, "results", *where, "--until", iso(within))
    assert keys(out) == ["incoming/first.png", "incoming/second.png"], err
    within = second + timedelta(milliseconds=400)
    code, out, err = scones(capsys, "results", *where, "--since", iso(within))
    assert keys(out) == ["incoming/second.png", "incoming/third.png"], err


def test_bounds_at_the_ends_of_the_calendar_read_without_an_error(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """The query reads a second past each bound; at year 1 or 9999 there is none."""
    stack.record("a.png", Status.ACCEPTED, timedelta(minutes=5))
    where = ["--stack", "scones", "--region", REGION, "--json"]
    code, out, err = scones(capsys, "results", *where, "--since", "0001-01-01T00:00:00Z")
    assert code == 0, err
    assert keys(out) == ["incoming/a.png"]
    code, out, err = scones(capsys, "results", *where, "--until", "9999-12-31T23:59:59.5Z")
    assert code == 0, err

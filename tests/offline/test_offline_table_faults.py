"""The offline stack's DynamoDB write faults, on raw moto (in-process, no stack)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from scones.offline.table_faults import THROTTLED_MESSAGE, TableWriteFaults


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    faults = TableWriteFaults()
    faults.install()
    try:
        with mock_aws():
            # One attempt per call: botocore itself retries throttling (as the state
            # machine's service integration, which the hook is for, does not).
            ddb = boto3.client(
                "dynamodb",
                region_name="us-east-1",
                config=Config(retries={"total_max_attempts": 1}),
            )
            ddb.create_table(
                TableName="results",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            yield ddb, faults
    finally:
        TableWriteFaults.uninstall()


def put(ddb: Any, pk: str) -> None:
    ddb.put_item(
        TableName="results",
        Item={"pk": {"S": pk}},
        ConditionExpression="attribute_not_exists(pk)",
    )


def test_the_next_n_matching_writes_are_throttled_as_dynamodb_does(table: Any) -> None:
    ddb, faults = table
    faults.throttle(2, "images/incoming/a.png#")
    put(ddb, "images/incoming/b.png#v1")  # another object is not affected
    for _ in range(2):
        with pytest.raises(ClientError) as raised:
            put(ddb, "images/incoming/a.png#v1")
        error = raised.value.response
        assert error["Error"]["Code"] == "ProvisionedThroughputExceededException"
        assert error["Error"]["Message"] == THROTTLED_MESSAGE
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    put(ddb, "images/incoming/a.png#v1")
    assert (faults.throttled, faults.remaining()) == (2, 0)
    assert ddb.scan(TableName="results")["Count"] == 2


def test_uninstall_restores_moto() -> None:
    original = DynamoDBBackend.put_item
    faults = TableWriteFaults()
    faults.install()
    assert DynamoDBBackend.put_item is not original
    TableWriteFaults.uninstall()
    assert DynamoDBBackend.put_item is original


def test_moto_put_item_still_takes_table_name_and_item_first() -> None:
    """The hook wraps this signature; a moto upgrade that changes it must fail here."""
    parameters = list(inspect.signature(DynamoDBBackend.put_item).parameters)
    assert parameters[:3] == ["self", "table_name", "item_attrs"]

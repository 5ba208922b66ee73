"""The read-fault injector refuses what a policy denying s3:GetObject refuses, and no more."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from scones.offline.object_faults import ObjectReadFaults

BUCKET = "read-faults"


@pytest.fixture
def s3() -> Iterator[Any]:
    faults = ObjectReadFaults()
    faults.install()
    try:
        with mock_aws():
            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="denied.png", Body=b"x")
            client.put_object(Bucket=BUCKET, Key="other.png", Body=b"y")
            faults.deny(BUCKET, ["denied.png"])
            yield client
    finally:
        ObjectReadFaults.uninstall()


def test_reads_of_an_armed_key_are_refused_and_nothing_else_is(s3: Any) -> None:
    client = s3
    for read in (client.head_object, client.get_object):
        with pytest.raises(ClientError) as refused:
            read(Bucket=BUCKET, Key="denied.png")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert client.get_object(Bucket=BUCKET, Key="other.png")["Body"].read() == b"y"
    listed = client.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert {o["Key"] for o in listed} == {"denied.png", "other.png"}
    # A conditional write and a copy onto the key read it inside moto: not refused.
    client.copy_object(
        Bucket=BUCKET, Key="denied.png", CopySource={"Bucket": BUCKET, "Key": "other.png"}
    )
    with pytest.raises(ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=BUCKET, Key="denied.png", Body=b"z", IfNoneMatch="*")

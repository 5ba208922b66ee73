"""A bucket in moto's S3, for tests that read and write objects without a stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws


@contextmanager
def moto_bucket(name: str) -> Iterator[Any]:
    """An S3 client of moto's, with the bucket ``name`` created."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=name)
        yield client

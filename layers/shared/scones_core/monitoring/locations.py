"""``s3://bucket/prefix`` URIs and the S3 reads the monitor needs.

The clients are injected (a boto3 S3 client or anything with the same methods),
so tests run these functions against moto. A read or listing that fails raises
``S3ReadError`` naming the ``s3://`` location: botocore's own message names only the
operation, which leaves a person with one bucket of many objects to search.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scones_core.errors import SconesError
from scones_core.objects import object_missing


class S3ReadError(SconesError):
    """An S3 read or listing failed; the message names the ``s3://`` location."""

    @classmethod
    def of(cls, uri: str, exc: Exception, action: str = "read") -> S3ReadError:
        return cls(f"cannot {action} {uri}: {exc}")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key or key prefix, parsed from an ``s3://`` URI."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse ``s3://bucket[/key]``; raises ``ValueError`` naming the URI."""
        text = uri.strip()
        if not text.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket, _, key = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket")
        return cls(bucket=bucket, key=key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, *parts: str) -> S3Location:
        """This location joined with ``parts``, with exactly one ``/`` between each."""
        segments = [self.key.strip("/"), *(part.strip("/") for part in parts)]
        return S3Location(self.bucket, "/".join(segment for segment in segments if segment))

    def as_prefix(self) -> str:
        """The key as a folder prefix: ends with ``/`` unless it is the whole bucket."""
        key = self.key.strip("/")
        return f"{key}/" if key else ""


@dataclass(frozen=True)
class S3Object:
    key: str
    last_modified: datetime
    size: int


def list_objects(
    s3: Any, bucket: str, prefix: str, *, start_after: str | None = None
) -> Iterator[S3Object]:
    """Every object under ``prefix`` (keys after ``start_after``, when given), across all
    pages of ``ListObjectsV2``."""
    paginator = s3.get_paginator("list_objects_v2")
    request = {"Bucket": bucket, "Prefix": prefix}
    if start_after is not None:
        request["StartAfter"] = start_after
    try:
        for page in paginator.paginate(**request):
            for item in page.get("Contents", []):
                yield S3Object(
                    key=item["Key"], last_modified=item["LastModified"], size=int(item["Size"])
                )
    except (ClientError, BotoCoreError) as exc:
        raise S3ReadError.of(f"s3://{bucket}/{prefix}", exc, "list") from exc


def list_folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The ``prefix/<name>/`` folders directly under ``prefix`` (``ListObjectsV2`` with a
    ``/`` delimiter), across all pages."""
    paginator = s3.get_paginator("list_objects_v2")
    try:
        return [
            common["Prefix"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for common in page.get("CommonPrefixes", [])
        ]
    except (ClientError, BotoCoreError) as exc:
        raise S3ReadError.of(f"s3://{bucket}/{prefix}", exc, "list") from exc


def first_key_after(s3: Any, bucket: str, prefix: str, start_after: str) -> str | None:
    """The first key under ``prefix`` that sorts after ``start_after`` (one listing of one
    key), or ``None``."""
    try:
        response = s3.list_objects_v2(
            Bucket=bucket, Prefix=prefix, StartAfter=start_after, MaxKeys=1
        )
    except (ClientError, BotoCoreError) as exc:
        raise S3ReadError.of(f"s3://{bucket}/{prefix}", exc, "list") from exc
    contents = response.get("Contents", [])
    return str(contents[0]["Key"]) if contents else None


def read_object(s3: Any, bucket: str, key: str) -> bytes:
    """The object's bytes. botocore's errors propagate; see ``read_optional_object``."""
    response = s3.get_object(Bucket=bucket, Key=key)
    body: bytes = response["Body"].read()
    return body


def open_optional_object(s3: Any, bucket: str, key: str) -> Any | None:
    """The object's streaming body, or ``None`` when the key does not exist.

    A missing bucket or a permission error is a configuration problem and is
    raised (``S3ReadError`` naming the object), so a misconfigured stack fails loudly
    instead of looking healthy.
    """
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if object_missing(exc):
            return None
        raise S3ReadError.of(f"s3://{bucket}/{key}", exc) from exc
    except BotoCoreError as exc:
        raise S3ReadError.of(f"s3://{bucket}/{key}", exc) from exc


def read_optional_object(s3: Any, location: S3Location) -> bytes | None:
    """The object's bytes, or ``None`` when the key does not exist; errors as
    ``open_optional_object``, and a read that breaks off is an ``S3ReadError`` too."""
    body = open_optional_object(s3, location.bucket, location.key)
    if body is None:
        return None
    try:
        data: bytes = body.read()
    except BotoCoreError as exc:
        raise S3ReadError.of(location.uri, exc) from exc
    finally:
        body.close()
    return data

"""S3 locations as SageMaker requests use them: parsing, joining and uploading folders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scones_core.objects import is_bucket_name

from scones.sagemaker.errors import LaunchError

CONTENT_TYPES = {".png": "image/png", ".lst": "text/plain", ".gz": "application/gzip"}


class S3UriError(LaunchError):
    """A string that should be an ``s3://bucket/prefix`` URI is not one."""


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key``; ``key`` has no leading or trailing slash."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise S3UriError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not is_bucket_name(bucket):
            raise S3UriError(f"invalid S3 bucket name {bucket!r} in {uri!r}")
        key = key.strip("/")
        if "//" in key or any(part in {".", ".."} for part in key.split("/")):
            raise S3UriError(f"invalid S3 key {key!r} in {uri!r}")
        return cls(bucket, key)

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def prefix_uri(self) -> str:
        """The URI with a trailing slash, as SageMaker's ``S3Prefix`` data sources expect."""
        return f"{self}/"


def _files(directory: Path) -> Iterator[Path]:
    yield from sorted(p for p in directory.rglob("*") if p.is_file())


def upload_file(s3_client: Any, path: Path, target: S3Uri) -> S3Uri:
    """Upload one file with a content type taken from its suffix."""
    extra = {"ContentType": CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")}
    s3_client.upload_file(str(path), target.bucket, target.key, ExtraArgs=extra)
    return target


def upload_directory(s3_client: Any, directory: Path, target: S3Uri) -> int:
    """Upload every file below ``directory`` to ``target``, keeping relative paths; the count."""
    count = 0
    for path in _files(directory):
        upload_file(s3_client, path, target.join(path.relative_to(directory).as_posix()))
        count += 1
    return count

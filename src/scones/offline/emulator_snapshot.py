"""What a stopping stack saves, read from moto's backends in this process, not its API.

Through the API the stop's save grew with the table far beyond the time ``scones down``
waits: every Scan page goes through moto's generic response serializer (about a
millisecond per record), and every ListObjectVersions page deep-copies each object of
the bucket, its bytes included (one whole copy per 1,000 uploads). 12,000 records took
about two minutes. The stack's moto runs in this process, so its stop reads the same
items and object versions from the backends directly: the records are the ones a Scan
returns (a test compares them), in a fraction of a second.

moto's backends are not an API: a test fails when the attributes read here change, and
the stop then reads through the API again (``OfflineStack``), slower but whole.
"""

from __future__ import annotations

from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.utils import unix_time_millis
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.utilities import dynamo_to_dict
from moto.s3.models import FakeKey, s3_backends
from scones_core.objects import NULL_VERSION, ObjectRef
from scones_core.records import record_from_item

from scones.offline import concurrency_fixes


def table_records(table_name: str, region: str) -> list[dict[str, Any]]:
    """Every item of the table, as ``StackClient.records()`` returns it from a Scan.

    Read while no write runs (``concurrency_fixes``' lock, which DynamoDB's writes take in
    the stack): an UpdateItem changes its item in place."""
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_table(table_name)
    with concurrency_fixes.writes_held():
        # dynamo_to_dict: the low-level shape moto's serializer sends (binary as bytes).
        items = [dynamo_to_dict(item.attrs) for item in table.all_items()]
    return [record_from_item(item) for item in items]


def object_versions(bucket_name: str, prefix: str) -> list[ObjectRef]:
    """Every object version under ``prefix``, delete markers left out, as
    ListObjectVersions names them (its ``Versions``)."""
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_bucket(bucket_name)
    # iterlists() walks a copy of the keys: an object written meanwhile does not break it.
    versions = [
        version
        for name, listed in bucket.keys.iterlists()
        if name.startswith(prefix)
        for version in list(listed)
        if isinstance(version, FakeKey)
    ]
    # In the API's order: by key, the newest first (moto's own sort, stable from the
    # oldest first, as it keeps them).
    versions.sort(key=lambda v: (v.name, -unix_time_millis(v.last_modified)))
    return [
        ObjectRef(
            bucket_name,
            version.name,
            version.version_id or NULL_VERSION,
            version.etag.strip('"'),
            int(version.size),
        )
        for version in versions
    ]

"""A narrow correction to moto's S3 event notifications, where they differ from AWS.

* On a versioning-enabled bucket, AWS puts the new object's ``versionId`` in
  ``Records[].s3.object`` of every notification. moto 5.2.5 leaves it out even
  when ``PutObject`` answered with a ``VersionId``, so every object would be
  identified by its ETag offline and an overwrite of a key with the same bytes
  would look like a duplicate delivery. The fix adds ``versionId`` from the
  stored key. A test checks that moto still leaves it out, so an upgrade that
  fixes moto also removes this module.
"""

from __future__ import annotations

from typing import Any

from moto.s3 import notifications

_ORIGINAL_EVENT = notifications._get_s3_event


def _event_with_version_id(
    event_name: str, bucket: Any, key: Any, notification_id: str
) -> dict[str, list[dict[str, Any]]]:
    event = _ORIGINAL_EVENT(event_name, bucket, key, notification_id)
    version = getattr(key, "version_id", None)
    # An unversioned bucket's keys have no version id (S3 calls that "null"): AWS sends none.
    if version and version != "null":
        for record in event.get("Records", []):
            record["s3"]["object"].setdefault("versionId", str(version))
    return event


def install() -> None:
    notifications._get_s3_event = _event_with_version_id


def uninstall() -> None:
    notifications._get_s3_event = _ORIGINAL_EVENT

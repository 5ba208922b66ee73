"""Talk to a running offline stack (or any deployment of the template) with boto3.

Only endpoint URLs and resource names are needed, so the same code serves the
in-process stack of ``scones run`` and a stack that ``scones up`` keeps
running in another process.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from scones_core.objects import NULL_VERSION, ObjectRef
from scones_core.records import PARTITION_KEY, is_terminal, record_from_item

from scones.no_proxy import no_proxy_variables, reach_loopback_directly
from scones.offline.moto_guard import STOPPING
from scones.safe_files import read_regular_file

REGION = "us-east-1"
# Placeholder credentials: the emulator accepts any.
OFFLINE_CREDENTIAL = "offline"


def offline_session(region: str = REGION) -> boto3.Session:
    """A boto3 session for the offline stack: the emulator accepts any credentials, and
    is on loopback, reached directly whatever proxy the environment names (a script
    using ``StackClient`` too, not only ``scones`` and the stack)."""
    reach_loopback_directly()
    return boto3.Session(
        botocore_session=botocore.session.Session(session_vars=_NO_USER_CONFIGURATION),
        region_name=region,
        aws_access_key_id=OFFLINE_CREDENTIAL,
        aws_secret_access_key=OFFLINE_CREDENTIAL,
    )


# Every setting botocore reads from the environment or a user's AWS config files
# (AWS_PROFILE, AWS_MAX_ATTEMPTS, AWS_RETRY_MODE, AWS_DEFAULTS_MODE, ~/.aws/config, ...),
# read from neither: the emulator wants none of them, and a profile that does not exist,
# or AWS_MAX_ATTEMPTS=abc, failed the offline run.
_NO_USER_CONFIGURATION = {
    name: (config_name, None, default, convert)
    for name, (config_name, _, default, convert) in BOTOCORE_DEFAUT_SESSION_VARIABLES.items()
} | {
    "config_file": (None, None, os.devnull, None),
    "credentials_file": (None, None, os.devnull, None),
}


class StackClientError(RuntimeError):
    """A request to the stack failed or timed out; the message says which."""


def stack_stopped(exc: BaseException) -> bool:
    """Whether a call failed because the offline stack stopped: while it stops its
    endpoint answers 503 "the offline stack is stopping" (``moto_guard.StackDoor``), and
    once it has stopped nothing listens there."""
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return error.get("Code") == "ServiceUnavailable" and error.get("Message") == STOPPING
    return False


@dataclass(frozen=True)
class StackEndpoints:
    """Everything a client needs to know; ``scones up`` writes it to a state file."""

    endpoint_url: str
    model_url: str
    bucket: str
    incoming_prefix: str
    table: str
    state_machine_arn: str
    dead_letter_queue_url: str
    monitor_function: str
    region: str = REGION

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def aws_environment(self) -> dict[str, str]:
        """The variables that make the AWS CLI, boto3 and the SDKs reach this stack.

        The emulator accepts any credentials; the placeholders only keep the SDKs from
        looking for real ones. When this environment names a proxy, ``NO_PROXY`` (or
        ``no_proxy``) gains the loopback names after its own entries, or the SDKs would
        send their calls to the proxy, which cannot reach this machine's stack.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.model_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": OFFLINE_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": OFFLINE_CREDENTIAL,
            **no_proxy_variables(os.environ),
        }


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    etag: str
    source: str
    # The S3 version id on a versioned bucket (as the stack's is), else "".
    version_id: str = ""


_BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem limit
# How many awaited records one poll reads. The wait runs in the stack's own process (the
# emulator's server is a thread of it): reading every awaited record at each poll took
# 0.25 s of its CPU at 5,000 uploads, every 0.2 s, and the burst it measured slowed down.
POLL_RECORDS = 300


def _missing(
    uploads: list[Upload], found: dict[Upload, dict[str, Any]], why: str
) -> StackClientError:
    """The end of a wait for records that did not all come: how many, why, the first keys."""
    missing = [u.key for u in uploads if u not in found]
    return StackClientError(
        f"{len(missing)} upload(s) have no record, {why}: "
        + ", ".join(missing[:5])
        + (" ..." if len(missing) > 5 else "")
    )


def record_id(upload: Upload) -> str:
    """The results table's key for an upload's record (``ObjectRef.record_id``)."""
    version = upload.version_id or NULL_VERSION
    return ObjectRef(upload.bucket, upload.key, version, upload.etag, 0).record_id


class StackClient:
    def __init__(self, endpoints: StackEndpoints) -> None:
        self.endpoints = endpoints
        self._session = offline_session(endpoints.region)
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            endpoint = (
                self.endpoints.model_url
                if service == "sagemaker-runtime"
                else self.endpoints.endpoint_url
            )
            self._clients[service] = self._session.client(service, endpoint_url=endpoint)
        return self._clients[service]

    # -- uploads ----------------------------------------------------------------
    def upload_bytes(self, name: str, data: bytes, content_type: str | None = None) -> Upload:
        prefix = self.endpoints.incoming_prefix
        key = name if name.startswith(prefix) else prefix + name
        extra = {"ContentType": content_type} if content_type else {}
        response = self.client("s3").put_object(
            Bucket=self.endpoints.bucket, Key=key, Body=data, **extra
        )
        return Upload(
            self.endpoints.bucket,
            key,
            response["ETag"].strip('"'),
            name,
            version_id=str(response.get("VersionId") or ""),
        )

    def upload_file(self, path: Path, name: str) -> Upload:
        """Upload a local file as ``name`` under the incoming prefix; ``OSError`` if unreadable."""
        content_type = mimetypes.guess_type(path.name)[0]
        upload = self.upload_bytes(name, read_regular_file(path), content_type)
        return replace(upload, source=str(path))

    def upload_files(self, paths: Iterable[Path], key_prefix: str = "") -> list[Upload]:
        return [self.upload_file(path, f"{key_prefix}{path.name}") for path in paths]

    # -- records ----------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every item of the results table, as plain Python values."""
        ddb = self.client("dynamodb")
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.endpoints.table}
        while True:
            page = ddb.scan(**kwargs)
            for raw in page.get("Items", []):
                items.append(record_from_item(raw))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def wait_for_records(
        self,
        uploads: list[Upload],
        timeout: float = 120.0,
        on_progress: Callable[[int, int], None] | None = None,
        poll_seconds: float = 0.2,
        in_flight: Callable[[], bool] | None = None,
    ) -> dict[Upload, dict[str, Any]]:
        """Block until every upload has its terminal record; return them by upload.

        An upload to a versioned bucket is its version's record (two uploads of the same
        bytes to one key are two records), otherwise its ETag's. Each poll reads, by key,
        at most ``POLL_RECORDS`` of the records still awaited, the next ones in turn (a
        sweep reads them all once): the time to wait for N uploads does not grow with the
        records already in the table, and a poll's load on the stack does not grow with N.
        ``timeout`` is how long the wait goes on without a new record: a backlog of
        thousands drains for as long as it keeps draining, and a stalled one is named. With
        ``in_flight`` (is anything still on its way to a record?), it ends sooner: once two
        sweeps in a row found nothing in flight before they read and no new record, no
        record can still come for what is missing.
        """
        deadline = time.monotonic() + timeout
        found: dict[Upload, dict[str, Any]] = {}
        idle_sweeps, sweep_idle, sweep_found = 0, False, 0
        sweep: list[Upload] = []  # what the current sweep reads, POLL_RECORDS a poll
        read = 0
        while True:
            if read >= len(sweep):
                # A sweep starts. Asked before its reads: whatever was in flight then is
                # recorded by the time the sweep reads it.
                sweep, read, sweep_found = [u for u in uploads if u not in found], 0, len(found)
                sweep_idle = in_flight is not None and not in_flight()
            window = sweep[read : read + POLL_RECORDS]
            read += len(window)
            records = self._records_by_id({record_id(u) for u in window})
            before = len(found)
            for upload in window:
                record = records.get(record_id(upload))
                if record is not None and is_terminal(record):
                    found[upload] = record
            if on_progress:
                on_progress(len(found), len(uploads))
            if len(found) == len(uploads):
                return found
            if len(found) > before:  # still making progress: a burst of any size may finish
                deadline = time.monotonic() + timeout
            if read >= len(sweep):  # the sweep has read them all
                idle_sweeps = idle_sweeps + 1 if sweep_idle and len(found) == sweep_found else 0
            if idle_sweeps >= 2:
                raise _missing(uploads, found, "and nothing is in flight that could record them")
            if time.monotonic() > deadline:
                raise _missing(uploads, found, f"and no record came in the last {timeout:g} s")
            if len(found) - before < len(window):
                # A window read whole is behind the workflow: the next is read at once, so
                # a finished backlog of thousands is collected in one pass, not one window
                # per poll.
                time.sleep(poll_seconds)

    def _records_by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The items of ``ids`` that exist, by record id (BatchGetItem, 100 keys a call)."""
        ddb = self.client("dynamodb")
        table = self.endpoints.table
        wanted = sorted(ids)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _BATCH_GET_KEYS):
            request: dict[str, Any] = {
                table: {
                    "Keys": [
                        {PARTITION_KEY: {"S": i}} for i in wanted[start : start + _BATCH_GET_KEYS]
                    ]
                }
            }
            while request:
                response = ddb.batch_get_item(RequestItems=request)
                for raw in response.get("Responses", {}).get(table, []):
                    record = record_from_item(raw)
                    found[str(record[PARTITION_KEY])] = record
                request = response.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(0.05)
        return found

    def dead_letters(self, max_messages: int = 10) -> list[dict[str, Any]]:
        """Peek at the dead-letter queue (messages become visible again later)."""
        response = self.client("sqs").receive_message(
            QueueUrl=self.endpoints.dead_letter_queue_url,
            MaxNumberOfMessages=max_messages,
            VisibilityTimeout=0,
            WaitTimeSeconds=0,
        )
        return list(response.get("Messages", []))

    def invoke_monitor(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the scheduled monitor now, through the Lambda Invoke API."""
        import json

        response = self.client("lambda").invoke(
            FunctionName=self.endpoints.monitor_function,
            Payload=json.dumps(event or {}).encode(),
        )
        payload = json.loads(response["Payload"].read() or b"null")
        if "FunctionError" in response:
            message = payload.get("errorMessage") if isinstance(payload, dict) else payload
            raise StackClientError(f"the monitor function failed: {message}")
        return dict(payload or {})

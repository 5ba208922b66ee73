"""The whole product on this machine: one object that starts and stops it.

``OfflineStack`` starts a moto server, deploys the real ``template.yaml`` into
it (``scones.offline.deploy``), runs the deployed Lambda functions in local
workers (``scones.offline.lambda_runtime``), executes the real ASL with moto's
Step Functions interpreter, drains the ingest queue like Lambda's SQS poller
(``scones.offline.sqs_poller``) and serves the shipped model behind a
SageMaker-compatible endpoint, in a process of its own
(``scones.offline.model_process``, which starts it again should it die), that writes
data capture into the stack's bucket. moto's costly repeated work is cached (``interpreter_caches``,
``sqs_fixes``, ``dispatch_cache``) and a burst of executions is admitted a few
at a time (``execution_gate``).

The emulator's state lives in this process's memory: when the stack stops, its bucket,
queues and table are gone. ``stop()`` first closes the published endpoint (``moto_guard``:
503 "the offline stack is stopping" from then on; the stack's own clients use an endpoint
of their own), so every upload it acknowledged is in the bucket when the stop names those
without a record (``unfinished``). With ``StackOptions.records_dir`` set, it
then writes every item of the results table to a JSON file there
(``scones.offline.records_file``); a folder that cannot take it (a full disk) is not the
end of them: ``_save_records`` names it and tries the next one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from scones_core.objects import NULL_VERSION, ObjectRef
from scones_core.records import PARTITION_KEY

from scones import heap
from scones.no_proxy import reach_loopback_directly
from scones.offline import moto_ec2_regions  # noqa: F401 (before moto's interpreter: see it)

# isort: split
from scones.offline import (
    cfn_json_templates,
    concurrency_fixes,
    dispatch_cache,
    emulator_snapshot,
    execution_gate,
    interpreter_caches,
    interpreter_fixes,
    model_tracking,
    s3_event_fixes,
    sqs_fixes,
    sync_executions,
)
from scones.offline.client import REGION, StackClient, StackEndpoints, offline_session
from scones.offline.deploy import DeployedStack, deploy
from scones.offline.executions import STOP_WAIT_SECONDS, running_executions
from scones.offline.express_retention import DEFAULT_RETENTION, ExpressRetention
from scones.offline.interpreter_threads import ThreadSweeper
from scones.offline.lambda_runtime import (
    FUNCTION_LOG_BACKUPS,
    FUNCTION_LOG_MAX_BYTES,
    LambdaRuntime,
)
from scones.offline.model_process import DEFAULT_RESTARTS
from scones.offline.object_faults import ObjectReadFaults
from scones.offline.records_file import (
    UnrecordedUpload,
    records_document,
    save_records,
    temporary_records_folder,
)
from scones.offline.sqs_poller import INVOKE_CONFIG, SqsPoller
from scones.offline.stack_model import StackError, check_model
from scones.offline.table_faults import THROTTLED, TableWriteFaults
from scones.offline.user_configuration import HiddenUserConfiguration
from scones.paths import BASELINE_FILE, SHIPPED_MODEL_DIR
from scones.template_params import LOCAL_STACK_NAME

if TYPE_CHECKING:
    from scones.serving.server import ServerSettings

# Every fault injector (the endpoint's, the table's, the bucket's) needs the option.
FAULTS_OFF = "fault injection is off; start the stack with enable_faults=True"

logger = logging.getLogger(__name__)
# moto's own configuration, process-wide: the stack runs state machines while it is up.
_EXECUTING = {"stepfunctions": {"execute_state_machine": True}}
_NOT_EXECUTING = {"stepfunctions": {"execute_state_machine": False}}


# How long stopping waits for the requests the published endpoint was serving as it closed
# (moto answers one in milliseconds; an upload still arriving after this is named anyway
# if it lands before the records are read).
DOOR_WAIT_SECONDS = 10.0
# How many of the uploads without a record the stop names (all are counted).
NAMED_UNRECORDED = 5
# ListObjectVersions' page size when the stop lists the uploads through the API (S3
# sends at most 1,000; moto as many as asked).
_LISTING_PAGE_SIZE = 100_000

# One offline stack per process: moto's backends and the Lambda hook are global.
_ACTIVE = threading.Lock()


# Template parameters the offline stack deploys with unless told otherwise. The local model
# server's capture is flushed before the monitor is invoked, so nothing arrives late: a
# window need not end MonitorSettleMinutes early as it must on AWS.
OFFLINE_PARAMETERS = {"MonitorSettleMinutes": "0"}


@dataclass
class StackOptions:
    model_dir: Path = SHIPPED_MODEL_DIR
    work_dir: Path | None = None  # a temporary folder when None
    host: str = "127.0.0.1"
    moto_port: int = 0  # 0 picks a free port
    model_port: int = 0
    stack_name: str = LOCAL_STACK_NAME
    overrides: dict[str, str] = field(default_factory=dict)
    enable_faults: bool = False
    capture_flush_seconds: float = 1.0
    workers_per_function: int = 4
    poller_threads: int = 2
    # Where stop() saves every record of the results table (nothing is saved when None).
    records_dir: Path | None = None
    # moto's interpreter caches, SQS fixes and request routing cache (interpreter_caches,
    # sqs_fixes, dispatch_cache): the same records, faster. Off only to compare with raw moto.
    moto_speedups: bool = True
    # How many times in a row the model server may fail (die within a minute of starting,
    # or not start) and still be started again (``model_process``); then it is given up on.
    model_server_restarts: int = DEFAULT_RESTARTS
    # The model server in this process instead of its own: only for callers that change
    # its production variants directly (``scones retrain``'s canary); slower, as inference
    # then shares this process's GIL with moto.
    model_in_process: bool = False
    # Executions evaluating at once; the others wait, RUNNING, before their first state
    # (execution_gate: a burst must not time out Tasks queued for the local workers).
    # None: every execution evaluates at once, as raw moto does.
    max_running_executions: int | None = execution_gate.DEFAULT_LIMIT
    # Finished Express executions are dropped this long after they end, as AWS keeps none
    # (express_retention). None keeps every one, as raw moto does.
    express_retention_seconds: float | None = DEFAULT_RETENTION.total_seconds()
    # Each function's log (WORK_DIR/logs/FUNCTION.log) is rotated at this size, keeping
    # this many older files, at least 1 (lambda_worker.RotatingLog): bounded however long
    # the stack runs.
    function_log_max_bytes: int = FUNCTION_LOG_MAX_BYTES
    function_log_backups: int = FUNCTION_LOG_BACKUPS


# File descriptors the stack holds at its busiest, rounded up: moto's server (a socket per
# request in flight), the SQS poller's and the interpreter's clients, the model server's
# process, and two pipe ends per warm Lambda worker (up to ``workers_per_function`` for
# each of the template's functions). A `scones run` of 72 uploads held about 60 at once,
# and failed under a limit of 64.
OPEN_FILES_NEEDED = 256


def raise_open_file_limit(needed: int) -> None:
    """Raise this process's open-file soft limit to its hard limit, as servers do (a shell's
    default soft limit, 1024 or less, is not the machine's): out of descriptors, moto fails
    requests and Lambda workers cannot start. Refuse to start when even the hard limit is
    below ``needed``: uploads would fail for a reason of this machine, not of the stack."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise StackError(
            f"the open-file limit is {hard} (hard limit; `ulimit -Hn`), and the offline stack "
            f"needs {needed}: raise it (`ulimit -n {needed}` as a user allowed to) and start again"
        )
    if soft in (hard, resource.RLIM_INFINITY):
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        # macOS refuses an unlimited soft limit for files: needed, at least, is enough.
        if soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class OfflineStack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.deployed: DeployedStack | None = None
        self.model_url = ""  # set once the model server listens
        self._moto: Any = None
        self._model_server: Any = None
        self._in_process_server: Any = None
        self._runtime: LambdaRuntime | None = None
        self._poller: SqsPoller | None = None
        self._express_retention: ExpressRetention | None = None
        self._thread_sweeper: ThreadSweeper | None = None
        self._own_work_dir = False
        # Absolute: the Lambda workers run in their code folder, and every path handed to
        # them (PYTHONPATH, LAMBDA_TASK_ROOT) must mean the same folder there.
        self.work_dir = (
            self.options.work_dir or Path(tempfile.mkdtemp(prefix="scones-offline-"))
        ).resolve()
        self._own_work_dir = self.options.work_dir is None
        self.timings: dict[str, float] = {}
        self._api: StackClient | None = None
        self._session: Any = None
        self._clients: dict[tuple[str, str, Config | None], Any] = {}
        self._clients_lock = threading.Lock()
        self._holds_process_slot = False
        self._froze_heap = False
        self._table_faults: TableWriteFaults | None = None
        self._object_faults: ObjectReadFaults | None = None
        self._speedups_installed = False
        self._user_configuration = HiddenUserConfiguration(REGION)
        self.execution_gate: execution_gate.ExecutionGate | None = None
        # Set by stop() when records_dir is set: the file written (in records_dir, or in
        # another folder when that one could not take it), and why records_dir (and any
        # other folder tried) could not; None when records_dir took them.
        self.saved_records: Path | None = None
        self.save_error: str | None = None
        self.unfinished: str | None = None  # what had no record yet when it stopped
        # Set by stop(): how often the model server died and was started again, and
        # whether it was given up on; None when it never died.
        self.model_server_report: str | None = None
        # Every upload (bucket, key, version) under IncomingPrefix without a record when the
        # stop read the records; empty when none, or when they could not be listed.
        # None once the stop could not list the uploads (the records file says null).
        self.unrecorded_uploads: list[UnrecordedUpload] | None = []
        # The emulator's endpoint for the stack's own clients: it stays open while the
        # stack stops (``endpoint_url``, the published one, is closed first).
        self.own_endpoint_url = ""

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> OfflineStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> OfflineStack:

        started = time.perf_counter()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # The interpreter logs every handled Catch/Choice miss as an exception.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        # Its clients, moto's interpreter and the model server reach the emulator on
        # loopback, never through a proxy the environment names (``scones.no_proxy``).
        reach_loopback_directly()
        try:
            with heap.building_long_lived_heap():
                raise_open_file_limit(OPEN_FILES_NEEDED)
                check_model(self.options.model_dir, self.options.overrides)
                self.work_dir.mkdir(parents=True, exist_ok=True)
                self._check_port_free()
                if not _ACTIVE.acquire(blocking=False):
                    raise StackError(
                        "another offline stack is already running in this process (moto's "
                        "state and its Lambda hook are per process); stop it first"
                    )
                self._holds_process_slot = True
                self._user_configuration.hide()  # before moto is imported (it reads it)
                self._start_parts(started)
                heap.freeze_long_lived()
                self._froze_heap = True
        except BaseException:
            # Also removes a temporary work folder: a failed start leaves nothing. The
            # start's own error is the one raised, whatever the stop meets on the way.
            try:
                self.stop()
            except Exception as exc:
                logger.warning("could not stop the offline stack that failed to start: %s", exc)
            raise
        self.timings["start_s"] = time.perf_counter() - started
        return self

    def _start_parts(self, started: float) -> None:
        from scones.offline.moto_guard import guarded_moto_server  # heavy: imports moto

        # Its own clients only: never a web page in the user's browser (moto_guard).
        self._moto = guarded_moto_server(self.options.host, self.options.moto_port)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        own_host, own_port = self._moto.own_host_and_port()
        self.own_endpoint_url = f"http://{own_host}:{own_port}"
        # moto's Step Functions interpreter calls the other services on this port.
        os.environ["MOTO_PORT"] = str(own_port)
        self._configure_moto()
        self._runtime = LambdaRuntime(
            self.work_dir / "lambda",
            self.own_endpoint_url,
            log_dir=self.work_dir / "logs",
            workers_per_function=self.options.workers_per_function,
            log_max_bytes=self.options.function_log_max_bytes,
            log_backups=self.options.function_log_backups,
            # StartSyncExecution goes to sync-<host>, which 127.0.0.1 cannot take; set
            # before any function runs, as a worker keeps the environment it started with.
            extra_env=sync_executions.HOST_PREFIX_ENVIRONMENT,
        )
        self._runtime.install()
        interpreter_fixes.install()
        sync_executions.install()  # the start function waits for each Express execution
        s3_event_fixes.install()
        if self.options.enable_faults:
            self._table_faults = TableWriteFaults()
            self._table_faults.install()
            self._object_faults = ObjectReadFaults()
            self._object_faults.install()
        concurrency_fixes.install()  # after the fault injector: it locks what is installed
        model_tracking.install()
        if self.options.moto_speedups:
            interpreter_caches.install()
            sqs_fixes.install()
            dispatch_cache.install()
            cfn_json_templates.install()
            self._speedups_installed = True
        if self.options.max_running_executions is not None:
            self.execution_gate = execution_gate.install(self.options.max_running_executions)
        self.deployed = deploy(
            self.own_endpoint_url,
            stack_name=self.options.stack_name,
            region=REGION,
            overrides={**OFFLINE_PARAMETERS, **self.options.overrides},
            created=self._launch_model_server,
        )
        self.timings["deploy_s"] = time.perf_counter() - started
        self._start_model_server()
        self._runtime.extra_env.update(
            {
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.model_url,
                # There is no X-Ray daemon offline.
                "POWERTOOLS_TRACE_DISABLED": "true",
                "AWS_XRAY_SDK_ENABLED": "false",
            }
        )
        self._publish_baseline()
        self._poller = SqsPoller(
            self.client("sqs"),
            self.client("lambda", INVOKE_CONFIG),
            REGION,
            threads_per_mapping=self.options.poller_threads,
        )
        self._poller.start()
        if self.options.express_retention_seconds is not None:
            retention = timedelta(seconds=self.options.express_retention_seconds)
            self._express_retention = ExpressRetention(retention).start()
        self._thread_sweeper = ThreadSweeper().start()

    def stop(self) -> None:
        try:
            self._stop_parts()
        finally:
            with self._clients_lock:
                self._clients.clear()  # their endpoint goes with the stack
            # Whatever a step raised (it still propagates): a temporary work folder holds
            # every function's package and log, and a full disk is a likely cause.
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            if self._holds_process_slot:
                self._holds_process_slot = False
                self._user_configuration.restore()
                _ACTIVE.release()
            if self._froze_heap:
                self._froze_heap = False
                heap.release_long_lived()

    def _stop_parts(self) -> None:
        # First: from now on nothing outside the stack (an upload, a StartExecution) is
        # acknowledged that the stop would not account for.
        if self._moto and (serving := self._moto.close_door(DOOR_WAIT_SECONDS)):
            logger.warning("%d request(s) were still being served as the stack stopped", serving)
        if self._express_retention:
            self._express_retention.stop()
            self._express_retention = None
        if self._thread_sweeper:
            self._thread_sweeper.stop()
            self._thread_sweeper = None
        if self._poller:
            self._poller.stop(wait_for_polls=False)
            self._poller = None
        saved = False
        if self._moto and self._runtime and self.deployed is not None:
            # Executions already started end as they would have, and their records are
            # saved before what they call (the endpoint, the functions) goes away: torn
            # down under them, they would write FAILED records of the stop's own making.
            running = 0
            try:
                running = self._let_executions_finish(STOP_WAIT_SECONDS)
            except Exception as exc:  # moto's internals changed: stop and save regardless
                logger.warning("could not wait for the running executions: %s", exc)
            self._save_records(running, STOP_WAIT_SECONDS)
            saved = True
        if self._model_server:
            self.model_server_report = self._model_server_report()
            self._model_server.stop()
            self._model_server = None
            self._in_process_server = None
        if self._runtime:
            self._runtime.close()
            LambdaRuntime.uninstall()
            interpreter_fixes.uninstall()
            sync_executions.uninstall()
            s3_event_fixes.uninstall()
            concurrency_fixes.uninstall()
            model_tracking.uninstall()
            self._runtime = None
        self._uninstall_faults()
        if self.execution_gate is not None:
            execution_gate.uninstall()  # before the caches: it wraps their entry point
        if self._speedups_installed:
            self._speedups_installed = False
            interpreter_caches.uninstall()
            sqs_fixes.uninstall()
            dispatch_cache.uninstall()
            cfn_json_templates.uninstall()
        if self._moto:
            if not saved:
                # The last moment the table can be read: the emulator's memory goes with it.
                self._save_records()
            self._release_moto_state()
            self._moto.stop()
            self._moto = None

    def _model_server_report(self) -> str | None:
        """What the stop says of a model server that died while the stack ran."""
        restarts = getattr(self._model_server, "restarts", 0)
        given_up = getattr(self._model_server, "given_up", None)
        if not restarts and given_up is None:
            return None
        report = f"the model server died and was restarted {restarts} time(s)"
        return f"{report}; then {given_up}" if given_up else report

    def _let_executions_finish(self, timeout: float) -> int:
        """Wait up to ``timeout`` for the workflow's running executions; return how many
        still run."""
        outputs = self.stack.outputs
        machines = {
            outputs[name]
            for name in ("ClassificationStateMachineArn", "BackfillStateMachineArn")
            if name in outputs
        }
        deadline = time.monotonic() + timeout
        while (running := running_executions(machines)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return running

    @property
    def unrecorded(self) -> list[str]:
        """The keys of ``unrecorded_uploads`` (one per object version; none when they
        could not be listed)."""
        return [upload["key"] for upload in self.unrecorded_uploads or []]

    def _own_api(self) -> StackClient:
        """A client on the stack's own endpoint: the published one is closed as it stops."""
        return StackClient(replace(self.endpoints, endpoint_url=self.own_endpoint_url))

    def _read_records(self) -> list[dict[str, Any]]:
        """Every item of the results table: from moto's backend in this process
        (``emulator_snapshot``: the API's records, in a fraction of its time), or through
        the API should moto's internals have changed."""
        try:
            return emulator_snapshot.table_records(self.table_name, REGION)
        except Exception as exc:  # moto's internals changed: the API, slower
            logger.warning("reading the results table through the API instead: %s", exc)
            return self._own_api().records()

    def _uploads(self) -> list[ObjectRef]:
        """Every object version under IncomingPrefix, as ``_read_records`` reads."""
        try:
            return emulator_snapshot.object_versions(self.bucket, self.incoming_prefix)
        except Exception as exc:  # moto's internals changed: the API, slower
            logger.warning("listing the uploads through the API instead: %s", exc)
        pages = (
            self.client("s3")
            .get_paginator("list_object_versions")
            # moto copies the whole bucket for each page: as few pages as it will send.
            .paginate(
                Bucket=self.bucket,
                Prefix=self.incoming_prefix,
                PaginationConfig={"PageSize": _LISTING_PAGE_SIZE},
            )
        )
        return [
            ObjectRef(
                self.bucket,
                version["Key"],
                version.get("VersionId") or NULL_VERSION,
                str(version.get("ETag", "")).strip('"'),
                int(version.get("Size", 0)),
            )
            for page in pages
            for version in page.get("Versions", [])
        ]

    def _unrecorded_uploads(self, records: list[dict[str, Any]]) -> list[UnrecordedUpload]:
        """Every object version under IncomingPrefix that ``records`` lacks: an upload the
        stack acknowledged whose S3 event was still queued, or whose execution had not
        written its record, when the records were read."""
        recorded = {str(record.get(PARTITION_KEY)) for record in records}
        return [
            {"bucket": ref.bucket, "key": ref.key, "version": ref.version}
            for ref in self._uploads()
            if ref.record_id not in recorded
        ]

    def _queued_events(self) -> int:
        """S3 event messages still in the ingest queue (nothing delivers them once the
        poller has stopped): what the stop can say when the uploads cannot be listed."""
        return self.queue_depth(self.stack.outputs["IngestQueueUrl"])

    def _name_unfinished(
        self, records: list[dict[str, Any]] | None, running: int, timeout: float
    ) -> None:
        """Set ``unrecorded`` and ``unfinished``: every acknowledged upload that
        ``records`` lacks, by count and its first keys, and the executions still running
        (``records`` None: they could not be read; the queued events are counted then)."""
        parts: list[str] = []
        uploads: list[UnrecordedUpload] | None = None
        if records is not None:
            try:
                uploads = self._unrecorded_uploads(records)
            except Exception as exc:  # stopping must go on; the queue is counted instead
                logger.warning("could not list the uploads without a record: %s", exc)
        self.unrecorded_uploads = uploads
        unrecorded = None if uploads is None else self.unrecorded
        if unrecorded:
            named = ", ".join(unrecorded[:NAMED_UNRECORDED])
            more = len(unrecorded) - NAMED_UNRECORDED
            parts.append(
                f"{len(unrecorded)} upload(s) had no record when the stack stopped: {named}"
                + (f" and {more} more" if more > 0 else "")
            )
        elif unrecorded is None:
            try:
                if queued := self._queued_events():
                    parts.append(
                        f"{queued} S3 event message(s) were still in the ingest queue when "
                        "the stack stopped: those uploads may have no record"
                    )
            except Exception as exc:  # stopping must go on; say what could not be counted
                logger.warning("could not count the ingest queue's messages: %s", exc)
        if running:
            parts.append(f"{running} execution(s) were still running after {timeout:g} s")
        self.unfinished = "; ".join(parts) or None

    def _save_records(self, running: int = 0, timeout: float = 0.0) -> None:
        """Name what has no record (``unfinished``, from the records read here, ``running``
        executions still running after ``timeout``), then save every record into
        ``records_dir``; where that fails (a full disk, a folder gone
        read-only), into the next folder that is the user's own: the kept work folder
        (``scones up``'s is in its private state folder), then a new private folder in the
        temporary folder, and at last as JSON on standard error. The records live only in
        this process's memory: the stop must not lose them to one full folder. Each folder
        that failed is named in ``save_error``, with its cause."""
        if self.deployed is None:
            return
        records: list[dict[str, Any]] | None = None
        read_error = ""
        try:
            records = self._read_records()
        except Exception as exc:  # stopping must go on; the caller reports save_error
            read_error = f"the results table could not be read: {type(exc).__name__}: {exc}"
            logger.warning("could not read the records of the offline stack: %s", exc)
        self._name_unfinished(records, running, timeout)
        # Before the model server listens no upload can have been classified: nothing to save.
        if self.options.records_dir is None or not self.model_url:
            return
        if records is None:
            self.save_error = read_error
            return
        now = datetime.now(UTC)
        failures: list[str] = []
        folders = [self.options.records_dir]
        if not self._own_work_dir:  # a temporary work folder goes with the stack
            folders.append(self.work_dir)
        if not any(self._save_in(folder, records, now, failures) for folder in folders):
            self._save_in_temporary_folder(records, now, failures)
        if failures:
            self.save_error = "; ".join(failures)
        if self.saved_records is None:
            self._write_records_to_stderr(records, now)

    def _save_in(
        self,
        folder: Path,
        records: list[dict[str, Any]],
        now: datetime,
        failures: list[str],
        named: str | None = None,
    ) -> bool:
        """Whether the records file was saved in ``folder``; if not, why is in ``failures``
        (under the name ``named``, if given)."""
        try:
            self.saved_records = save_records(
                records,
                out_dir=folder,
                stack_name=self.options.stack_name,
                table=self.table_name,
                now=now,
                unrecorded=self.unrecorded_uploads,
            )
        except Exception as exc:  # stopping must go on: the next folder
            failures.append(f"{named or folder}: {type(exc).__name__}: {exc}")
            logger.warning("could not save the records in %s: %s", folder, exc)
            return False
        return True

    def _save_in_temporary_folder(
        self, records: list[dict[str, Any]], now: datetime, failures: list[str]
    ) -> None:
        named = f"a new folder in {tempfile.gettempdir()}"
        try:
            folder = temporary_records_folder()
        except OSError as exc:
            failures.append(f"{named}: {type(exc).__name__}: {exc}")
            return
        if not self._save_in(folder, records, now, failures, named):
            with contextlib.suppress(OSError):
                folder.rmdir()  # left empty: nothing to look for there

    def _write_records_to_stderr(self, records: list[dict[str, Any]], now: datetime) -> None:
        """The last resort: the records document on standard error, where the user sees it
        (or a redirection keeps it); ``save_error`` says so."""
        text = records_document(
            records,
            stack_name=self.options.stack_name,
            table=self.table_name,
            now=now,
            unrecorded=self.unrecorded_uploads,
        )
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError) as exc:  # ValueError: standard error is closed
            self.save_error = (
                f"{self.save_error}; standard error: {type(exc).__name__}: {exc} "
                "(the records are lost)"
            )
        else:
            self.save_error = (
                f"{self.save_error}; written to standard error instead, as a records file's JSON"
            )

    def _check_port_free(self) -> None:
        from scones.serving.sockets import ServerStartError, bind_socket

        if self.options.moto_port and self.options.moto_port == self.options.model_port:
            raise StackError(
                f"--port and --model-port are both {self.options.moto_port}: the AWS emulator "
                "and the model server need a port each (0 picks a free one)"
            )
        for option, port in (
            ("--port", self.options.moto_port),
            ("--model-port", self.options.model_port),
        ):
            if not port:
                continue
            try:
                bind_socket(self.options.host, port).close()
            except ServerStartError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                    raise StackError(
                        f"{option} {port}: port {port} on {self.options.host} is already in "
                        "use: another program holds it, a `scones up` perhaps, which "
                        "`scones down` stops; 0 picks a free port"
                    ) from exc
                raise StackError(f"{option} {port}: {exc}") from exc

    def _moto_api(self, path: str, body: bytes = b"") -> None:
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 (a loopback http URL)
            f"{self.own_endpoint_url}/moto-api/{path}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def _configure_moto(self) -> None:
        import json

        # moto keeps its state in this process: start from nothing, whatever ran before.
        self._moto_api("reset")
        self._moto_api("config", json.dumps(_EXECUTING).encode())

    def _release_moto_state(self) -> None:
        """Empty moto's backends and put its configuration back: they are module globals
        and outlive the server thread, so a stopped stack would otherwise keep every object,
        item and execution history in this process's memory (and in every garbage
        collection after it), and leave any later moto in this process executing state
        machines."""
        import json

        try:
            self._moto_api("reset")
            self._moto_api("config", json.dumps(_NOT_EXECUTING).encode())
        except OSError as exc:  # stopping must go on
            logger.warning("could not empty the offline stack's emulator state: %s", exc)

    def _model_server_settings(self, deployed: DeployedStack) -> ServerSettings:
        from scones.serving.defaults import RUNTIME_MAX_PAYLOAD_BYTES
        from scones.serving.server import ServerSettings

        params = deployed.parameters
        capture = f"s3://{deployed.outputs['ImageBucketName']}/{params['DataCapturePrefix']}"
        return ServerSettings(
            model_dir=self.options.model_dir,
            endpoint_name=params["EndpointName"],
            variant_name=params["EndpointVariantName"],
            # The endpoint's limits, not the uploads' (MaxImageBytes, MaxImagePixels): a body
            # may be InvokeEndpoint's 6 MiB, and the pixel limit follows the model's input.
            max_body_bytes=RUNTIME_MAX_PAYLOAD_BYTES,
            capture_destination=capture,
            # As DataCaptureConfig's InitialSamplingPercentage on AWS: the monitor is told
            # the same share, and expects that much of the traffic in the capture.
            capture_percent=float(params["DataCaptureSamplingPercentage"]),
            capture_flush_interval_s=self.options.capture_flush_seconds,
            enable_faults=self.options.enable_faults,
        )

    def _launch_model_server(self, deployed: DeployedStack) -> None:
        """Start the model server's process once the stack's bucket (its capture's
        destination) exists: it loads while moto's gaps are filled, and
        ``_start_model_server`` waits for it. No request reaches it before then: the Lambda
        workers learn its address only after."""
        from scones.offline.model_process import ModelProcess, ModelProcessError

        if self.options.model_in_process:
            return
        # Its own process: inference must not wait for moto's GIL.
        self._model_server = ModelProcess(
            self._model_server_settings(deployed),
            host=self.options.host,
            port=self.options.model_port,
            s3_endpoint_url=self.own_endpoint_url,
            log_path=self.work_dir / "logs" / "model-server.log",
            restarts=self.options.model_server_restarts,
        )
        try:
            self._model_server.launch()
        except ModelProcessError as exc:
            raise StackError(str(exc)) from exc

    def _start_model_server(self) -> None:
        from scones.offline.model_process import ModelProcessError
        from scones.serving.server import ModelServer, build_app

        if self.options.model_in_process:
            app = build_app(self._model_server_settings(self.stack), s3_client=self.client("s3"))
            self._in_process_server = ModelServer(
                app, host=self.options.host, port=self.options.model_port
            )
            self._model_server = self._in_process_server
            self.model_url = self._in_process_server.start()
            return
        try:
            self.model_url = self._model_server.start()
        except ModelProcessError as exc:
            raise StackError(str(exc)) from exc

    @property
    def model_server_pid(self) -> int | None:
        """The model server's process id while the stack runs."""
        return self._model_server.pid if self._model_server else None

    def _publish_baseline(self) -> None:
        """Deploy the training baseline where the monitor reads it, as a release would
        (``check_model`` judged it before the stack started)."""
        baseline = self.options.model_dir / BASELINE_FILE
        if baseline.is_file():
            self.client("s3").put_object(
                Bucket=self.bucket, Key=self.parameters["BaselineKey"], Body=baseline.read_bytes()
            )

    # -- accessors --------------------------------------------------------------
    @property
    def stack(self) -> DeployedStack:
        if self.deployed is None:
            raise StackError("the offline stack is not running")
        return self.deployed

    @property
    def parameters(self) -> dict[str, str]:
        return self.stack.parameters

    @property
    def bucket(self) -> str:
        return self.stack.outputs["ImageBucketName"]

    @property
    def table_name(self) -> str:
        return self.stack.outputs["ResultsTableName"]

    @property
    def incoming_prefix(self) -> str:
        return self.stack.outputs["IncomingPrefix"]

    def client(self, service: str, config: Config | None = None) -> Any:
        """A client on the stack's own endpoint (served until the stack has saved its
        records); ``api()`` and ``endpoints`` name the published one, as users reach it.
        ``config``: botocore settings of its own (a client apart from the shared one)."""
        endpoint = self.model_url if service == "sagemaker-runtime" else self.own_endpoint_url
        # One per service, endpoint and config, from one session (clients are thread-safe;
        # making one is not): a new session read botocore's models again, 80 ms for S3 alone.
        with self._clients_lock:
            # The key holds the Config itself (hashed by identity), so it stays this one.
            client = self._clients.get((service, endpoint, config))
            if client is None:
                if self._session is None:
                    self._session = offline_session()
                client = self._session.client(service, endpoint_url=endpoint, config=config)
                self._clients[(service, endpoint, config)] = client
            return client

    def function_name(self, logical_id: str) -> str:
        return self.stack.physical_id(logical_id)

    # -- using it ---------------------------------------------------------------
    @property
    def endpoints(self) -> StackEndpoints:
        outputs = self.stack.outputs
        return StackEndpoints(
            endpoint_url=self.endpoint_url,
            model_url=self.model_url,
            bucket=outputs["ImageBucketName"],
            incoming_prefix=outputs["IncomingPrefix"],
            table=outputs["ResultsTableName"],
            state_machine_arn=outputs["ClassificationStateMachineArn"],
            dead_letter_queue_url=outputs["DeadLetterQueueUrl"],
            monitor_function=outputs["MonitorFunctionName"],
            region=REGION,
        )

    def queue_depth(self, queue_url: str) -> int:
        """Messages on a queue, visible, in flight or delayed (read without receiving)."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=names
        )["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    def in_flight(self) -> bool:
        """Is anything still on its way to a record: an S3 event on the ingest queue
        (visible, being started or delayed), or a classification execution running?"""
        machine = self.stack.outputs["ClassificationStateMachineArn"]
        return bool(self._queued_events() or running_executions({machine}))

    @contextlib.contextmanager
    def delivery_paused(self) -> Iterator[None]:
        """Hold S3 notifications in the ingest queue (as a throttled poller would)."""
        if self._poller is None:
            raise StackError("the offline stack is not running")
        self._poller.stop()
        try:
            yield
        finally:
            if self._poller is not None:  # None: the stack was stopped meanwhile
                self._poller.start()

    def flush_capture(self) -> int:
        """Write buffered data-capture records of every variant now (the endpoint flushes
        on a timer)."""
        if self._in_process_server is not None:
            return int(self._in_process_server.app.state.endpoint.flush_captures())
        return self._model_server.flush() if self._model_server else 0

    @property
    def model_endpoint(self) -> Any:
        """The model server's endpoint (``scones.serving.app``): its production variants."""
        if self._in_process_server is None:
            raise StackError(
                "the model server's variants are reachable only with "
                "StackOptions(model_in_process=True)"
            )
        return self._in_process_server.app.state.endpoint

    def set_faults(self, plan: dict[str, int] | None) -> dict[str, Any]:
        """Arm (or with ``None`` clear) the model endpoint's injected faults."""
        import json
        import urllib.request

        if not self.options.enable_faults:
            raise StackError(FAULTS_OFF)
        request = urllib.request.Request(  # noqa: S310 (a loopback http URL)
            f"{self.model_url}/_faults",
            data=json.dumps(plan).encode() if plan else None,
            headers={"Content-Type": "application/json"},
            method="POST" if plan else "DELETE",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return dict(json.loads(response.read() or b"{}"))

    def throttle_table_writes(
        self, times: int, record_prefix: str, code: str = THROTTLED, *, landed: bool = False
    ) -> TableWriteFaults:
        """Answer the next ``times`` writes of records whose id starts with ``record_prefix``
        (``<bucket>/<key>#``) with the error ``code`` (``table_faults.WRITE_FAULTS``), after
        applying them if ``landed`` (a lost answer); 0 clears."""
        if self._table_faults is None:
            raise StackError(FAULTS_OFF)
        self._table_faults.throttle(times, record_prefix, code, landed=landed)
        return self._table_faults

    def _uninstall_faults(self) -> None:
        if self._table_faults:
            TableWriteFaults.uninstall()
            self._table_faults = None
        if self._object_faults:
            ObjectReadFaults.uninstall()
            self._object_faults = None

    def deny_object_reads(self, keys: list[str]) -> ObjectReadFaults:
        """Refuse every HeadObject and GetObject of these keys of the stack's bucket with
        S3's AccessDenied (``object_faults``), until ``clear()``; listings still name them."""
        if self._object_faults is None:
            raise StackError(FAULTS_OFF)
        self._object_faults.deny(self.bucket, keys)
        return self._object_faults

    def api(self) -> StackClient:
        """A boto3-based client for this stack (uploads, records, monitor)."""
        if self._api is None:
            self._api = StackClient(self.endpoints)
        return self._api

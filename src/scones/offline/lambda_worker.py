"""A Lambda execution environment in a child process.

``python -S lambda_worker.py HANDLER REQUEST_FD RESPONSE_FD LOG_FILE LOG_MAX_BYTES LOG_BACKUPS
[FUNCTION_NAME]`` (a script, so no package of this project is imported in the function's
process) imports the handler once (the cold start) with the function's environment and
``sys.path`` (code folder, then ``/opt/python`` of the layers, then the runtime's packages),
then serves invocations: one JSON line in, one JSON line out. Anything the handler prints
goes to this process's stderr, the function's log file (``LOG_FILE``, opened by the parent),
which the worker rotates by size before an invocation (:class:`RotatingLog`). Before the
import the root logger is set up as Lambda's Python runtime sets it up
(:func:`configure_root_logger`), so a library's logger writes there what it would on AWS.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from typing import Any


class LambdaContext:
    """The attributes of the real context object that handlers and Powertools read."""

    def __init__(self, request_id: str, deadline_ms: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("SCONES_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """The body Lambda returns for an unhandled exception."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


# Lambda's ``LogType: Tail`` returns the last 4 KB of an invocation's log.
TAIL_BYTES = 4096


class LogTee(io.TextIOBase):
    """The function's log stream: written through to the log file a whole line at a time,
    and the current invocation's text kept (its last ``limit`` characters) for the Invoke
    response.

    Every worker of a function appends to the same file, and ``print`` writes a line's text
    and its newline separately: written as they come, two workers' lines could interleave
    into one (a JSON line or an EMF metric no reader could parse). Each complete line goes
    out in one write, which a file opened for appending never splits; the rest waits for
    its newline or a flush."""

    def __init__(self, stream: Any, limit: int = 4 * TAIL_BYTES) -> None:
        self._stream = stream
        self._limit = limit
        self._kept = ""
        self._partial = ""

    def write(self, text: str) -> int:
        pending = self._partial + text
        end = pending.rfind("\n") + 1
        if end:
            self._stream.write(pending[:end])
        self._partial = pending[end:]
        self._kept = (self._kept + text)[-self._limit :]
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._stream.write(self._partial)
            self._partial = ""
        self._stream.flush()

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", "utf-8"))

    def take(self) -> str:
        """What was written since the last call."""
        kept, self._kept = self._kept, ""
        return kept


class RotatingLog:
    """The function's log file, kept to about ``max_bytes`` and ``backups`` older files
    (``FUNCTION.log.1`` the newest of them), so a stack held open for days does not fill
    its disk; the recent lines are always in ``FUNCTION.log``.

    Every worker of a function writes (appends) to the same file, on file descriptors 1 and
    2. Before an invocation a worker whose file has reached ``max_bytes`` renames it and the
    older ones along, under a lock on the log folder, and opens a new one; a worker whose
    file was renamed by another opens the new one the same way. The file can therefore pass
    ``max_bytes`` by what the invocations in flight write, never more. A rotation splits
    no invocation's lines across files, and only the oldest file is dropped: an invocation
    that runs while the function's other workers write ``backups`` times ``max_bytes``
    writes on into that file, and what it writes after the drop is lost. One that fails (a
    full disk) leaves the worker writing where it was.
    """

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(1, backups)

    def rotate_if_due(self) -> None:
        """Called between invocations: a worker changes files only when it writes nothing."""
        try:
            mine = os.fstat(2)
            if self._is_current(mine) and mine.st_size < self.max_bytes:
                return
            with self._locked():
                current = self._stat()
                if current is not None and _same_file(current, mine):
                    if current.st_size < self.max_bytes:
                        return
                    self._shift()
                self._reopen()
        except OSError:
            return

    def _stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def _is_current(self, mine: os.stat_result) -> bool:
        current = self._stat()
        return current is not None and _same_file(current, mine)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        folder = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # releases the lock

    def _shift(self) -> None:
        for number in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{number}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{number + 1}")
        os.replace(self.path, f"{self.path}.1")

    def _reopen(self) -> None:
        sys.stderr.flush()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.dup2(descriptor, 2)
            os.dup2(descriptor, 1)
        finally:
            os.close(descriptor)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# The LogRecord attributes Lambda's runtime keeps out of a JSON line's extra fields
# (awslambdaric's ``lambda_runtime_log_utils``).
_RECORD_FIELDS = frozenset(
    {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
        "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
        "relativeCreated", "thread", "threadName", "processName", "process",
        "aws_request_id", "tenant_id", "_frame_type",
    }
)  # fmt: skip


class RequestId(logging.Filter):
    """Stamps each record with the current invocation's id, as Lambda's handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.current = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.current
        return True


class LambdaJsonFormatter(logging.Formatter):
    """One JSON line per record, with the keys Lambda's runtime writes for the JSON log
    format (``timestamp`` in UTC, ``level``, ``message``, ``logger``, ``requestId``, an
    exception's ``errorType``, ``errorMessage``, ``stackTrace`` and ``location``, then the
    record's extra fields)."""

    def format(self, record: logging.LogRecord) -> str:
        level = logging.getLevelName(min(50, max(0, record.levelno)) // 10 * 10)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "level": level,
            "message": record.getMessage(),
            "logger": record.name,
            "requestId": getattr(record, "aws_request_id", None),
        }
        if record.exc_info and record.exc_info[1] is not None:
            line["stackTrace"] = traceback.format_tb(record.exc_info[2])
            line["errorType"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            line["errorMessage"] = str(record.exc_info[1])
            line["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
        line.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and key not in line
        )
        kept = {key: value for key, value in line.items() if value is not None}
        return json.dumps(kept, ensure_ascii=False, default=str)


def configure_root_logger(
    environ: Mapping[str, str], stream: Any, request_id: RequestId
) -> logging.Handler:
    """What Lambda's Python runtime does before it imports the handler (awslambdaric's
    bootstrap, ``_setup_logging``): a handler on the root logger writing to the function's
    log, JSON lines when ``AWS_LAMBDA_LOG_FORMAT`` is JSON (text lines otherwise), and the
    application log level Lambda passes in ``AWS_LAMBDA_LOG_LEVEL`` (TRACE read as DEBUG)
    set on the root logger, so a library logger without a level of its own logs at it."""
    handler = logging.StreamHandler(stream)
    if environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON":
        handler.setFormatter(LambdaJsonFormatter())
    else:
        text = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
        text.converter = time.gmtime
        handler.setFormatter(text)
    handler.addFilter(request_id)
    level = environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    level = "DEBUG" if level == "TRACE" else level
    root = logging.getLogger()
    if level in logging.getLevelNamesMapping():
        root.setLevel(level)
    root.addHandler(handler)
    return handler


def main(argv: list[str]) -> int:
    handler_spec, request_fd, response_fd = argv[1], int(argv[2]), int(argv[3])
    log_file = RotatingLog(argv[4], int(argv[5]), int(argv[6]))
    # Ctrl-C or a closed terminal reaches the whole process group, and so does a SIGTERM
    # sent to the group (timeout(1), kill -TERM -PGID) or to the service's cgroup (systemd):
    # the stack stops its workers itself (by closing the request pipe, which also happens
    # if it dies, even by SIGKILL), so an invocation in flight still answers while the
    # running executions end and the records are saved. (A session of their own would
    # not keep a cgroup's SIGTERM away.)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # The protocol has its own pipes; the handler's prints go to the log.
    os.dup2(2, 1)
    log = LogTee(sys.stderr)
    sys.stdout = sys.stderr = log
    requests = os.fdopen(request_fd, "r", encoding="utf-8")
    responses = os.fdopen(response_fd, "w", encoding="utf-8")
    request_id_filter = RequestId()
    configure_root_logger(os.environ, log, request_id_filter)
    module_name, _, function_name = handler_spec.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        init_error = None
    except Exception as exc:  # the cold start failed: report it on every invoke
        handler, init_error = None, exc
        traceback.print_exc()
    # The init phase is over: as on Lambda, the function's Timeout counts from here.
    responses.write(json.dumps({"init": "done"}) + "\n")
    responses.flush()
    for line in requests:
        request = json.loads(line)
        request_id = request.get("request_id") or str(uuid.uuid4())
        request_id_filter.current = request_id
        log_file.rotate_if_due()
        print(f"START RequestId: {request_id}", file=sys.stderr, flush=True)
        if handler is None:
            assert init_error is not None
            result = {"ok": False, "payload": error_payload(init_error, request_id)}
        else:
            context = LambdaContext(request_id, float(request["deadline_ms"]))
            try:
                payload = handler(request["event"], context)
                result = {"ok": True, "payload": payload}
            except Exception as exc:  # an unhandled error is the function's result
                traceback.print_exc()
                result = {"ok": False, "payload": error_payload(exc, request_id)}
        print(f"END RequestId: {request_id}", file=sys.stderr, flush=True)
        # The cold start's output (before the first START) belongs to the first invocation.
        result["logs"] = log.take()[-TAIL_BYTES:]
        responses.write(json.dumps(result, default=str) + "\n")
        responses.flush()
    return 0


if __name__ == "__main__":
    # Run as a script, Python put this file's folder first on sys.path: the function
    # must see its code, its layers and the runtime's packages, not the offline stack.
    if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]
    status = main(sys.argv)
    # Input ended: the stack is stopping. Lambda ends an environment without tearing its
    # interpreter down; so does this (every output flushed first), in a millisecond, where
    # the teardown of boto3, Pillow and Powertools took tens of them for every worker.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

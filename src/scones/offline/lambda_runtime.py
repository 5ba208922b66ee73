"""Run deployed Lambda functions on this machine, without Docker.

moto runs function code only inside Docker. ``LambdaRuntime.install`` replaces
``moto.awslambda.models.LambdaFunction._invoke_lambda`` (signature
``(self, event) -> (payload: str, errored: bool, logs: str)``, stable since
2022 and guarded by a test) so that every Invoke, whether from Step
Functions, the SQS poller or a user, runs the function's deployed zip and
layers in a warm worker process with the function's own environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import select
import shutil
import site
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.awslambda import models as lambda_models

# The worker runs as a script, not as ``-m scones.offline.lambda_worker``: a function's
# process must not import this project's packages (nor find them) at all.
_WORKER_SCRIPT = Path(__file__).resolve().with_name("lambda_worker.py")
_PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "OPENBLAS_CORETYPE")
_ORIGINAL_INVOKE: Callable[..., tuple[str, bool, str]] = lambda_models.LambdaFunction._invoke_lambda
# What a function gets when its execution environment cannot be set up (its package
# unpacked, its log opened, its process started): a function error, as Lambda answers an
# init it cannot run, so the caller's retries, catches and redrive apply.
RUNTIME_START_ERROR = "Runtime.Unknown"
# Each function's log (WORK_DIR/logs/FUNCTION.log) is rotated at this size, keeping this many
# older files (FUNCTION.log.1 the newest): at most about 20 MB a function, however long the
# stack runs (about 600 bytes an upload at INFO: some 8000 uploads a file). See
# lambda_worker.RotatingLog.
FUNCTION_LOG_MAX_BYTES = 5 * 2**20
FUNCTION_LOG_BACKUPS = 3
# Lambda gives a function's init (its process start and module imports) 10 s of its own,
# before the Timeout of the first invocation starts; an init that takes longer goes on
# inside that invocation, under its Timeout.
INIT_TIMEOUT_S = 10.0

logger = logging.getLogger(__name__)


def _extract(data: bytes, target: Path) -> Path:
    """Unpack a zip once per ``target``, through a partial folder renamed into place, so a
    worker never runs from half a package; a failed try (a full disk) leaves nothing behind."""
    if target.is_dir():
        return target
    partial = target.with_name(target.name + f".partial-{uuid.uuid4().hex}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"unsafe path in deployment package: {member}")
            archive.extractall(partial)
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # not another thread's extraction that came first
                raise
    except OSError as exc:
        if exc.filename is None:  # a failed write names no file: say where it went
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already once renamed
    return target


def _wait_for_response(worker: _Worker, timeout: float) -> bool:
    """Block until the worker answers or ``timeout`` passes (a profile counts this as idle)."""
    ready, _, _ = select.select([worker.responses], [], [], timeout)
    return bool(ready)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (``VmHWM``), as Lambda's "Max Memory Used" counts it."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux, or the worker is gone: no bound to apply
        pass
    return 0.0


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    requests: Any
    responses: Any
    initialised: bool = False  # the worker said its init phase is over

    def alive(self) -> bool:
        return self.process.poll() is None

    def finish_init(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for a new worker to say its init is over, and read that
        line; True once it has. A worker that exits instead leaves the end of its pipe,
        which the invocation reads as the exit it is."""
        if self.initialised:
            return True
        if not _wait_for_response(self, wait_s):
            return False
        # Byte by byte from the pipe, past the reader's buffer: a buffered read could take
        # the invocation's answer along, where the wait for it would never see it.
        descriptor = self.responses.fileno()
        while (byte := os.read(descriptor, 1)) not in (b"\n", b""):
            pass
        self.initialised = byte == b"\n"
        return True  # over, or the pipe ended: the worker exited in its init

    def stop(self) -> None:
        self.close_requests()
        self.wait_for_exit()

    def close_requests(self) -> None:
        """End of input: the worker finishes its loop and exits."""
        with contextlib.suppress(OSError):
            self.requests.close()

    def wait_for_exit(self) -> None:
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.responses.close()


class _Pool:
    """Warm workers for one function configuration, at most ``size`` at once."""

    def __init__(self, spawn: Callable[[], _Worker], size: int) -> None:
        self._spawn = spawn
        self._size = size
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()

    def acquire(self) -> _Worker:
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._count -= 1
                if self._count < self._size:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return self._spawn()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            if healthy and worker.alive():
                self._idle.append(worker)
            else:
                self._count -= 1
                worker.process.kill()
            self._cond.notify()

    def close(self) -> None:
        for worker in self.take_idle():
            worker.stop()

    def take_idle(self) -> list[_Worker]:
        with self._cond:
            idle, self._idle = self._idle, []
        return idle


class LambdaRuntime:
    """Executes moto's Lambda functions in local worker processes."""

    def __init__(
        self,
        work_dir: Path,
        endpoint_url: str,
        *,
        extra_env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        workers_per_function: int = 4,
        log_max_bytes: int = FUNCTION_LOG_MAX_BYTES,
        log_backups: int = FUNCTION_LOG_BACKUPS,
    ) -> None:
        # Absolute paths only: a worker runs with its code folder as the working directory,
        # so a relative PYTHONPATH entry would silently point elsewhere (or nowhere, and the
        # import would fall through to whatever the host Python has installed).
        self.work_dir = Path(work_dir).resolve()
        self.endpoint_url = endpoint_url
        self.extra_env = dict(extra_env or {})
        self.log_dir = Path(log_dir).resolve() if log_dir else self.work_dir / "logs"
        self.workers_per_function = workers_per_function
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        self._start_failures: dict[str, str] = {}  # function name -> its last kind of failure

    # -- moto integration ---------------------------------------------------
    def install(self) -> None:
        runtime = self

        def _invoke_lambda(
            function: lambda_models.LambdaFunction, event: Any = None
        ) -> tuple[str, bool, str]:
            return runtime.invoke(function, event)

        lambda_models.LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]

    @staticmethod
    def uninstall() -> None:
        lambda_models.LambdaFunction._invoke_lambda = _ORIGINAL_INVOKE  # type: ignore[method-assign]

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        # Tell every worker first, then wait: they exit in parallel, not one by one.
        workers = [worker for pool in pools for worker in pool.take_idle()]
        for worker in workers:
            worker.close_requests()
        for worker in workers:
            worker.wait_for_exit()

    # -- invocation ---------------------------------------------------------
    def invoke(self, function: Any, event: Any) -> tuple[str, bool, str]:
        pool = self._pool_for(function)
        request_id = str(uuid.uuid4())
        try:
            worker = pool.acquire()
        except (OSError, MemoryError) as exc:
            # A full work folder, no file descriptor or memory left: raised into moto's
            # Invoke, this was an HTTP 500 that nothing retried into a record.
            return self._start_failed(function.function_name, exc, request_id)
        self._start_failures.pop(function.function_name, None)
        timeout = float(function.timeout or 3)
        healthy = True
        try:
            # Not counted against the Timeout, up to Lambda's own limit for it.
            worker.finish_init(INIT_TIMEOUT_S)
            deadline = time.time() + timeout
            # The pool hands each worker to one invocation at a time.
            message = {"event": event, "request_id": request_id, "deadline_ms": deadline * 1000}
            worker.requests.write(json.dumps(message) + "\n")
            worker.requests.flush()
            # An init past INIT_TIMEOUT_S goes on under the Timeout, then the answer.
            if not (
                worker.finish_init(max(0.0, deadline - time.time()))
                and _wait_for_response(worker, max(0.0, deadline - time.time()))
            ):
                healthy = False
                return self._error(
                    "Sandbox.Timedout",
                    f"Task timed out after {timeout:.2f} seconds",
                    request_id,
                )
            line = worker.responses.readline()
            if not line:
                healthy = False
                try:
                    code = worker.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                return self._error(
                    "Runtime.ExitError",
                    f"Runtime exited with error: exit status {code}",
                    request_id,
                )
            peak_mb = peak_rss_mb(worker.process.pid)
            if peak_mb > int(function.memory_size):
                # Lambda kills a function that outgrows its MemorySize mid-invocation; the
                # worker's high-water mark, read after the fact, decides the same way.
                healthy = False
                return self._error(
                    "Runtime.OutOfMemory",
                    f"RequestId: {request_id} Error: Runtime exited with error: signal: killed "
                    f"(peak {peak_mb:.0f} MB, MemorySize {function.memory_size} MB)",
                    request_id,
                )
            result = json.loads(line)
            # The invocation's log tail: moto returns it as LogResult (Invoke, LogType Tail).
            return json.dumps(result["payload"]), not result["ok"], str(result.get("logs", ""))
        except (BrokenPipeError, OSError) as exc:
            healthy = False
            return self._error("Runtime.ExitError", f"Runtime exited: {exc}", request_id)
        finally:
            pool.release(worker, healthy)

    def _start_failed(
        self, name: str, exc: BaseException, request_id: str
    ) -> tuple[str, bool, str]:
        cause = str(exc) or type(exc).__name__  # a MemoryError has no message
        # Said once per function and kind of failure (a full disk fails every call, each
        # naming another partial folder): the offline counterpart of the INIT error Lambda
        # writes to the function's log group, where no log may be writable.
        kind = f"{type(exc).__name__}:{getattr(exc, 'errno', None)}"
        with self._lock:
            repeated = self._start_failures.get(name) == kind
            self._start_failures[name] = kind
        if not repeated:
            logger.warning("%s: the function's runtime could not start: %s", name, cause)
        return self._error(
            RUNTIME_START_ERROR,
            f"RequestId: {request_id} Error: the function's runtime could not start: {cause}",
            request_id,
        )

    @staticmethod
    def _error(error_type: str, message: str, request_id: str) -> tuple[str, bool, str]:
        payload = {"errorMessage": message, "errorType": error_type, "requestId": request_id}
        return json.dumps(payload), True, ""

    def _pool_for(self, function: Any) -> _Pool:
        layers = tuple(layer["Arn"] for layer in function.layers)
        env = {k: str(v) for k, v in (function.environment_vars or {}).items()}
        identity = json.dumps(
            [function.function_arn, function.code_sha_256, layers, env, function.handler],
            sort_keys=True,
        )
        key = f"{function.function_arn}|{hashlib.sha256(identity.encode()).hexdigest()}"
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                stale = [k for k in self._pools if k.startswith(function.function_arn + "|")]
                for old in stale:
                    self._pools.pop(old).close()
                pool = _Pool(lambda: self._spawn(function, layers, env), self.workers_per_function)
                self._pools[key] = pool
        return pool

    def _spawn(self, function: Any, layers: tuple[str, ...], env: dict[str, str]) -> _Worker:
        backend = lambda_models.lambda_backends[function.account_id][function.region]
        code_dir = _extract(
            function.code_bytes,
            self.work_dir / "functions" / f"{function.function_name}-{function.code_sha_256[:12]}",
        )
        python_path = [str(code_dir)]
        for arn in layers:
            layer = backend.layers_versions_by_arn(arn)
            if layer is None:
                raise RuntimeError(f"{function.function_name}: layer {arn} is not published")
            name = arn.split(":layer:", 1)[-1].replace(":", "-")
            layer_dir = _extract(layer.code_bytes, self.work_dir / "layers" / name)
            python_path.append(str(layer_dir / "python"))
        # The layer's third-party requirements are not vendored offline: they come from this
        # environment's site-packages, added after the code and layers as plain folders.
        # The worker starts with -S, so no .pth file runs: in particular not the editable
        # install's finder, which would hand a function this checkout's scones_core (or
        # scones) whenever its own zip and layer lack a module.
        python_path += [p for p in site.getsitepackages() if Path(p).is_dir()]
        if not all(Path(p).is_absolute() for p in python_path):
            raise RuntimeError(f"{function.function_name}: relative PYTHONPATH {python_path}")
        environment = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
        environment.update(
            {
                "AWS_REGION": function.region,
                "AWS_DEFAULT_REGION": function.region,
                "AWS_ACCESS_KEY_ID": "offline",
                "AWS_SECRET_ACCESS_KEY": "offline",
                "AWS_SESSION_TOKEN": "offline",
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.run_time}",
                "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.function_name}",
                "SCONES_FUNCTION_ARN": function.function_arn,
                "LAMBDA_TASK_ROOT": str(code_dir),
                "_HANDLER": function.handler,
                "PYTHONPATH": os.pathsep.join(python_path),
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        environment.update(env)
        environment.update(self.extra_env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{function.function_name}.log"
        with log_path.open("ab") as log:
            # Out of file descriptors (EMFILE) or memory, the pipe or the process cannot be
            # made: every descriptor made so far is closed again, or each failed start
            # would leak some and keep the process out of them.
            opened: list[int] = []
            try:
                request_r, request_w = os.pipe()
                opened += (request_r, request_w)
                response_r, response_w = os.pipe()
                opened += (response_r, response_w)
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-S",
                        str(_WORKER_SCRIPT),
                        function.handler,
                        str(request_r),
                        str(response_w),
                        str(log_path),
                        str(self.log_max_bytes),
                        str(self.log_backups),
                        # Not read by the worker: names the process in ps and profiles.
                        function.function_name,
                    ],
                    cwd=code_dir,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(request_r, response_w),
                )
            except BaseException:
                for descriptor in opened:
                    os.close(descriptor)
                raise
            os.close(request_r)
            os.close(response_w)
        return _Worker(
            process=process,
            requests=os.fdopen(request_w, "w", encoding="utf-8"),
            responses=os.fdopen(response_r, "r", encoding="utf-8"),
        )

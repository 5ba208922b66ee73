"""The offline stack's model endpoint in a process of its own.

Embedded in the stack's process, the model server shared one GIL with moto, the
Step Functions interpreter and the SQS poller: an invocation inside the workflow
took 4.4x as long as the same request to a standalone server. Here
the stack starts it like ``scones serve`` runs in production, as a separate
process:

``python -m scones.offline.model_process SETTINGS_JSON`` loads the model, serves
it on a loopback port and writes one line to its stdout, ``{"url": ...}``. Then it
reads commands from its stdin, one JSON line each, and answers each with a line:

* ``{"op": "flush"}``: write every buffered data-capture record now;
  the answer is ``{"ok": true, "flushed": N}``.

The end of its stdin is the order to stop: the server shuts down gracefully (the
capture writer writes what it holds) and the process exits. The stack's
``stop()`` closes the pipe and waits; a stack process that dies closes it too (the
kernel closes a dead process's pipes), so the model server never outlives it.
Injected faults go through the server's own ``/_faults`` route, as before.

A model server that dies while the stack runs (killed, out of memory, a crash) is
started again on the same address, as SageMaker replaces an instance that fails its
health check: the Lambda workers were given that address, and nothing else would ever
answer there. Each start counts only once it answers ``/ping``. One that keeps failing
(it dies within ``QUICK_EXIT_S`` of starting, or cannot start) is tried again after a
doubling delay, at most ``restarts`` times in a row, and given up on when the last of
those fails too (``restarts`` + 1 failures in a row), with one line
saying so: the stack's uploads then end ``FAILED`` ``EndpointUnavailable``, as on AWS
when an endpoint has no healthy instance. The address then answers every request with
503 ``ServiceUnavailable`` and that line (``_GivenUpAnswer``), so each record's reason
says why, not only that the endpoint could not be reached. A restarted server starts
with an empty capture buffer (what the dead one held is lost) and no injected faults.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 10.0
# A server that dies sooner than this after it started is one more failure of the same
# outage (a model that crashes at every start); one that ran longer starts the count again.
QUICK_EXIT_S = 60.0
# The wait before each new start, doubled per failure in a row, at most MAX_RESTART_DELAY_S.
RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 10.0
# Restarts in a row that may fail (die within QUICK_EXIT_S of starting, or not start); the
# failure after the last of them is the one the stack gives up on.
DEFAULT_RESTARTS = 3

logger = logging.getLogger(__name__)


class ModelProcessError(RuntimeError):
    """The model server process did not start or stopped answering; the message says why."""


def _import_roots() -> list[str]:
    """Where this process found ``scones`` and ``scones_core``: the child imports both."""
    import scones_core

    import scones

    return [str(Path(next(iter(m.__path__))).parent) for m in (scones, scones_core)]


def _settings_to_json(settings: Any) -> str:
    data = asdict(settings)
    data["model_dir"] = str(settings.model_dir)
    return json.dumps(data)


def _settings_from_json(text: str) -> Any:
    from scones.serving.server import ServerSettings

    data = json.loads(text)
    known = {f.name for f in fields(ServerSettings)}
    data = {k: v for k, v in data.items() if k in known}
    data["model_dir"] = Path(data["model_dir"])
    return ServerSettings(**data)


def exit_description(code: int | None) -> str:
    """How a process ended, as a person reads it: the signal's name, or the exit status."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _end(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """End its stdin (a graceful stop: capture is written), wait, kill if it hangs."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _read_line(process: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert process.stdout is not None
    stdout: IO[bytes] = process.stdout
    ready, _, _ = select.select([stdout], [], [], timeout_s)
    if not ready:
        raise ModelProcessError(f"the model server process did not answer in {timeout_s} s")
    return stdout.readline()


def _ping(url: str) -> None:
    """The health check SageMaker makes of a container before it routes traffic to it."""
    # Straight to the loopback address: a proxy the environment names has no route to it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/ping", timeout=PING_TIMEOUT_S) as response:
            response.read()
    except OSError as exc:  # urllib's HTTPError and URLError are OSErrors
        raise ModelProcessError(f"the model server at {url} does not answer /ping: {exc}") from exc


class _GivenUpAnswer(BaseHTTPRequestHandler):
    """What the address of a model server given up on answers: 503 ``ServiceUnavailable``
    in the SageMaker runtime's error shape, with the sentence that says why."""

    server: _GivenUpServer

    def _answer(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # read the request, so no reset
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"message": self.server.sentence}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "ServiceUnavailable")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Every request is the same answer: the stack said why once, at the give-up."""


class _GivenUpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sentence: str) -> None:
        self.sentence = sentence
        super().__init__(address, _GivenUpAnswer)


class ModelProcess:
    """Parent side: start, flush capture, stop (idempotent, and always reaps the child);
    between start and stop, a server that dies is started again (module docstring)."""

    def __init__(
        self,
        settings: Any,
        *,
        host: str,
        port: int,
        s3_endpoint_url: str | None,
        log_path: Path,
        restarts: int = DEFAULT_RESTARTS,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.s3_endpoint_url = s3_endpoint_url
        self.log_path = log_path
        self.max_failures = restarts
        self.url: str | None = None
        # How many times a server that died was started again, and, once it was given
        # up on, when and why (None while it is served or started again).
        self.restarts = 0
        self.given_up: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._starting: subprocess.Popen[bytes] | None = None  # a start not answering yet
        self._launched: subprocess.Popen[bytes] | None = None  # by launch(), for start()
        self._started_at = 0.0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._given_up_server: _GivenUpServer | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def launch(self) -> None:
        """Start the server's process without waiting for it: it imports and loads its
        model while the caller goes on; ``start`` then waits for it to answer."""
        self._stopping.clear()
        try:
            self._launched = self._launch()
        except BaseException:
            self.stop()
            raise

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        """The URL of a server that answers ``/ping``: the one ``launch`` started, else a
        new one; a start that fails leaves no process behind."""
        launched, self._launched = self._launched, None
        if launched is None:
            self._stopping.clear()
        try:
            process, self.url = self._ready(launched or self._launch(), timeout_s)
        except BaseException:
            self.stop()
            raise
        with self._lock:
            self._process = process
        # From now on the same address: the Lambda workers were given this one.
        self.port = urlsplit(self.url).port or self.port
        self._supervisor = threading.Thread(
            target=self._supervise, args=(process,), name="model-server-supervisor", daemon=True
        )
        self._supervisor.start()
        return self.url

    def _spawn(self, timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
        """A new model server process that answers ``/ping``, and its URL; a start that
        fails leaves no process behind."""
        return self._ready(self._launch(), timeout_s)

    def _launch(self) -> subprocess.Popen[bytes]:
        """A new model server process, starting (``_ready`` waits for it)."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([*_import_roots(), env.get("PYTHONPATH", "")]).strip(
            os.pathsep
        )
        config = {
            "settings": json.loads(_settings_to_json(self.settings)),
            "host": self.host,
            "port": self.port,
            "s3_endpoint_url": self.s3_endpoint_url,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._stopping.is_set():
                raise ModelProcessError("the model server is being stopped")
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "scones.offline.model_process", json.dumps(config)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                )
            self._starting = process
        return process

    def _ready(
        self, process: subprocess.Popen[bytes], timeout_s: float
    ) -> tuple[subprocess.Popen[bytes], str]:
        """``process`` once it answers ``/ping``, and its URL; ended if it does not."""
        try:
            line = _read_line(process, timeout_s)
            if not line:
                raise ModelProcessError(
                    f"the model server exited during startup (status {process.poll()}); "
                    f"see {self.log_path}:\n{self._log_tail()}"
                )
            answer = json.loads(line)
            if "url" not in answer:
                raise ModelProcessError(f"the model server could not start: {answer.get('error')}")
            url = str(answer["url"])
            _ping(url)
        except BaseException:
            _end(process, STOP_TIMEOUT_S)
            raise
        finally:
            with self._lock:
                self._starting = None
        self._started_at = time.monotonic()
        return process, url

    def _supervise(self, process: subprocess.Popen[bytes]) -> None:
        """Wait for the server to die; unless the stack is stopping it, start another."""
        failures = 0
        while True:
            code = process.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - self._started_at
            failures = failures + 1 if ran < QUICK_EXIT_S else 1
            logger.warning(
                "the model server (pid %d) %s after %.0f s; starting it again on %s",
                process.pid,
                exit_description(code),
                ran,
                self.url,
            )
            cause = f"it {exit_description(code)} {ran:.0f} s after it started"
            while True:
                if failures > self.max_failures:
                    self._give_up(failures, cause)
                    return
                delay = min(RESTART_DELAY_S * 2 ** (failures - 1), MAX_RESTART_DELAY_S)
                if self._stopping.wait(delay):
                    return
                try:
                    new_process, _ = self._spawn(STARTUP_TIMEOUT_S)
                # Its own refusal, a process that could not be made (no descriptors, no
                # memory), a first line that was no answer: one more failed start, whatever
                # was raised, or this thread would end and no one would say so.
                except Exception as exc:
                    if self._stopping.is_set():
                        return
                    cause = str(exc).splitlines()[0]
                    logger.warning("the model server could not start again: %s", cause)
                    failures += 1
                    continue
                break
            with self._lock:
                stopping = self._stopping.is_set()
                if not stopping:
                    self._process, process = new_process, new_process
                    self.restarts += 1
            if stopping:  # stop() ran while it started: it is this thread's to end
                _end(new_process, STOP_TIMEOUT_S)
                return
            logger.warning(
                "the model server is back on %s (pid %d; restarted %d time(s))",
                self.url,
                new_process.pid,
                self.restarts,
            )

    def _give_up(self, failures: int, cause: str) -> None:
        at = datetime.now(UTC).strftime("%H:%M:%S UTC")
        self.given_up = (
            f"it failed {failures} times in a row (the last: {cause}) and was given up on at "
            f"{at}: every invocation since then ended EndpointUnavailable"
        )
        logger.error(
            "the model server failed %d times in a row (the last: %s); not starting it "
            "again: uploads end FAILED (EndpointUnavailable) until the stack is started "
            "again with a model that runs (its log: %s)",
            failures,
            cause,
            self.log_path,
        )
        sentence = (
            f"the offline model server failed {failures} times in a row (the last: {cause}) "
            f"and was given up on at {at}; start the stack again with a model that runs "
            f"(its log: {self.log_path})"
        )
        try:
            server = _GivenUpServer((self.host, self.port), sentence)
        except OSError as exc:  # the address taken meanwhile: uploads see it unreachable
            logger.warning("could not answer on %s for the model server: %s", self.url, exc)
            return
        with self._lock:
            if self._stopping.is_set():
                server.server_close()
                return
            self._given_up_server = server
        threading.Thread(
            target=server.serve_forever, name="model-server-given-up", daemon=True
        ).start()

    def flush(self, timeout_s: float = 60.0) -> int:
        """Write the endpoint's buffered capture records now; return how many (none from a
        server given up on: what it held died with it)."""
        if self.given_up is not None:
            return 0
        answer = self._command({"op": "flush"}, timeout_s)
        return int(answer.get("flushed", 0))

    def _command(self, command: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.poll() is not None:
                raise ModelProcessError("the model server process is not running")
            try:
                process.stdin.write((json.dumps(command) + "\n").encode())
                process.stdin.flush()
            except OSError as exc:
                raise ModelProcessError(f"the model server process is gone: {exc}") from exc
            line = _read_line(process, timeout_s)
        if not line:
            raise ModelProcessError(f"no answer from the model server process to {command}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ModelProcessError(f"the model server could not {command['op']}: {answer}")
        return answer

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop it gracefully (``_end``), and any restart under way; none follows."""
        self._stopping.set()
        with self._lock:
            process, self._process = self._process, None
            starting, self._starting = self._starting, None
            launched, self._launched = self._launched, None
            given_up_server, self._given_up_server = self._given_up_server, None
        if given_up_server is not None:
            given_up_server.shutdown()
            given_up_server.server_close()
        if starting is not None:
            starting.kill()  # still loading its model: it holds no capture yet
        if launched is not None:  # no start() waits for it: reaped here
            launched.kill()
            _end(launched, timeout_s)
        if process is not None:
            _end(process, timeout_s)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout_s)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def main(argv: list[str]) -> int:
    from scones import heap

    heap.skip_collection_at_exit()  # the stack's stop waits for this process to end
    config = json.loads(argv[1])
    # Ctrl-C, the terminal closing (SIGHUP) and a SIGTERM to the process group or the
    # service's cgroup reach this process too: the stack decides when to stop (after the
    # running executions end, and it flushes the capture first). If the stack dies, even
    # by SIGKILL, stdin closes (as for the Lambda workers: lambda_worker.py).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # The protocol owns stdout; anything else printed goes to the log (stderr).
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    from scones.serving.server import ModelServer, build_app

    try:
        settings = _settings_from_json(json.dumps(config["settings"]))
        s3_client = None
        if settings.capture_destination and config.get("s3_endpoint_url"):
            from scones.offline.client import offline_session

            s3_client = offline_session().client("s3", endpoint_url=config["s3_endpoint_url"])
        app = build_app(settings, s3_client=s3_client)
        server = ModelServer(
            app,
            host=config["host"],
            port=int(config["port"]),
            header_timeout_s=settings.header_timeout_s,
        )
        url = server.start()
    except Exception as exc:  # the parent reports it and reads the log
        reply({"error": f"{type(exc).__name__}: {exc}"})
        raise
    reply({"url": url})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("op") == "flush":
                # Every production variant's capture (the endpoint may host several).
                flushed = int(app.state.endpoint.flush_captures())
                reply({"ok": True, "flushed": flushed})
            else:
                reply({"ok": False, "error": f"unknown command {command!r}"})
    finally:
        started = time.monotonic()
        server.stop()
        print(f"model server stopped in {time.monotonic() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

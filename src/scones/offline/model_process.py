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
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


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


class ModelProcess:
    """Parent side: start, flush capture, stop (idempotent, and always reaps the child)."""

    def __init__(
        self,
        settings: Any,
        *,
        host: str,
        port: int,
        s3_endpoint_url: str | None,
        log_path: Path,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.s3_endpoint_url = s3_endpoint_url
        self.log_path = log_path
        self.url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
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
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "scones.offline.model_process", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        try:
            line = self._read_line(timeout_s)
            if not line:
                raise ModelProcessError(
                    f"the model server exited during startup (status {self._process.poll()}); "
                    f"see {self.log_path}:\n{self._log_tail()}"
                )
            answer = json.loads(line)
            if "url" not in answer:
                raise ModelProcessError(f"the model server could not start: {answer.get('error')}")
            self.url = str(answer["url"])
        except BaseException:
            self.stop()
            raise
        return self.url

    def flush(self, timeout_s: float = 60.0) -> int:
        """Write the endpoint's buffered capture records now; return how many."""
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
            line = self._read_line(timeout_s)
        if not line:
            raise ModelProcessError(f"no answer from the model server process to {command}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ModelProcessError(f"the model server could not {command['op']}: {answer}")
        return answer

    def _read_line(self, timeout_s: float) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        stdout: IO[bytes] = self._process.stdout
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        if not ready:
            raise ModelProcessError(f"the model server process did not answer in {timeout_s} s")
        return stdout.readline()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End its stdin (a graceful stop: capture is written), wait, kill if it hangs."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
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

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def main(argv: list[str]) -> int:
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

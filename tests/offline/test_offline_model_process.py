"""The model server in its own process, and the speedups keeping records identical.

Each test starts its own stack (one per process at a time), so they are slower
than the shared-stack tests in ``test_offline_stack.py``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from scones.offline.stack import OfflineStack, StackOptions
from scones.offline.workflow_bench import process_tree
from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import PROJECT_ROOT

pytestmark = pytest.mark.xdist_group("offline-stack")

DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
FAST_RETRIES = {"RetryIntervalSeconds": "1", "RetryMaxDelaySeconds": "1", "RetryMaxAttempts": "2"}
# What differs between two runs of the same uploads: times, ids and measured durations.
VOLATILE = {
    "pk",
    "version_id",
    "delivery",  # a digest of pk (and, unversioned, the S3 sequencer)
    "event_time",
    "started_at",
    "recorded_at",
    "execution_arn",
    "serialize_ms",
    "inference_ms",
}


def _gone(pid: int) -> bool:
    """Exited (a zombie whose parent is gone counts as exited: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in {"Z", "X"}


def _wait_gone(pids: list[int], timeout_s: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if not _gone(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def test_the_model_server_is_its_own_process_and_stops_with_the_stack() -> None:
    stack = OfflineStack(StackOptions(enable_faults=True))
    stack.start()
    try:
        pid = stack.model_server_pid
        assert pid is not None and pid != os.getpid()
        assert pid in process_tree(os.getpid())
        # Faults are armed over HTTP, capture is flushed over the control pipe.
        assert stack.set_faults({"throttle": 1})["plan"]["throttle"] == 1
        assert stack.set_faults(None)["plan"]["throttle"] == 0
        assert stack.flush_capture() == 0
        api = stack.api()
        png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
        upload = api.upload_bytes("one.png", png, "image/png")
        api.wait_for_records([upload], timeout=120)
        children = [p for p in process_tree(os.getpid()) if p != os.getpid()]
        assert len(children) >= 3  # the model server and Lambda workers
    finally:
        stack.stop()
    assert stack.model_server_pid is None
    assert _wait_gone(children, timeout_s=1) == []  # stop() waited for every one


def test_no_process_outlives_a_killed_stack() -> None:
    """SIGKILL gives no chance to clean up: the children see their pipes close and exit."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from scones.offline.stack import OfflineStack, StackOptions
        stack = OfflineStack(StackOptions()).start()
        api = stack.api()
        png = sorted(Path(sys.argv[1]).glob("*/*.png"))[0].read_bytes()
        api.wait_for_records([api.upload_bytes("one.png", png, "image/png")], timeout=120)
        print("MODEL", stack.model_server_pid, flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(DATA)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = ""
        while not line.startswith("MODEL "):
            line = process.stdout.readline()
            assert line, "the stack process ended early"
        model_pid = int(line.split()[1])
        children = [p for p in process_tree(process.pid) if p != process.pid]
        assert model_pid in children and len(children) >= 4
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert _wait_gone(children) == []


def test_a_sigterm_to_the_whole_group_leaves_the_stop_to_the_stack() -> None:
    """timeout(1), ``kill -TERM -PGID`` and systemd (every process of the service's cgroup)
    send SIGTERM to the model server and the Lambda workers too. They stay up, so what the
    stack runs still ends as it would have (a dead endpoint turned it FAILED), until the
    stack stops them."""
    script = textwrap.dedent(
        """
        import signal, sys, time
        from pathlib import Path
        from scones.offline.stack import OfflineStack, StackOptions
        received = []
        signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
        stack = OfflineStack(StackOptions(overrides=dict(FAST_RETRIES))).start()
        api = stack.api()
        png = sorted(Path(sys.argv[1]).glob("*/*.png"))[0].read_bytes()
        api.wait_for_records([api.upload_bytes("before.png", png, "image/png")], timeout=120)
        print("UP", flush=True)
        while not received:
            time.sleep(0.05)
        records = api.wait_for_records([api.upload_bytes("after.png", png, "image/png")], 120)
        print("AFTER", *[record["status"] for record in records.values()], flush=True)
        stack.stop()
        """
    ).replace("FAST_RETRIES", repr(FAST_RETRIES))
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(DATA)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "UP\n", "the stack process ended early"
        children = [p for p in process_tree(process.pid) if p != process.pid]
        assert len(children) >= 3  # the model server and Lambda workers
        os.killpg(process.pid, signal.SIGTERM)
        after = process.stdout.readline().split()
        assert after[:1] == ["AFTER"], "the stack process ended early"
        assert after[1:] in (["ACCEPTED"], ["NEEDS_REVIEW"])
        assert [pid for pid in children if _gone(pid)] == []  # still up until the stop
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _wait_gone(children) == []


def _run_batch(speedups: bool, images: list[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
    options = StackOptions(enable_faults=True, overrides=FAST_RETRIES, moto_speedups=speedups)
    with OfflineStack(options) as stack:
        api = stack.api()
        # Two throttles: some images are retried and still classified.
        stack.set_faults({"throttle": 2})
        uploads = [api.upload_bytes(name, data, "image/png") for name, data in images]
        records = api.wait_for_records(uploads, timeout=300)
        # The endpoint down: retries run out, the records are FAILED.
        stack.set_faults({"unavailable": -1})
        failing = [api.upload_bytes(f"down-{i}.png", images[i][1], "image/png") for i in range(2)]
        records.update(api.wait_for_records(failing, timeout=300))
        stack.set_faults(None)
    return {
        str(record["key"]): {k: v for k, v in record.items() if k not in VOLATILE}
        for record in records.values()
    }


def test_the_speedups_give_the_same_records_as_raw_moto() -> None:
    files = sorted(DATA.glob("*/*.png"))[::97][:10]
    images = [(f"{i}-{path.name}", path.read_bytes()) for i, path in enumerate(files)]
    images.append(("not-an-image.png", b"this is not a picture"))
    from scones.offline.interpreter_caches import DirectLambdaClient

    before = DirectLambdaClient.total_direct_calls
    raw = _run_batch(False, images)
    assert DirectLambdaClient.total_direct_calls == before
    fast = _run_batch(True, images)
    # Serialize and classify for each image (and the retries): the in-process Invoke was used.
    assert DirectLambdaClient.total_direct_calls - before >= 2 * len(images)
    assert len(raw) == len(images) + 2
    assert {r["status"] for r in raw.values()} >= {"ACCEPTED", "REJECTED", "FAILED"}
    assert fast == raw


def _wait_for(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def test_a_model_server_that_dies_is_started_again_until_it_fails_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed (SIGKILL, as the OOM killer does), the model server was never started again:
    every later upload ended FAILED EndpointUnavailable, and nothing said why. Now it is
    started again on the same address; and one that cannot start (here its graph has gone
    bad on disk) is tried ``model_server_restarts`` times in a row, not forever: the uploads
    then end FAILED, one record each, and the stop says what happened. One stack for both:
    each start costs seconds."""
    caplog.set_level(logging.WARNING, logger="scones.offline.model_process")
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    options = StackOptions(
        model_dir=model, enable_faults=True, overrides=FAST_RETRIES, model_server_restarts=2
    )
    stack = OfflineStack(options).start()
    try:
        api = stack.api()
        png = sorted(DATA.glob("*/*.png"))[0].read_bytes()
        dead, url = stack.model_server_pid, stack.model_url
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        _wait_for(lambda: stack.model_server_pid not in (dead, None), "a new model server")
        assert _wait_gone([dead], timeout_s=1) == []  # reaped, not left a zombie
        assert stack.model_url == url  # the address the Lambda workers were given
        assert f"(pid {dead}) was killed by SIGKILL" in caplog.text
        assert f"the model server is back on {url}" in caplog.text
        # The new one serves what the stack asks of it: its fault route and the capture.
        assert stack.set_faults({"throttle": 1})["plan"]["throttle"] == 1
        stack.set_faults(None)
        assert stack.flush_capture() == 0
        records = api.wait_for_records([api.upload_bytes("after.png", png, "image/png")], 120)
        assert [r["status"] for r in records.values()] in (["ACCEPTED"], ["NEEDS_REVIEW"])

        (model / "model.onnx").write_bytes(b"not a graph any more")
        dead = stack.model_server_pid
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        _wait_for(lambda: "not starting it again" in caplog.text, "the stack giving up")
        said = [record.getMessage() for record in caplog.records]
        given_up = [line for line in said if "not starting it again" in line]
        assert len(given_up) == 1 and given_up[0].startswith(
            "the model server failed 3 times in a row (the last: the model server could not start: "
        )
        assert "uploads end FAILED (EndpointUnavailable)" in given_up[0]
        # Two quick deaths in a row, then one start that failed: no more tries, no spin.
        assert sum("could not start again" in line for line in said) == 1
        uploads = [api.upload_bytes(f"down-{i}.png", png, "image/png") for i in range(2)]
        records = api.wait_for_records(uploads, timeout=120)
        assert [r["status"] for r in records.values()] == ["FAILED", "FAILED"]
        assert {r["error_code"] for r in records.values()} == {"EndpointUnavailable"}
        # Each reason says why, not only that the endpoint could not be reached.
        assert all(
            "ServiceUnavailable: the offline model server failed 3 times in a row" in r["reason"]
            and "start the stack again with a model that runs" in r["reason"]
            for r in records.values()
        ), [r["reason"] for r in records.values()]
        assert len(api.records()) == 3  # one record per upload
        letters = [json.loads(message["Body"]) for message in api.dead_letters()]
        assert sorted(letter["object"]["key"] for letter in letters) == sorted(
            record["key"] for record in records.values()
        )
        assert stack.flush_capture() == 0  # what the dead server held is gone with it
        assert stack.model_server_pid == dead  # nothing started since
    finally:
        stack.stop()
    report = stack.model_server_report or ""
    assert report.startswith(
        "the model server died and was restarted 1 time(s); then it failed 3 times in a row"
    )
    assert "was given up on at " in report


def test_a_restart_that_fails_in_any_way_counts_as_a_failed_start(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new server whose first line is no JSON (or a process that cannot be made: no
    descriptors, no memory) raised past the supervisor, whose thread then died: no more
    restarts, and nothing said the server was given up on."""
    from scones.offline import model_process

    caplog.set_level(logging.WARNING, logger="scones.offline.model_process")
    stack = OfflineStack(StackOptions(model_server_restarts=1)).start()
    try:
        monkeypatch.setattr(model_process, "_read_line", lambda process, timeout_s: b"{\n")
        dead = stack.model_server_pid
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        _wait_for(lambda: "not starting it again" in caplog.text, "the stack giving up")
        assert "could not start again: Expecting property name" in caplog.text
        assert _wait_gone([dead], timeout_s=1) == []
    finally:
        stack.stop()
    assert "was given up on at " in (stack.model_server_report or "")


def _launches(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every model server process started from now on."""
    from scones.offline import model_process

    launched: list[subprocess.Popen[bytes]] = []
    launch = model_process.ModelProcess._launch

    def recording(self: model_process.ModelProcess) -> subprocess.Popen[bytes]:
        process = launch(self)
        launched.append(process)
        return process

    monkeypatch.setattr(model_process.ModelProcess, "_launch", recording)
    return launched


def test_the_model_server_loads_while_the_gaps_are_filled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Started only after the whole deployment, the model server's start (its imports and
    model, about a second) was waited for on top of it: it now starts once the stack's
    bucket exists, and the stack waits for it after moto's gaps are filled."""
    from scones.offline import gaps

    launched = _launches(monkeypatch)
    fill = gaps.fill
    running_during_fill: list[bool] = []

    def watched_fill(*args: Any, **kwargs: Any) -> None:
        running_during_fill.append(len(launched) == 1 and launched[0].poll() is None)
        fill(*args, **kwargs)

    monkeypatch.setattr(gaps, "fill", watched_fill)
    stack = OfflineStack(StackOptions()).start()
    try:
        assert running_during_fill == [True]
        assert stack.model_server_pid == launched[0].pid  # the one launched is the one serving
        assert stack.flush_capture() == 0
    finally:
        stack.stop()
    assert _wait_gone([launched[0].pid]) == []


def test_a_deployment_that_fails_after_the_model_server_started_leaves_no_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scones.offline import gaps

    launched = _launches(monkeypatch)
    failure = RuntimeError("moto could not resolve a value")

    def failing_fill(*args: Any, **kwargs: Any) -> None:
        raise failure

    monkeypatch.setattr(gaps, "fill", failing_fill)
    stack = OfflineStack(StackOptions())
    with pytest.raises(RuntimeError) as raised:
        stack.start()
    assert raised.value is failure  # the start's own error
    assert len(launched) == 1
    assert launched[0].returncode is not None  # ended and reaped by the stop
    assert not stack.work_dir.exists()
    assert stack.model_url == ""


def test_a_model_server_that_cannot_start_stops_the_stack_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scones.offline import model_process
    from scones.offline.stack import StackError

    launched = _launches(monkeypatch)
    monkeypatch.setattr(
        model_process, "_read_line", lambda process, timeout_s: b'{"error": "no graph"}\n'
    )
    stack = OfflineStack(StackOptions())
    with pytest.raises(StackError, match=r"^the model server could not start: no graph$"):
        stack.start()
    assert len(launched) == 1
    assert launched[0].returncode is not None
    assert not stack.work_dir.exists()

"""The ``scones`` stack commands as a user runs them: real processes, real output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from state_folder import use_state_folder
from stopped_command import run_stopped

from scones.template_params import PROJECT_ROOT

SAMPLES = PROJECT_ROOT / "samples"
# events/<name>.json is the sample event of this function (sam local invoke -e).
FUNCTION_OF_EVENT = {
    "start_workflow": "StartWorkflowFunction",
    "start_workflow_sns": "StartWorkflowFunction",
    "start_workflow_eventbridge": "StartWorkflowFunction",
    "serialize_image": "SerializeImageFunction",
    "classify_image": "ClassifyImageFunction",
    "monitor": "MonitorFunction",
    "backfill": "BackfillFunction",
    "retrain": "RetrainDatasetFunction",
    "retrain_judge": "RetrainJudgeFunction",
}
# The failure each sample event ends in on this stack; every other event succeeds. The
# retraining steps return their own failures as data ({"failure": {"Error", "Cause"}}).
# retrain: the stack has no gate set, so the dataset step refuses to train.
# retrain_judge: no training job ran, so there is no evaluation report to judge.
FAILURE_OF_EVENT = {
    "retrain": "DatasetError",
    "retrain_judge": "EvaluationReportError",
}
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli")]


def scones(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "COLUMNS": "200",
        "SCONES_STATE_DIR": str(cwd / ".scones"),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "scones.cli.main", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    for label in ("bicycle", "motorcycle"):
        (folder / label).mkdir(parents=True)
        for path in sorted((SAMPLES / label).glob("*.png"))[:2]:
            shutil.copy(path, folder / label / path.name)
    (folder / "scan.png").write_bytes(b"definitely not a picture")
    return folder


def test_run_prints_every_record_and_stores_them(small_folder: Path, tmp_path: Path) -> None:
    result = scones(
        "run",
        str(small_folder),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--keep",
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Starting a new Thread" not in out + result.stderr  # moto's print is silenced
    monitor_line = next(line for line in out.splitlines() if line.startswith("monitor:"))
    assert "None" not in monitor_line and "retraining=" in monitor_line
    # --keep: the work folder stays, with the function logs and the capture files.
    [work] = list((tmp_path / "out").glob("work-*"))
    assert f"work folder kept: {work}" in out.replace("\n", "")
    assert work.stat().st_mode & 0o777 == 0o700  # the capture files hold the uploads
    assert (work / "logs").is_dir() and any((work / "logs").glob("*.log"))
    assert len(list((work / "capture").rglob("*.jsonl"))) >= 1
    for path in small_folder.rglob("*.png"):
        assert path.name in out
    assert "REJECTED" in out and "NotAnImage" in out
    assert "5 uploads:" in out
    assert "accuracy against true labels" in out and "of 4" in out
    assert "time per stage" in out and "inference" in out
    assert "lives in memory" in out
    [saved] = list((tmp_path / "out").glob("records-scones-*.json"))
    assert f"records saved to {saved}" in out.replace("\n", "")
    saved_records = json.loads(saved.read_text())["records"]
    assert sorted(Path(r["key"]).name for r in saved_records) == sorted(
        p.name for p in small_folder.rglob("*.png")
    )
    [stored] = list((tmp_path / "out").glob("run-*.json"))
    document = json.loads(stored.read_text())
    records = {Path(r["key"]).name: r for r in document["records"]}
    assert len(records) == 5
    assert records["scan.png"]["status"] == "REJECTED"
    for path in small_folder.glob("*/*.png"):
        record = records[path.name]
        assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW")
        assert record["true_label"] == path.parent.name
        assert f"{record['confidence']:.3f}" in out
    assert document["summary"]["by_status"]["REJECTED"] == 1
    assert document["monitor"]["request_count"] == 4
    # Times as AWS writes them ($$.Execution.StartTime, $$.State.EnteredTime).
    aws_time = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z"
    for record in records.values():
        assert re.fullmatch(aws_time, record["started_at"]), record
        assert re.fullmatch(aws_time, record["recorded_at"]), record
    model = json.loads((PROJECT_ROOT / "models/bicycle-motorcycle/model.json").read_text())
    assert document["run"]["model"]["version"] == model["version"]
    report = stored.with_suffix(".html").read_text()
    assert "Confusion matrix" in report or "confusion matrix" in report
    assert report.count("<figure") == sum(1 for r in records.values() if r["status"] != "ACCEPTED")
    assert model["version"] in report and model["onnx_sha256"] in report
    assert document["run"]["started_at"] in report
    assert report.count('<tr class="') == len(records) and "5 uploads" in report


def test_run_reaches_its_stack_directly_whatever_proxy_the_environment_names(
    tmp_path: Path, proxy_environment: str
) -> None:
    """Every process of the stack (the CLI's clients, moto's interpreter, the Lambda
    workers, the model server writing capture) reaches loopback directly: a proxy
    cannot reach this machine's stack. The user's own NO_PROXY entries are kept."""
    os.environ["NO_PROXY"] = "corp.example"  # put back by proxy_environment
    folder = tmp_path / "uploads" / "bicycle"
    folder.mkdir(parents=True)
    shutil.copy(sorted((SAMPLES / "bicycle").glob("*.png"))[0], folder)
    result = scones("run", str(folder.parent), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 uploads: ACCEPTED 1 " in result.stdout, result.stdout
    # The monitor read the model server's capture, which it wrote into the stack's bucket.
    assert "request_count=1," in result.stdout, result.stdout


def test_run_ignores_the_users_aws_configuration(tmp_path: Path) -> None:
    """An offline run reaches no AWS: a profile that does not exist here, settings botocore
    cannot use and a config file it cannot parse are not its business. Unless the stack
    hides them, a missing profile fails the run, and AWS_RETRY_MODE=bogus leaves every
    execution hanging (moto's interpreter makes its clients from the environment)."""
    folder = tmp_path / "uploads" / "bicycle"
    folder.mkdir(parents=True)
    shutil.copy(sorted((SAMPLES / "bicycle").glob("*.png"))[0], folder)
    (tmp_path / "broken-config").write_text("[default\nregion =\n")
    hostile = {
        "AWS_PROFILE": "no-such-profile",
        "AWS_RETRY_MODE": "bogus",
        "AWS_MAX_ATTEMPTS": "abc",
        "AWS_CONFIG_FILE": str(tmp_path / "broken-config"),
        "AWS_DEFAULT_REGION": "mars-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    result = scones(
        "run", str(folder.parent), "--out", str(tmp_path / "out"), cwd=tmp_path, env=hostile
    )
    assert result.returncode == 0, result.stderr
    assert "1 uploads: ACCEPTED 1 " in result.stdout, result.stdout
    assert "request_count=1," in result.stdout, result.stdout


def test_up_classify_results_down(small_folder: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones")}
    up = subprocess.Popen(
        [sys.executable, "-m", "scones.cli.main", "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = tmp_path / ".scones" / "stack.json"
        deadline = time.monotonic() + 120
        while not state.exists():
            assert up.poll() is None, up.stderr.read() if up.stderr else ""
            assert time.monotonic() < deadline, "scones up did not come up"
            time.sleep(0.5)
        endpoints = json.loads(state.read_text())
        # Its state and work folder (function logs, capture) are its owner's only.
        assert state.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / ".scones").stat().st_mode & 0o777 == 0o700
        assert Path(endpoints["work_dir"]).stat().st_mode & 0o777 == 0o700

        again = scones("up", "--out", "other-out", cwd=tmp_path)
        assert again.returncode == 1 and "already running" in again.stderr
        assert not (tmp_path / "other-out").exists()  # a refused up makes nothing

        classified = scones("classify", str(small_folder / "bicycle"), "--json", cwd=tmp_path)
        assert classified.returncode == 0, classified.stderr
        rows = json.loads(classified.stdout)
        assert [Path(r["key"]).name for r in rows] == sorted(
            p.name for p in (small_folder / "bicycle").glob("*.png")
        )
        # A folder named after a label gives its files that true label, as in `scones run`.
        assert {r["true_label"] for r in rows} == {"bicycle"}

        listed = scones("results", "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        listed_records = json.loads(listed.stdout)
        # Every record the workflow wrote is as the layout says (records.record_problems).
        assert "unreadable" not in listed.stderr, listed.stderr
        assert {r["pk"] for r in listed_records} == {r["pk"] for r in rows}
        table = scones("results", cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        model = json.loads((PROJECT_ROOT / "models/bicycle-motorcycle/model.json").read_text())
        assert "recorded at (UTC)" in table.stdout and "model" in table.stdout
        # Each record names the model that judged it (the endpoint's CustomAttributes).
        assert {r["model_version"] for r in listed_records} == {model["version"]}
        assert table.stdout.count(model["version"]) >= len(rows)

        # `scones env` gives what any AWS tool needs to reach the stack.
        env_out = scones("env", cwd=tmp_path)
        assert env_out.returncode == 0, env_out.stderr
        exported = dict(
            line.removeprefix("export ").split("=", 1) for line in env_out.stdout.splitlines()
        )
        assert exported["AWS_ENDPOINT_URL"] == endpoints["endpoint_url"]
        assert exported["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == endpoints["model_url"]

        # `scones report --capture s3://...` reads the running stack, not real AWS.
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoints["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        deadline = time.monotonic() + 30  # the endpoint flushes its capture buffer every second
        while not s3.list_objects_v2(Bucket=endpoints["bucket"], Prefix="datacapture/")["KeyCount"]:
            assert time.monotonic() < deadline, "the endpoint wrote no capture file"
            time.sleep(0.2)
        capture = f"s3://{endpoints['bucket']}/datacapture"
        drawn = scones(
            "report", "--capture", capture, "--out", str(tmp_path / "t.png"), cwd=tmp_path
        )
        assert drawn.returncode == 0, drawn.stderr
        assert "from the offline stack" in drawn.stderr and (tmp_path / "t.png").is_file()

        # `scones invoke` runs each function's deployed zip and layer on its sample event.
        for event in sorted((PROJECT_ROOT / "events").glob("*.json")):
            function = FUNCTION_OF_EVENT[event.stem]
            invoked = scones("invoke", function, "-e", str(event), cwd=tmp_path)
            assert "START RequestId:" in invoked.stderr and "END RequestId:" in invoked.stderr
            result = json.loads(invoked.stdout)
            assert isinstance(result, dict), (event, result)
            assert invoked.returncode == 0, (event.stem, result, invoked.stderr)
            assert "errorType" not in result, (event.stem, result)
            expected_failure = FAILURE_OF_EVENT.get(event.stem)
            if expected_failure is None:
                assert "failure" not in result, (event.stem, result)
            else:
                assert result["failure"]["Error"] == expected_failure, (event.stem, result)
                assert result["failure"]["Cause"], (event.stem, result)
        # Options for a stack `scones invoke` would start are refused, not ignored.
        event = PROJECT_ROOT / "events" / "classify_image.json"
        ignored = scones(
            "invoke", "ClassifyImageFunction", "-e", str(event), "--model", "/x", "--port", "5",
            cwd=tmp_path,
        )  # fmt: skip
        assert ignored.returncode == 2
        assert "--model and --port apply to a stack that `scones invoke` starts" in ignored.stderr

        assert s3.list_objects_v2(Bucket=endpoints["bucket"], Prefix="incoming/")["KeyCount"] == 2

        # Ctrl-C halfway through a classify's uploads names the files it did not send.
        camera = tmp_path / "camera"
        camera.mkdir()
        for n in range(300):
            shutil.copy(next((small_folder / "bicycle").glob("*.png")), camera / f"c{n:03d}.png")
        classify = subprocess.Popen(
            [sys.executable, "-m", "scones.cli.main", "classify", str(camera)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not s3.list_objects_v2(Bucket=endpoints["bucket"], Prefix="incoming/c")[
                "KeyCount"
            ]:
                assert time.monotonic() < deadline and classify.poll() is None, "no upload"
                time.sleep(0.05)
            classify.send_signal(signal.SIGINT)
            _, stopped = classify.communicate(timeout=60)
        finally:
            if classify.poll() is None:
                classify.kill()
                classify.wait()
        assert classify.returncode == 130, stopped
        said = re.search(r"(\d+) of 300 file\(s\) were not uploaded", stopped.replace("\n", ""))
        assert said, stopped
        in_bucket = s3.list_objects_v2(Bucket=endpoints["bucket"], Prefix="incoming/c")
        assert in_bucket["KeyCount"] + int(said.group(1)) in (300, 301), stopped

        # A model server that dies is started again where the stack's functions call it.
        dead = _model_servers(up.pid)
        assert len(dead) == 1
        os.kill(dead[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (_model_servers(up.pid) not in ([], dead) and _pings(endpoints["model_url"])):
            assert time.monotonic() < deadline, "no model server answers again"
            time.sleep(0.2)

        down = scones("down", cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert "the model server died and was restarted 1 time(s)" in down.stdout
        assert up.wait(timeout=30) == 0
        assert not state.exists()
        printed = up.stdout.read() if up.stdout else ""
        logged = up.stderr.read() if up.stderr else ""
        assert f"export AWS_ENDPOINT_URL={endpoints['endpoint_url']}" in printed
        assert f"export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={endpoints['model_url']}" in printed
        assert f"the model server (pid {dead[0]}) was killed by SIGKILL" in logged
        assert f"the model server is back on {endpoints['model_url']}" in logged
        assert "the model server died and was restarted 1 time(s)" in printed
        assert "Starting a new Thread" not in printed + logged
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=30)


def _model_servers(pid: int) -> list[int]:
    """The model server processes among ``pid``'s descendants."""
    from scones.offline.workflow_bench import process_tree

    found = []
    for child in process_tree(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"scones.offline.model_process" in command:
            found.append(child)
    return found


def _pings(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# ``scones up`` with its stop signals as a terminal leaves them. A suite started under
# ``nohup`` or in the background of a script passes SIGHUP or SIGINT ignored to its
# children (an ignored signal stays ignored across exec), and ``scones up`` then keeps
# it ignored, as nohup asks.
SCONES_WITH_STOP_SIGNALS_AT_DEFAULT = (
    "import runpy, signal, sys; "
    "signal.signal(signal.SIGHUP, signal.SIG_DFL); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'scones'; runpy.run_module('scones.cli.main', run_name='__main__')"
)


def start_up(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``scones up`` as a real process; returns it once its state file exists."""
    env = {**os.environ, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones")}
    up = subprocess.Popen(
        [sys.executable, "-c", SCONES_WITH_STOP_SIGNALS_AT_DEFAULT, "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = tmp_path / ".scones" / "stack.json"
    deadline = time.monotonic() + 120
    while not state.exists():
        if up.poll() is not None:
            raise AssertionError(f"scones up exited: {up.stderr.read() if up.stderr else ''}")
        assert time.monotonic() < deadline, "scones up did not come up"
        time.sleep(0.2)
    return up, state


def test_up_saves_every_record_when_it_stops_and_stops_every_time(
    small_folder: Path, tmp_path: Path
) -> None:
    """`scones down` (a SIGTERM from another process), Ctrl-C and SIGHUP (the terminal
    closed), one after the other: each stop is prompt and leaves a records file with one
    record per uploaded object (version). A second `scones up` meanwhile is refused, not
    started beside it."""
    saved: list[Path] = []
    for how in ("down", "SIGINT", "SIGHUP"):
        up, state = start_up(tmp_path)
        try:
            classified = scones("classify", str(small_folder), "--json", cwd=tmp_path)
            assert classified.returncode == 0, classified.stderr
            rows = json.loads(classified.stdout)
            assert len(rows) == 5
            if how == "down":
                second = scones("up", cwd=tmp_path, timeout=60)
                assert second.returncode == 1, second.stderr
                assert "already running (or starting)" in second.stderr

            before = set((tmp_path / "out").glob("records-*.json"))
            if how == "down":
                down = scones("down", cwd=tmp_path, timeout=60)
                assert down.returncode == 0, down.stderr
            else:
                up.send_signal(getattr(signal, how))
            # Deterministic: the stop signal is seen within a poll, whichever thread gets it.
            assert up.wait(timeout=30) == 0, f"{how}: {up.stderr.read() if up.stderr else ''}"
            out = up.stdout.read() if up.stdout else ""
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()

        [path] = set((tmp_path / "out").glob("records-*.json")) - before
        saved.append(path)
        assert "lives in memory" in out
        assert f"records saved to {path.relative_to(tmp_path)}" in out.replace("\n", "")
        if how == "down":  # as a path that works from any folder `scones down` runs in
            assert f"records saved to {path.resolve()}" in down.stdout
        assert not state.exists(), how
        document = json.loads(path.read_text())
        records = document["records"]
        # Every object, once; versioned keys (<bucket>/<key>#<versionId>) from earlier
        # rounds are gone with the stack that held them.
        assert sorted(r["pk"] for r in records) == sorted(r["pk"] for r in rows), how
        assert document["count"] == len(records) == 5
        for record in records:
            assert record["version_id"] not in ("", "null")
            assert record["pk"].endswith(f"#{record['version_id']}")
    assert len(set(saved)) == 3


def test_a_stop_signal_delivered_to_another_thread_is_seen() -> None:
    """The hang of `scones up` after SIGTERM: a process-wide signal may land on any thread.
    A main thread blocked in Event.wait() then never runs the handler; polling does."""
    import threading

    from scones.cli.up import wait_for_signal

    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    other = threading.Thread(target=time.sleep, args=(3,), daemon=True)
    other.start()
    try:
        threading.Timer(0.2, signal.pthread_kill, (other.ident, signal.SIGUSR1)).start()
        started = time.monotonic()
        assert wait_for_signal(received, poll_seconds=0.05) == signal.SIGUSR1
        assert time.monotonic() - started < 2
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["run", "no/such/folder"], "no/such/folder: no such file or folder", 2),
        (["run", "--param", "Threshold=0.5"], "template.yaml has no such parameter", 2),
        (["run", "--param", "oops"], "expected NAME=VALUE", 2),
        # asked correctly, but there is nothing to do it with: a failure, not a usage error
        (["classify", "x.png"], "no offline stack is running", 1),
        (["results"], "no offline stack is running", 1),
        (["down"], "no offline stack is running", 1),
    ],
)
def test_clear_errors_and_exit_code(
    tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    result = scones(*args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--port", "--model-port"])
def test_a_port_in_use_is_named(tmp_path: Path, option: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = scones("run", option, str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{option} {port}" in result.stderr and "already in use" in result.stderr
    assert "has no attribute" not in result.stderr
    # Said for `scones run` as for `scones up`: not "is scones up already running?".
    assert "another program holds it, a `scones up` perhaps" in result.stderr
    assert result.stderr.count("0 picks a free") == 1  # one piece of advice, said once


def test_one_port_for_both_servers_is_named(tmp_path: Path) -> None:
    result = scones("run", "--port", "45123", "--model-port", "45123", cwd=tmp_path)
    assert result.returncode == 1
    assert "--port and --model-port are both 45123" in result.stderr, result.stderr


def _run_stopped(
    folder: Path, tmp_path: Path, line: str, stop: signal.Signals, after_s: float = 0.0
) -> tuple[int, str, str]:
    """``scones run folder``, sent ``stop`` ``after_s`` after it prints ``line``: its exit
    status, standard output (from ``line`` on) and standard error."""
    env = {**os.environ, "COLUMNS": "400", "SCONES_STATE_DIR": str(tmp_path / ".scones")}
    argv = ["run", str(folder), "--no-progress"]
    return run_stopped(argv, after=line, stop=stop, env=env, cwd=tmp_path, after_s=after_s)


def test_run_stopped_by_sigterm_saves_its_records_like_ctrl_c(
    small_folder: Path, tmp_path: Path
) -> None:
    """A service manager's SIGTERM (or a closed terminal's SIGHUP) mid-run stops the stack
    and saves what was recorded, as Ctrl-C does; no empty report file is left behind."""
    returncode, out, err = _run_stopped(small_folder, tmp_path, "stack up in", signal.SIGTERM)
    assert returncode == 130, err
    assert "records saved to out/records-" in out.replace("\n", "") and "interrupted" in err
    assert list((tmp_path / "out").glob("records-*.json"))
    assert not list((tmp_path / "out").glob("run-*.json"))  # the reserved name is released


def test_a_run_interrupted_while_uploading_accounts_for_every_file(tmp_path: Path) -> None:
    """Ctrl-C halfway through the uploads: what reached the bucket is recorded or named as
    unrecorded in the records file, and the files not sent are named on the way out, so
    every file of the folder is accounted for."""
    folder = tmp_path / "camera"
    folder.mkdir()
    picture = (SAMPLES / "bicycle").glob("*.png").__next__().read_bytes()
    names = [f"img-{n:04d}.png" for n in range(600)]
    for name in names:
        (folder / name).write_bytes(picture)
    # Half a second after the uploads begin: some are in the bucket, most still to send.
    returncode, out, err = _run_stopped(
        folder, tmp_path, "uploading 600 file(s)", signal.SIGINT, after_s=0.5
    )
    assert returncode == 130, err
    said = re.search(r"(\d+) of 600 file\(s\) were not uploaded \(interrupted; the first was "
                     r"being sent and may have reached the stack, whose records then name "
                     r"it\): \S*/(img-\d+\.png),", out.replace("\n", ""))  # fmt: skip
    assert said, out
    not_sent, first_not_sent = int(said.group(1)), said.group(2)
    assert 0 < not_sent < 600 and first_not_sent == names[600 - not_sent]
    [saved] = (tmp_path / "out").glob("records-*.json")
    document = json.loads(saved.read_text())
    in_bucket = {r["key"] for r in document["records"]} | {u["key"] for u in document["unrecorded"]}
    # What reached the bucket is the files before the first not sent, and perhaps that one.
    sent = {f"incoming/{name}" for name in names[: 600 - not_sent]}
    assert in_bucket - sent <= {f"incoming/{first_not_sent}"}
    assert sent <= in_bucket


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_stack_starts(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("x")
    result = scones("run", "--out", str(tmp_path / "a-file" / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "cannot write there" in result.stderr and "Traceback" not in result.stderr
    assert "stack up in" not in result.stdout  # refused up front, not after a whole run


def test_runs_started_in_the_same_second_get_their_own_report_names(tmp_path: Path) -> None:
    from scones.cli.run import _drop_if_empty, _reserve_stamp

    first = _reserve_stamp(tmp_path, "20261202-072622")
    second = _reserve_stamp(tmp_path, "20261202-072622")
    (tmp_path / "work-20261202-072622-3").mkdir()  # a kept work folder of a third run
    third = _reserve_stamp(tmp_path, "20261202-072622")
    assert (first, second, third) == ("20261202-072622", "20261202-072622-2", "20261202-072622-4")
    _drop_if_empty(tmp_path / f"run-{second}.json")
    assert not (tmp_path / f"run-{second}.json").exists()
    assert (tmp_path / f"run-{first}.json").exists()


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = scones("run", str(tmp_path / "empty"), cwd=tmp_path)
    assert result.returncode == 2 and "no files found" in result.stderr


def _lock_held(lock: Path) -> bool:
    """Whether a process holds ``lock`` (the `scones up` lock), as `scones up` takes it."""
    import fcntl

    try:
        with lock.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False


def test_down_while_up_is_still_starting_stops_the_starting_stack(tmp_path: Path) -> None:
    """`scones up & ...; scones down` in a script: the stack has no state file while it
    starts. `scones down` said no stack was running (and `scones up` that one was), and the
    first stack came up and kept running."""
    env = {**os.environ, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones")}
    up = subprocess.Popen(
        [sys.executable, "-c", SCONES_WITH_STOP_SIGNALS_AT_DEFAULT, "up"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    state, lock = tmp_path / ".scones" / "stack.json", tmp_path / ".scones" / "up.lock"
    try:
        deadline = time.monotonic() + 60
        while not _lock_held(lock):
            assert up.poll() is None and time.monotonic() < deadline, "scones up did not start"
            time.sleep(0.01)
        assert not state.exists()  # deploying the template takes seconds
        down = scones("down", cwd=tmp_path, timeout=120)
        assert down.returncode == 0, down.stderr
        assert f"a `scones up` (pid {up.pid}) is still starting" in down.stdout
        assert f"offline stack (pid {up.pid}) stopped" in down.stdout
        assert up.poll() is not None  # stopped, as `scones down` said
    finally:
        if up.poll() is None:
            up.kill()
        said = up.communicate(timeout=30)[1]
    # Not killed by the signal: it says it stopped before serving.
    assert up.returncode == 128 + signal.SIGTERM
    assert "scones up: stopped (SIGTERM) before the offline stack came up" in said
    assert not state.exists() and not _lock_held(lock)


def test_a_stop_the_moment_up_takes_its_lock_is_said_not_fatal(tmp_path: Path) -> None:
    """`scones down` signals a `scones up` as soon as its lock names it, which is before
    the model is checked and the stack's modules load (a second or more): a handler
    installed only for the start let that signal kill it without a word."""
    env = {**os.environ, "COLUMNS": "200", "SCONES_STATE_DIR": str(tmp_path / ".scones")}
    up = subprocess.Popen(
        [sys.executable, "-c", SCONES_WITH_STOP_SIGNALS_AT_DEFAULT, "up"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = tmp_path / ".scones" / "up.lock"
    try:
        deadline = time.monotonic() + 60
        while not _lock_held(lock):
            assert up.poll() is None and time.monotonic() < deadline, "scones up did not start"
            time.sleep(0.005)
        up.send_signal(signal.SIGTERM)
        said = up.communicate(timeout=60)[1]
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate(timeout=30)
    assert up.returncode == 128 + signal.SIGTERM, said
    assert "scones up: stopped (SIGTERM) before the offline stack came up" in said
    assert not _lock_held(lock) and not (tmp_path / ".scones" / "stack.json").exists()


def test_down_while_up_is_ending_waits_for_it_and_says_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between removing its state file and letting go of the lock, a stopping `scones up`
    still names itself in up.lock: `scones down` then must not call it starting, nor
    signal it, but wait for it and report its stop."""
    import scones.cli.down
    from scones.cli.main import main

    stack_state = use_state_folder(monkeypatch, tmp_path / ".scones")
    # It ends on its own once its stdin closes: a second after `scones down` found it
    # holding the lock, however long a loaded machine (or a garbage collection) took
    # to get there.
    ending = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    assert ending.stdin is not None
    ends = threading.Timer(1.0, ending.stdin.close)
    found = scones.cli.down.starting_up

    def found_then_ends() -> int | None:
        holder = found()
        ends.start()
        return holder

    monkeypatch.setattr(scones.cli.down, "starting_up", found_then_ends)
    try:
        stack_state.private_folder(stack_state.STATE_DIR, elsewhere="-")
        holder = f"{ending.pid} {stack_state.process_started(ending.pid) or ''}\n"
        stack_state.UP_LOCK_FILE.write_text(holder)
        stack_state.write_stopped(ending.pid, None, None)
        assert main(["down", "--timeout", "20"]) == 0
    finally:
        if ends.is_alive():
            ends.join(timeout=20)
        if ending.stdin is not None and not ending.stdin.closed:
            ending.stdin.close()
        ending.wait(timeout=20)
    said = capsys.readouterr().out
    assert "still starting" not in said and f"offline stack (pid {ending.pid}) stopped" in said
    assert ending.returncode == 0  # waited for, not sent SIGTERM


@pytest.mark.parametrize("proxy", [False, True], ids=["no-proxy", "proxy-named"])
def test_classify_says_the_stack_stopped_and_how_many_uploads_it_sent(
    small_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
    proxy: bool,
) -> None:
    """A stack stopped while `scones classify` sent its files: botocore's NoSuchBucket (the
    emptied emulator) or a refused connection said nothing of the stop. With a proxy named
    by the user's environment, the uploads still reach the stack on loopback directly
    (botocore sent them to the proxy: ProxyConnectionError)."""
    from scones.cli.main import main
    from scones.offline.client import StackClient, StackEndpoints, Upload
    from scones.offline.moto_guard import guarded_moto_server

    folder = tmp_path / ".scones"
    stack_state = use_state_folder(monkeypatch, folder)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a 503 is retried otherwise
    moto = guarded_moto_server("127.0.0.1", 0)
    moto.start()
    try:
        endpoints = StackEndpoints(
            endpoint_url="http://{}:{}".format(*moto.get_host_and_port()),
            model_url="http://127.0.0.1:9",
            bucket="images",
            incoming_prefix="incoming/",
            table="records",
            state_machine_arn="arn",
            dead_letter_queue_url="q",
            monitor_function="m",
        )
        StackClient(endpoints).client("s3").create_bucket(Bucket="images")
        stack_state.write_state(endpoints, os.getpid(), tmp_path)
        if proxy:
            request.getfixturevalue("proxy_environment")
        upload = StackClient.upload_file

        def stop_after_the_first(self: StackClient, path: Path, name: str) -> Upload:
            sent = upload(self, path, name)
            moto.close_door(5)  # the stack starts stopping
            return sent

        monkeypatch.setattr(StackClient, "upload_file", stop_after_the_first)
        code = main(["classify", str(small_folder)])
    finally:
        moto.stop()
    assert code == 1
    err = capsys.readouterr().err
    assert "scones: error: the stack stopped while classifying: 1 of 5 uploads sent" in err, err

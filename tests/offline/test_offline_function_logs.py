"""Each function's log file on the offline stack is bounded, however long the stack runs.

``scones up`` is held open for days; every invocation appends to WORK_DIR/logs/FUNCTION.log.
The worker rotates the file by size (``lambda_worker.RotatingLog``): FUNCTION.log holds the
newest lines, FUNCTION.log.1 ... .N the older ones, and nothing beyond is kept. Here a small
limit makes the real workers of a deployed function, several at once, rotate many times.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scones.offline import gaps
from scones.offline.lambda_runtime import FUNCTION_LOG_BACKUPS, FUNCTION_LOG_MAX_BYTES
from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import PROJECT_ROOT
from tests.offline.probe_function import deploy_probe

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("function-log-stack")]

DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
FAST_RETRIES = {"RetryIntervalSeconds": "1", "RetryMaxDelaySeconds": "1", "RetryMaxAttempts": "2"}
LIMIT = 16 * 1024
BACKUPS = 2
WORKERS = 4
LINES = 10
# Each invocation prints LINES lines naming it, beside the classify function's code.
PROBE = """
def handler(event, context):
    for line in range(event["lines"]):
        print(f"probe {event['n']} line {line} " + "x" * 200)
    return {"n": event["n"]}
"""
PROBE_LINE = re.compile(r"^probe (\d+) line (\d+) x{200}$")


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    options = StackOptions(
        overrides={**FAST_RETRIES, "LogLevel": "INFO"},  # a line per image per function
        workers_per_function=WORKERS,
        function_log_max_bytes=LIMIT,
        function_log_backups=BACKUPS,
    )
    with OfflineStack(options) as running:
        yield running


def log_files(stack: OfflineStack, name: str) -> dict[str, Path]:
    return {path.name: path for path in (stack.work_dir / "logs").glob(f"{name}.log*")}


def test_a_functions_log_is_rotated_at_its_limit_and_keeps_whole_invocations(
    stack: OfflineStack,
) -> None:
    name = deploy_probe(stack, "ClassifyImageFunction", PROBE, "probe-log-rotation")
    lam = stack.client("lambda")

    def invoke(n: int) -> None:
        response = lam.invoke(FunctionName=name, Payload=json.dumps({"n": n, "lines": LINES}))
        assert json.loads(response["Payload"].read()) == {"n": n}

    # About 2.3 KB an invocation, 40 times the limit in all, from every worker at once.
    with ThreadPoolExecutor(2 * WORKERS) as pool:
        list(pool.map(invoke, range(300)))
    invoke(300)  # the newest invocation, alone

    files = log_files(stack, name)
    assert set(files) == {f"{name}.log", f"{name}.log.1", f"{name}.log.2"}
    # A worker rotates before an invocation, so a file passes the limit by at most what the
    # invocations in flight (one a worker) write after the last look.
    per_invocation = LINES * len(f"probe 300 line 9 {'x' * 200}\n") + 200
    for path in files.values():
        assert path.stat().st_size <= LIMIT + WORKERS * per_invocation, path
    # The older files were renamed once full: the history kept is the limit's worth each.
    for backup in (f"{name}.log.1", f"{name}.log.2"):
        assert files[backup].stat().st_size >= LIMIT
    # Every kept invocation is whole, in one file: a rotation never splits or drops lines.
    where: dict[int, set[str]] = defaultdict(set)
    count: dict[int, int] = defaultdict(int)
    for file_name, path in files.items():
        for line in path.read_text().splitlines():
            if match := PROBE_LINE.match(line):
                where[int(match[1])].add(file_name)
                count[int(match[1])] += 1
            else:
                assert line.startswith(("START RequestId: ", "END RequestId: ")), line
    assert all(len(names) == 1 for names in where.values()), where
    assert all(lines == LINES for lines in count.values()), count
    # The newest lines are where a person looks first.
    assert where[300] == {f"{name}.log"}
    assert 0 not in where  # the oldest went with the file dropped


def test_uploads_go_through_while_the_per_image_functions_logs_rotate(
    stack: OfflineStack,
) -> None:
    images = sorted(DATA.glob("*/*.png"))[:60]
    api = stack.api()
    uploads = api.upload_files(images, key_prefix="rotation/")
    records = api.wait_for_records(uploads, timeout=180)
    assert len(records) == len(images)
    assert {record["status"] for record in records.values()} <= {"ACCEPTED", "NEEDS_REVIEW"}
    rotated = 0
    for logical_id in ("StartWorkflowFunction", "SerializeImageFunction"):
        name = stack.function_name(logical_id)
        files = log_files(stack, name)
        assert set(files) <= {f"{name}.log", f"{name}.log.1", f"{name}.log.2"}
        assert f"{name}.log" in files
        rotated += f"{name}.log.1" in files
    assert rotated, "no per-image function wrote past the limit: raise the uploads"


# Short lines, many of them: the gap between a line's text and its newline comes often.
PRINTER = """
def handler(event, context):
    for line in range(event["lines"]):
        print(f"line {event['n']} {line}")
"""
PRINTER_LINE = re.compile(r"^line \d+ \d+$")


def test_lines_printed_by_several_workers_at_once_stay_whole(stack: OfflineStack) -> None:
    """``print`` writes a line's text and its newline apart; the workers sharing the file
    must still never run two lines into one."""
    name = deploy_probe(stack, "ClassifyImageFunction", PRINTER, "probe-log-lines")
    lam = stack.client("lambda")

    def invoke(n: int) -> None:
        lam.invoke(FunctionName=name, Payload=json.dumps({"n": n, "lines": 3000}))

    # Every worker printing at the same time.
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(invoke, range(2 * WORKERS)))
    lines = [
        line for path in log_files(stack, name).values() for line in path.read_text().splitlines()
    ]
    assert len(lines) > 3000
    broken = [
        line
        for line in lines
        if not PRINTER_LINE.match(line) and not line.startswith(("START RequestId: ", "END "))
    ]
    assert not broken, broken[:5]


def test_the_documented_log_limits_are_the_ones_the_stack_uses() -> None:
    said = (
        f"rotated at {FUNCTION_LOG_MAX_BYTES // 2**20} MB, {FUNCTION_LOG_BACKUPS} older files kept"
    )
    assert said in (PROJECT_ROOT / "docs" / "offline.md").read_text()
    logging_gap = next(gap for gap in gaps.GAPS if gap.name == "function logging config")
    assert said in logging_gap.why


def test_a_worker_whose_input_ends_exits_without_teardown_its_output_logged(
    tmp_path: Path,
) -> None:
    """The stop closes each worker's requests: the worker then ends as Lambda ends an
    environment, without the interpreter's teardown (no atexit hook runs), with all it
    wrote in the log."""
    import os
    import subprocess
    import sys

    from scones.offline.lambda_runtime import _WORKER_SCRIPT

    (tmp_path / "app.py").write_text(
        "import atexit, sys\n"
        "atexit.register(lambda: open('teardown-ran', 'w').close())\n"
        "def handler(event, context):\n"
        "    sys.stdout.write('half a line')\n"
        "    return event\n"
    )
    log = tmp_path / "function.log"
    request_r, request_w = os.pipe()
    response_r, response_w = os.pipe()
    pipes = [str(request_r), str(response_w)]
    worker = subprocess.Popen(
        [sys.executable, "-S", str(_WORKER_SCRIPT), "app.handler", *pipes, str(log), "9999", "1"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        pass_fds=(request_r, response_w),
    )
    os.close(request_r)
    os.close(response_w)
    with os.fdopen(request_w, "w") as requests, os.fdopen(response_r) as responses:
        assert json.loads(responses.readline()) == {"init": "done"}
        requests.write(json.dumps({"event": {"n": 1}, "deadline_ms": 1e15}) + "\n")
        requests.flush()
        assert json.loads(responses.readline())["payload"] == {"n": 1}
    assert worker.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("START RequestId: ")
    assert lines[1].startswith("half a lineEND RequestId: ")
    assert not (tmp_path / "teardown-ran").exists()  # no interpreter teardown

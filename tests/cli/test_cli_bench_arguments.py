"""What the benchmarks and ``scones cost`` refuse before any work: a bad value, file or
output path is one ``scones: error:`` line naming it, never a traceback, and never after
the offline stack started or a benchmark ran. The heavy entry points fail the test if
they are reached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import pytest

from scones.cli.main import main
from scones.template_params import PROJECT_ROOT

HUGE = "1" + "0" * 30


def _scones(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of the CLI, argparse's own refusals included."""
    try:
        code = main(argv)
    except SystemExit as exited:
        code = int(exited.code or 0)
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return code, error


def _never(what: str) -> Any:
    def reached(*_: Any, **__: Any) -> NoReturn:
        pytest.fail(f"{what} was reached")

    return reached


@pytest.fixture
def no_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every benchmark's expensive step fails the test."""
    from scones.cli import bench_capture, bench_imports, bench_memory, bench_review
    from scones.cli.torch_free import import_without_training
    from scones.costs import measure
    from scones.offline import workflow_bench
    from scones.offline.stack import OfflineStack
    from scones.serving import bench as server_bench

    model_bench = import_without_training("scones.model.bench")
    monkeypatch.setattr(server_bench, "run_benchmark", _never("the server benchmark"))
    monkeypatch.setattr(server_bench, "ServerProcess", _never("the model server"))
    monkeypatch.setattr(OfflineStack, "start", _never("the offline stack"))
    monkeypatch.setattr(workflow_bench, "run_benchmark", _never("the workflow benchmark"))
    monkeypatch.setattr(measure, "run_measurement", _never("the handlers measurement"))
    monkeypatch.setattr(bench_memory, "_gradient", _never("the memory benchmark's images"))
    monkeypatch.setattr(bench_review, "_uploads", _never("the review benchmark's uploads"))
    monkeypatch.setattr(bench_capture, "_lines", _never("the capture files"))
    monkeypatch.setattr(bench_imports.subprocess, "run", _never("a subprocess"))
    monkeypatch.setattr(model_bench, "run_model_bench", _never("the model benchmark"))


def test_an_image_the_model_cannot_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scones.serving import bench as server_bench

    monkeypatch.setattr(server_bench, "ServerProcess", _never("the model server"))
    bad = tmp_path / "bicycle" / "notes.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image at all")

    argv = ["bench", "server", "--images", str(tmp_path), "--requests", "1"]
    code, error = _scones(argv, capsys)

    assert code == 2
    assert f"--images {tmp_path}: {bad} is not an image the model can read" in error
    assert "NotAnImage" in error


def test_bench_burst_names_a_missing_model_and_a_stack_that_fails(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_heavy_work: None,
) -> None:
    from scones.offline.stack import OfflineStack, StackError

    missing = tmp_path / "nonexistent"
    code, error = _scones(["bench", "burst", "--images", "1", "--model", str(missing)], capsys)
    assert code == 2
    assert f"--model: no model at {missing} (model.json missing)" in error
    a_file = tmp_path / "model.json"
    a_file.write_text("{}")
    code, error = _scones(["bench", "burst", "--images", "1", "--model", str(a_file)], capsys)
    assert code == 2 and f"no model at {a_file}: it is a file" in error

    def refuse(_: Any) -> NoReturn:
        raise StackError("port 5000 is in use")

    monkeypatch.setattr(OfflineStack, "start", refuse)
    code, error = _scones(["bench", "burst", "--images", "1"], capsys)
    assert code == 1
    assert "scones: error: port 5000 is in use" in error


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["bench", "workflow", "--max-running-executions", "-5"],
            2,
            "argument --max-running-executions: -5 is negative",
        ),
        (["bench", "handlers", "--photos", "0"], 2, "argument --photos: 0 is not at least 1"),
        (["bench", "imports", "--repeat", "0"], 2, "argument --repeat: 0 is not at least 1"),
        (
            ["bench", "memory", "--pixels", HUGE],
            2,
            "--pixels must be at least 64 and at most 268402689 (16383x16383",
        ),
        (
            ["bench", "memory", "--pixels", "4096", "--memory-mb", "99999999"],
            2,
            "--memory-mb must be 128 to 10240",
        ),
        (
            ["bench", "review", "--pixels", HUGE],
            2,
            "--pixels must be at most 268402689",
        ),
        (
            ["bench", "capture", "--files", "1", "--repeat", "1", "--latency-ms", HUGE],
            2,
            f"argument --latency-ms: {HUGE} is not between 1 and 60000",
        ),
    ],
)
def test_out_of_range_arguments_are_refused_before_the_benchmark(
    argv: list[str],
    code: int,
    message: str,
    capsys: pytest.CaptureFixture[str],
    no_heavy_work: None,
) -> None:
    exit_code, error = _scones(argv, capsys)
    assert exit_code == code
    assert message in error


def test_bench_imports_names_a_failing_command_and_runs_a_relative_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--python`` that fails is named with its command; a relative ``--keep`` is the
    same folder for the rows, which run in other folders."""
    code, error = _scones(["bench", "imports", "--python", "/bin/false"], capsys)
    assert code == 1
    assert "scones: error: /bin/false -m venv " in error and "exited with status 1" in error

    monkeypatch.chdir(tmp_path)
    venv = tmp_path / "keep" / "venv"
    (venv / "lib" / "python3.13" / "site-packages").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.parent.mkdir()
    # Answers the version question, then fails the first row: enough to see it was run.
    python.write_text('#!/bin/sh\ncase "$2" in *sys.version*) echo 3.13.0; exit 0;; esac\nexit 3\n')
    python.chmod(0o755)
    code, error = _scones(["bench", "imports", "--repeat", "1", "--keep", "keep"], capsys)
    assert code == 1
    assert f"{python} -c 'pass' in {tmp_path / 'keep'} exited with status 3" in error


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "server", "--requests", "1"],
        ["bench", "burst", "--images", "1"],
        ["bench", "memory", "--pixels", "4096"],
        ["bench", "model", "--images", "1"],
        ["bench", "review", "--pixels", "4096"],
        ["bench", "workflow", "--images", "1"],
        ["bench", "handlers", "--small", "1", "--photos", "1"],
    ],
    ids=lambda argv: argv[1],
)
def test_a_json_path_that_cannot_be_written_is_refused_before_the_benchmark(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_heavy_work: None,
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, error = _scones([*argv, "--json", str(a_file / "r.json")], capsys)
    assert code == 2
    assert f"--json {a_file / 'r.json'}: {a_file} is not a folder" in error

    code, error = _scones([*argv, "--json", str(tmp_path)], capsys)
    assert code == 2
    assert f"--json {tmp_path}: it is a folder" in error

    # "-" reads as standard output, which carries the benchmark's own table: it was made
    # a file named "-" in the current folder.
    monkeypatch.chdir(tmp_path)
    code, error = _scones([*argv, "--json", "-"], capsys)
    assert code == 2
    assert "'-' would write a file named '-'" in error
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("name", "limit"), [("RetryIntervalSeconds", 99999999), ("RetryMaxDelaySeconds", 31622400)]
)
def test_a_retry_delay_step_functions_refuses_is_refused_before_the_stack_starts(
    name: str,
    limit: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_heavy_work: None,
) -> None:
    from scones.cli import run

    monkeypatch.setattr(run, "_run", _never("the offline run"))
    for value in (HUGE, str(limit + 1)):
        argv = ["run", "--out", str(tmp_path / "out"), "--param", f"{name}={value}"]
        code, error = _scones(argv, capsys)
        assert code == 2
        assert f"{name}='{value}' is greater than MaxValue {limit}" in error


def _measurements(change: Any) -> dict[str, Any]:
    measured = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())
    change(measured)
    return dict(measured)


@pytest.mark.parametrize(
    ("change", "argv", "message"),
    [
        (lambda m: m.pop("measured_on"), [], "measured_on is None"),
        (
            lambda m: m["kinds"]["photo"]["functions"].update(BackfillFunction={"invocations": 1}),
            ["--sweep-memory"],
            "functions.BackfillFunction.cpu_ms_mean is None, not a number",
        ),
        (
            lambda m: m["kinds"]["photo"]["functions"]["ClassifyImageFunction"].pop(
                "request_bytes_max"
            ),
            [],
            "functions.ClassifyImageFunction.request_bytes_max is None, not a number",
        ),
        (
            lambda m: m["kinds"]["photo"]["functions"]["SerializeImageFunction"].update(
                cpu_ms_mean=1e308
            ),
            [],
            "functions.SerializeImageFunction.cpu_ms_mean is 1e+308; a measurement is a "
            "number from 0 to 1e+12",
        ),
    ],
    ids=["no-measured_on", "incomplete-extra-function", "no-request-size", "huge"],
)
def test_cost_names_the_field_an_incomplete_measurement_file_lacks(
    change: Any,
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(_measurements(change)))
    code, error = _scones(["cost", "--measurements", str(path), *argv], capsys)
    assert code == 2
    assert str(path) in error and message in error


def test_bench_imports_finds_the_functions_python_as_make_build_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its default interpreter is the Python 3.13 scripts/find_python.sh finds (PATH,
    ~/.pyenv, /usr/local, /usr), not one install location; none found is named."""
    import subprocess

    from scones.cli import bench_imports

    found = bench_imports._lambda_python()
    version = subprocess.run(
        [str(found), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "(3, 13)"
    monkeypatch.setattr(bench_imports, "LAMBDA_PYTHON", "3.99")  # on no machine
    code, error = _scones(["bench", "imports", "--repeat", "1"], capsys)
    assert code == 2, error
    assert "Python 3.99 was not found" in error and "give one with --python" in error

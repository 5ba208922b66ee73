"""Fast checks of what every stack command does before anything starts: parameters
checked like ``sam deploy``, inputs checked, and the running stack found from anywhere
inside the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from state_folder import use_state_folder

from scones.template_params import (
    PROJECT_ROOT,
    ParameterError,
    constraint_problems,
    load_template,
    resolve_parameters,
    rule_problems,
)


def scones(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    if env is None:
        environment["SCONES_STATE_DIR"] = str(cwd / ".scones")
    return subprocess.run(
        [sys.executable, "-m", "scones.cli.main", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_params_fail_at_once_naming_every_problem(tmp_path: Path) -> None:
    result = scones(
        "run",
        "--param",
        "ConfidenceThreshold=2",
        "--param",
        "EndpointName=Bad_Name",
        "--param",
        "EnableModelMonitor=true",
        "--param",
        "Threshold=0.5",
        "--param",
        "MinImageSide=10000",
        "--param",
        "AlertEmail=ops@example.com,oncall@example.com",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "ConfidenceThreshold='2' is greater than MaxValue 1" in err
    assert "EndpointName='Bad_Name' does not match the AllowedPattern" in err
    assert "rule ModelMonitorNeedsImage: EnableModelMonitor=true needs CreateEndpoint=true" in err
    assert "Threshold: template.yaml has no such parameter; did you mean" in err
    assert "ConfidenceThreshold?" in err
    # No image could be 10000 pixels a side and within MaxImagePixels (54,000,000).
    assert "MinImageSide and MaxImagePixels: the smallest image allowed, 10000x10000" in err
    # SNS subscribes one address and refuses a malformed one, after the rest was deployed.
    assert "(one e-mail address, such as ops@example.com, or empty for none)" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert "stack up in" not in result.stdout  # nothing was started


@pytest.mark.parametrize("command", ["run", "up", "invoke"])
def test_every_stack_command_checks_params_first(tmp_path: Path, command: str) -> None:
    args = [command, "--param", "WorkflowType=FAST"]
    if command == "invoke":
        args.insert(1, "MonitorFunction")
    result = scones(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "WorkflowType='FAST' is not one of the AllowedValues [STANDARD, EXPRESS]" in (
        result.stderr
    )


@pytest.mark.parametrize("command", ["run", "up", "invoke"])
def test_a_stack_command_refuses_retries_an_express_execution_would_not_outlast(
    tmp_path: Path, command: str
) -> None:
    """`make deploy` refuses these values (an Express execution stops at 5 minutes and
    records nothing for its batch); offline nothing stops it, so the stack would record
    what AWS leaves unrecorded. The same words, before anything starts."""
    args = [command, "--param", "RetryMaxAttempts=20"]
    if command == "invoke":
        args.insert(1, "MonitorFunction")
    result = scones(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "these parameters would not deploy" in result.stderr
    assert "past an Express execution's 300 s" in result.stderr
    assert "stack up in" not in result.stdout


def test_missing_inputs_fail_before_the_stack_starts(tmp_path: Path) -> None:
    result = scones("run", "/nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "/nope: no such file or folder" in result.stderr
    assert "stack up in" not in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["run", "--timeout", "nan"], "argument --timeout: nan is not a number of seconds above 0"),
        (["run", "--timeout", "-1"], "argument --timeout: -1 is not a number of seconds above 0"),
        (["classify", "x.png", "--timeout", "0"], "argument --timeout: 0 is not"),
        (["down", "--timeout", "inf"], "argument --timeout: inf is not"),
        (["run", "--out", "a-file"], "argument --out: a-file exists and is not a folder"),
        (["evaluate", "--out", "a-file"], "argument --out: a-file exists and is not a folder"),
    ],
)
def test_bad_times_and_output_folders_fail_before_any_work(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = scones(*args, cwd=tmp_path)
    # Nothing printed to stdout: no stack was started, no evaluation run.
    assert (result.returncode, result.stdout) == (2, "")
    assert problem in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "value", "problem"),
    [
        ({"Type": "Number", "MinValue": 0, "MaxValue": 1}, "1.5", "greater than MaxValue 1"),
        ({"Type": "Number", "MinValue": 1}, "0", "less than MinValue 1"),
        ({"Type": "Number"}, "ten", "is not a number"),
        ({"Type": "Number"}, "nan", "is not a number"),
        ({"Type": "Number", "AllowedValues": [30, 60]}, "45", "not one of the AllowedValues"),
        ({"Type": "String", "AllowedPattern": "[a-z]+"}, "abc1", "does not match"),
        ({"Type": "String", "AllowedValues": ["A", "B"]}, "C", "not one of the AllowedValues"),
        ({"Type": "String", "MinLength": 3}, "ab", "shorter than MinLength 3"),
        ({"Type": "String", "MaxLength": 2}, "abc", "longer than MaxLength 2"),
        (
            {"Type": "CommaDelimitedList", "AllowedValues": ["a", "b"]},
            "a,c",
            "item 'c' is not one of",
        ),
        ({"Type": "List<Number>"}, "1,x", "item 'x' is not a number"),
        ({"Type": "Boolean"}, "1", "Type scones cannot check offline: Boolean"),
    ],
)
def test_each_constraint_is_checked(spec: dict[str, Any], value: str, problem: str) -> None:
    assert any(problem in p for p in constraint_problems(value, spec)), constraint_problems(
        value, spec
    )


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ({"Type": "Number", "MinValue": 0, "MaxValue": 1}, "0.93"),
        ({"Type": "Number", "AllowedValues": [30, 60]}, "60"),
        ({"Type": "String", "AllowedPattern": "[a-z]+"}, "abc"),
        ({"Type": "CommaDelimitedList", "AllowedValues": ["a", "b"]}, "a,b"),
        ({"Type": "String"}, ""),
    ],
)
def test_good_values_pass(spec: dict[str, Any], value: str) -> None:
    assert constraint_problems(value, spec) == []


def test_rules_use_every_rule_function() -> None:
    template = {
        "Parameters": {
            "Mode": {"Type": "String", "Default": "a"},
            "Names": {"Type": "CommaDelimitedList", "Default": "x,y"},
            "Other": {"Type": "String", "Default": "z"},
        },
        "Rules": {
            "Holds": {
                "RuleCondition": {
                    "Fn::Or": [
                        {"Fn::Equals": [{"Ref": "Mode"}, "a"]},
                        {"Fn::Equals": [{"Ref": "Mode"}, "b"]},
                    ]
                },
                "Assertions": [
                    {"Assert": {"Fn::Contains": [{"Ref": "Names"}, "x"]}},
                    {"Assert": {"Fn::EachMemberIn": [{"Ref": "Names"}, ["x", "y", "w"]]}},
                    {"Assert": {"Fn::Contains": [{"Fn::RefAll": "String"}, "z"]}},
                    {"Assert": {"Fn::And": [{"Fn::Not": [{"Fn::Equals": ["1", "2"]}]}]}},
                ],
            },
            "Fails": {
                "Assertions": [
                    {
                        "Assert": {"Fn::EachMemberEquals": [{"Ref": "Names"}, "x"]},
                        "AssertDescription": "every name must be x",
                    },
                ]
            },
            "Skipped": {
                "RuleCondition": {"Fn::Equals": [{"Ref": "Mode"}, "c"]},
                "Assertions": [{"Assert": {"Fn::Equals": ["1", "2"]}}],
            },
            "NeedsAws": {
                "Assertions": [
                    {"Assert": {"Fn::Contains": [{"Fn::ValueOf": ["Mode", "Tags"]}, "x"]}}
                ]
            },
        },
    }
    values = {"Mode": "a", "Names": "x,y", "Other": "z"}
    assert rule_problems(template, values) == [
        "rule Fails: every name must be x",
        "rule NeedsAws: Fn::ValueOf ['Mode', 'Tags'] needs an AWS account to evaluate",
    ]


def test_the_template_rules_and_constraints_together() -> None:
    template = load_template()
    assert resolve_parameters({}, template)["ConfidenceThreshold"] == "0.93"
    with pytest.raises(ParameterError) as raised:
        resolve_parameters(
            {"RetrainingJobConfigS3Uri": "s3://b/k.json", "CreateEndpoint": "true"}, template
        )
    assert [p.split(":")[0] for p in raised.value.problems] == [
        "rule RetrainingJobNeedsRole",
        "rule EndpointNeedsModel",
        "rule EndpointNeedsModel",
    ]
    # AllowedPattern is a full match, as in CloudFormation.
    with pytest.raises(ParameterError, match="IncomingPrefix='incoming/x'"):
        resolve_parameters({"IncomingPrefix": "incoming/x"}, template)
    # A candidate that passes the gate is registered and served with ModelImageUri.
    with pytest.raises(ParameterError) as raised:
        resolve_parameters({"TrainingImageUri": "1.dkr.ecr.us-east-1.amazonaws.com/t:1"}, template)
    assert [p.split(":")[0] for p in raised.value.problems] == ["rule RetrainingNeedsModelImage"]
    # Retraining's job names add 23 characters to the endpoint's (SageMaker allows 63).
    with pytest.raises(ParameterError, match="longer than MaxLength 40"):
        resolve_parameters({"EndpointName": "e" * 41}, template)


@pytest.fixture
def stack_process() -> Any:
    """A live process standing in for ``scones up``."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def stack_variables(state: dict[str, Any]) -> dict[str, str]:
    """What `scones env` gives for the stack of ``state`` when no proxy is named."""
    return {
        "AWS_ENDPOINT_URL": state["endpoint_url"],
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": state["model_url"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "offline",
        "AWS_SECRET_ACCESS_KEY": "offline",
    }


def _fake_project(tmp_path: Path, pid: int) -> tuple[Path, dict[str, Any]]:
    from scones.cli.stack_state import process_started

    project = tmp_path / "project"
    (project / "deep" / "er").mkdir(parents=True)
    (project / "template.yaml").write_text("Resources: {}\n")
    (project / ".scones").mkdir()
    state = {
        "endpoint_url": "http://127.0.0.1:5999",
        "model_url": "http://127.0.0.1:6999",
        "bucket": "b",
        "incoming_prefix": "incoming/",
        "table": "t",
        "state_machine_arn": "arn",
        "dead_letter_queue_url": "q",
        "monitor_function": "m",
        "region": "us-east-1",
        "pid": pid,
        "pid_started": process_started(pid),
    }
    (project / ".scones" / "stack.json").write_text(json.dumps(state))
    return project, state


def test_commands_find_the_stack_from_anywhere_inside_the_project(
    tmp_path: Path, stack_process: subprocess.Popen[bytes]
) -> None:
    project, state = _fake_project(tmp_path, stack_process.pid)
    # No proxy named: with one, `scones env` prints NO_PROXY too (test_cli_hostile_environment).
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "SCONES_STATE_DIR" and not k.lower().endswith("_proxy")
    }
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "env"],
        cwd=project / "deep" / "er",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
    )
    assert exported == stack_variables(state)


def test_outside_any_project_the_state_is_this_projects(tmp_path: Path) -> None:
    from scones.cli.stack_state import find_project_root

    assert find_project_root(tmp_path) == PROJECT_ROOT
    project, _ = _fake_project(tmp_path, os.getpid())
    assert find_project_root(project / "deep" / "er") == project.resolve()


def test_invoke_checks_the_function_and_the_event_first(tmp_path: Path) -> None:
    unknown = scones("invoke", "NoSuchFunction", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "NoSuchFunction: template.yaml has no such function" in unknown.stderr
    assert "SerializeImageFunction" in unknown.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = scones("invoke", "MonitorFunction", "-e", str(tmp_path / "bad.json"), cwd=tmp_path)
    assert bad.returncode == 2 and "not a JSON event" in bad.stderr
    missing = scones("invoke", "MonitorFunction", "-e", str(tmp_path / "none.json"), cwd=tmp_path)
    assert missing.returncode == 2 and "none.json: cannot read the event" in missing.stderr


def test_bench_help_is_for_users() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scones.cli.main", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "register(subparsers)" not in result.stdout
    assert "set_defaults" not in result.stdout


def test_the_monitor_line_never_prints_none() -> None:
    from scones.cli.display import monitor_line

    line = monitor_line(
        {
            "window_start": "a",
            "request_count": 4,
            "alerts": [],
            "retraining": None,
            "warnings": [],
            "warnings_omitted": 0,
        }
    )
    assert "None" not in line
    assert "retraining=not started" in line and "alerts=none" in line
    started = monitor_line({"retraining": {"status": "STARTED", "execution_arn": "arn:x"}})
    assert started == "retraining=STARTED (arn:x)"


def test_hints_name_a_command_that_works(monkeypatch: pytest.MonkeyPatch) -> None:
    from scones.cli import display

    monkeypatch.setattr(display.shutil, "which", lambda name: None)
    command = display.scones_command()
    assert command != "scones"
    assert command.endswith("scones") or command.endswith("-m scones.cli.main")


def test_a_state_file_is_checked_before_its_pid_is_trusted(
    tmp_path: Path, stack_process: subprocess.Popen[bytes]
) -> None:
    """A corrupt state file, or one whose pid now belongs to another program (another
    start time), is a clear error; ``scones down`` never signals that program."""
    from scones.cli.stack_state import process_started

    project, state = _fake_project(tmp_path, stack_process.pid)
    state_file = project / ".scones" / "stack.json"  # scones() points the CLI at it
    for body, words in [
        (b"\xff\xfe\x00", "is corrupt"),
        (b"[1, 2]", "names no process id"),
        (b'{"pid": "abc"}', "names no process id"),
    ]:
        state_file.write_bytes(body)
        result = scones("results", cwd=project)
        assert result.returncode == 1 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # A live pid, but not the endpoints a command needs, or no start time to tell it from
    # another process: `down` refuses too, and signals nothing.
    alive = {"pid": stack_process.pid, "pid_started": state.get("pid_started")}
    for body, words in [
        (alive | {"bucket": 7}, "is corrupt: it lacks bucket, dead_letter_queue_url, endpoint_url"),
        ({"pid": stack_process.pid}, "without its start time, so it cannot be told from another"),
        (state | {"pid_started": None}, "without its start time"),
    ]:
        state_file.write_text(json.dumps(body))
        for command in ("results", "env", "down"):
            result = scones(command, cwd=project)
            assert result.returncode == 1, result.stderr
            assert words in result.stderr
            assert "Traceback" not in result.stderr
        assert stack_process.poll() is None  # not signalled
    # Without its start time but its process gone (an older version's file): stale, so it
    # is removed as before, not called corrupt.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state_file.write_text(json.dumps(state | {"pid": gone.pid, "pid_started": None}))
    result = scones("results", cwd=project)
    assert result.returncode == 1 and "is not running" in result.stderr, result.stderr
    assert not state_file.exists()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        reused = {"pid": other.pid, "pid_started": process_started(stack_process.pid)}
        state_file.write_text(json.dumps(state | reused))
        result = scones("down", cwd=project)
        assert result.returncode == 1 and "is not running" in result.stderr
        assert "the stale record is removed" in result.stderr
        assert other.poll() is None  # not signalled
        assert not state_file.exists()  # the next command is told plainly: nothing runs
        result = scones("results", cwd=project)
        assert result.returncode == 1 and "no offline stack is running" in result.stderr
    finally:
        other.kill()
        other.wait()


def test_a_stack_slow_to_stop_is_named_still_running_and_how_to_wait_on(tmp_path: Path) -> None:
    """A stack holding many records takes a while to save them after the signal: ``down``
    only said it "did not stop", as if it were stuck, while it was saving."""
    saving = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); print(flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert saving.stdout is not None and saving.stdout.readline()  # the signal is ignored
        project, _ = _fake_project(tmp_path, saving.pid)
        result = scones("down", "--timeout", "0.5", cwd=project)
        assert result.returncode == 1, result.stderr
        assert f"(pid {saving.pid}) did not stop within 0.5 s; it is still running" in result.stderr
        assert "`scones down` again waits on" in result.stderr
        assert saving.poll() is None
    finally:
        saving.kill()
        saving.wait()


def test_cost_checks_every_param_as_sam_deploy_would(capsys: pytest.CaptureFixture[str]) -> None:
    from scones.cli.main import main

    code = main(
        [
            "cost",
            "--param",
            "Foo",
            "--param",
            "ConfidenceThreshold=2",
            "--param",
            "SerializeImageFunction.MemorySize=-5",
            "--param",
            "Nope.MemorySize=256",
        ]
    )
    error = capsys.readouterr().err
    assert code == 2
    for words in (
        "--param 'Foo': expected NAME=VALUE",
        "ConfidenceThreshold='2' is greater than MaxValue 1",
        "SerializeImageFunction.MemorySize='-5': Lambda's MemorySize is 128 to 10240 MB",
        "'Nope' is not a function of the template",
    ):
        assert words in error


def test_cost_refuses_measurements_it_cannot_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A measurements file without the fields the model reads, or with numbers no
    measurement has, is named, not a KeyError or a negative cost."""
    from scones.cli.main import main
    from scones.template_params import PROJECT_ROOT

    measured = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())
    serialize = measured["kinds"]["photo"]["functions"]["SerializeImageFunction"]
    serialize["cpu_ms_mean"] = -5
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(measured))
    serialize["cpu_ms_mean"] = 1
    serialize["peak_rss_mb"] = float("nan")
    not_a_number = tmp_path / "nan.json"
    not_a_number.write_text(json.dumps(measured))  # Python writes NaN, which JSON has not
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"kinds": {"photo": {}}}))

    assert main(["cost", "--measurements", str(broken)]) == 2
    error = capsys.readouterr().err
    assert "functions.SerializeImageFunction.cpu_ms_mean is -5; a measurement is a number" in error
    assert main(["cost", "--measurements", str(not_a_number)]) == 2
    assert "nan.json is not JSON: NaN is not a finite number" in capsys.readouterr().err
    assert main(["cost", "--measurements", str(empty)]) == 2
    error = capsys.readouterr().err
    assert "upload_bytes_mean is None, not a number" in error and "functions is missing" in error
    assert "Traceback" not in error
    # The serverless line reads ClassifyImage's wall time; log bytes are per invocation.
    functions = measured["kinds"]["photo"]["functions"]
    classify = dict(functions["ClassifyImageFunction"])
    serialize["peak_rss_mb"] = 50
    for change, named in (
        ({"wall_ms": {"mean": -5000}}, "ClassifyImageFunction.wall_ms.mean is -5000"),
        ({"wall_ms": "x"}, "ClassifyImageFunction.wall_ms is 'x', not a summary of timings"),
        ({"invocations": 0}, "ClassifyImageFunction.invocations is 0: nothing was measured"),
    ):
        functions["ClassifyImageFunction"] = classify | change
        broken.write_text(json.dumps(measured))
        assert main(["cost", "--measurements", str(broken)]) == 2
        error = capsys.readouterr().err
        assert named in error and "Traceback" not in error
    assert main(["cost", "--param", "SerializeImageFunction.MemorySize=\u00b2"]) == 2
    assert "MemorySize='\u00b2': Lambda's MemorySize is 128" in capsys.readouterr().err
    # An instance type without a price was priced as ml.m5.large, labelled ml.m5.large.
    assert main(["cost", "--param", "EndpointInstanceType=ml.g5.12xlarge"]) == 2
    error = capsys.readouterr().err
    assert "EndpointInstanceType=ml.g5.12xlarge: no price for it in scones.costs.prices" in error


def test_the_environment_errors_of_a_command_are_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    """An unknown AWS profile, a path that is a file, a bad number: named, exit non-zero."""

    def run(*args: str) -> Any:
        return scones(*args, cwd=tmp_path, env={"AWS_PROFILE": "no-such-profile"})

    assert run("--help").returncode == 0  # no command imports moto (which reads the profile)
    profile = run("redrive", "--stack", "x", "--region", "us-east-1")
    assert profile.returncode == 1
    assert "config profile (no-such-profile) could not be found" in profile.stderr
    (tmp_path / "afile").write_text("x")
    model = run("evaluate", "--model", str(tmp_path / "afile"))
    assert model.returncode == 2 and "it is a file; --model names a model's folder" in model.stderr
    port = run("up", "--port", "70000")
    assert port.returncode == 2 and "70000 is not a port" in port.stderr
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:x"
    url = scones(
        "redrive", "--endpoint-url", "not a url", "--table", "t", "--state-machine-arn", arn,
        "--region", "us-east-1", cwd=tmp_path,
        env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )  # fmt: skip
    assert url.returncode == 1
    assert "AWS configuration (an endpoint URL" in url.stderr and "not a url" in url.stderr
    for result in (profile, model, port, url):
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sample-days", "nan"], "argument --sample-days: must be more than 0 and at most 366"),
        (["--sample-days", "inf"], "argument --sample-days: must be more than 0 and at most 366"),
        (["--sample-days", "-5"], "argument --sample-days: must be more than 0 and at most 366"),
        (["--sample-days", "1e12"], "argument --sample-days: must be more than 0 and at most 366"),
        (["--reviewer", "   "], "argument --reviewer: the reviewer needs a name"),
        (["--reviewer", "a\x1b[31mb"], "argument --reviewer: 'a\\x1b[31mb' has characters"),
    ],
)
def test_review_arguments_are_checked_before_anything_starts(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scones.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["review", *arguments])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_numbers_are_read_as_cloudformation_writes_them_and_counts_as_whole() -> None:
    """Python's float() takes "0.9_3", " 5" and "٣", which would be pasted into the ASL and
    the functions' environment; a Number whose Default is whole is a count, size or
    duration that the functions, the ASL and SageMaker read as an integer; ModelLabels is
    checked as the classify function checks it at its cold start."""
    from scones.template_params import ParameterError, resolve_parameters

    refused = {
        "ConfidenceThreshold": ("0.9_3", "is not a number (Type: Number)"),
        "RetryIntervalSeconds": ("1_0", "is not a number (Type: Number)"),
        "MaxImageBytes": ("\u0663", "is not a number (Type: Number)"),
        "MinImageSide": ("2.5", "is not a whole number, as its Default 8 is"),
        "BackfillBatchSize": ("1e1", "is not a whole number, as its Default 50 is"),
        # A condition compares "-0" as text (not "0": retention on), the code as 0 (off).
        "UploadRetentionDays": ("-0", "is not a whole number, as its Default 0 is"),
        "ModelImageUri": ('x"y', "does not match the AllowedPattern"),
        "DeploymentPollSeconds": ("86400", "is greater than MaxValue 600"),
        "RetryMaxAttempts": ("1000000", "is greater than MaxValue 20"),
        "ModelLabels": ("bicycle,bicycle", "labels must be unique"),
    }
    for name, (value, problem) in refused.items():
        with pytest.raises(ParameterError) as raised:
            resolve_parameters({name: value})
        assert f"{name}={value!r}" in str(raised.value) and problem in str(raised.value), name
    accepted = {"ConfidenceThreshold": "0.9", "MinImageSide": "16", "DriftAlertThreshold": "1e-1"}
    resolved = resolve_parameters(accepted)
    assert {k: resolved[k] for k in accepted} == accepted


def test_a_stop_report_that_is_not_one_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scones down`` reads what a stopped ``scones up`` left; anything else is no report."""
    from scones.cli import stack_state

    report = tmp_path / "stopped.json"
    monkeypatch.setattr(stack_state, "STOPPED_FILE", report)
    for body in (b"[1]", b'{"pid": "abc"}', b'{"pid": 41}', b"\xff", b'{"pid": true}'):
        report.write_bytes(body)
        assert stack_state.read_stopped(41 if body != b'{"pid": 41}' else 42) is None, body
    report.write_text(json.dumps({"pid": 41, "records_file": 5, "error": "it broke"}))
    assert stack_state.read_stopped(41) == {
        "records_file": None,
        "error": "it broke",
        "unfinished": None,
        "model_server": None,
    }


def _state_in(monkeypatch: pytest.MonkeyPatch, folder: Path, *, ours: bool) -> Any:
    """The state module with its files in ``folder`` (``ours``: the default .scones)."""
    stack_state = use_state_folder(monkeypatch, folder)
    monkeypatch.setattr(stack_state, "STATE_DIR_IS_OURS", ours)
    return stack_state


def _up_leaves_its_state(stack_state: Any) -> None:
    """What `scones up` writes, in its order: the lock, the work folder, the state file,
    then, as it stops, the stop report."""
    from scones.offline.client import StackEndpoints

    endpoints = StackEndpoints(
        endpoint_url="http://127.0.0.1:5999",
        model_url="http://127.0.0.1:6999",
        bucket="b",
        incoming_prefix="incoming/",
        table="t",
        state_machine_arn="arn",
        dead_letter_queue_url="q",
        monitor_function="m",
    )
    previous = os.umask(0o022)
    try:
        with stack_state.up_lock():
            work = stack_state.make_stack_work_dir()
            (work / "logs").mkdir()
            stack_state.write_state(endpoints, os.getpid(), work)
            stack_state.write_stopped(os.getpid(), None, None)
    finally:
        os.umask(previous)


def test_the_stacks_state_and_work_folder_are_their_owners_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The work folder holds the function logs (keys, reasons) and, kept, the capture
    files (uploaded images): no other user of the machine may read them."""
    folder = tmp_path / ".scones"
    _up_leaves_its_state(_state_in(monkeypatch, folder, ours=True))
    modes = {p.name: p.stat().st_mode & 0o777 for p in [folder, *folder.iterdir()]}
    assert modes == {
        ".scones": 0o700,
        "stack": 0o700,
        "stack.json": 0o600,
        "stopped.json": 0o600,
        "up.lock": 0o600,
    }
    assert json.loads((folder / "stack.json").read_text())["work_dir"] == str(folder / "stack")


def test_state_folders_an_earlier_version_left_open_are_narrowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.scones and its stack/ are scones' own: narrowed. A SCONES_STATE_DIR folder is the
    user's (their home, say) and keeps its mode; what scones puts in it is private."""
    for name in (".scones", "mine"):
        (tmp_path / name / "stack").mkdir(parents=True)
        for path in (tmp_path / name, tmp_path / name / "stack"):
            path.chmod(0o755)
        (tmp_path / name / "stack.json").write_text("{}")
        (tmp_path / name / "stack.json").chmod(0o644)
    _up_leaves_its_state(_state_in(monkeypatch, tmp_path / ".scones", ours=True))
    _up_leaves_its_state(_state_in(monkeypatch, tmp_path / "mine", ours=False))
    for name, mode in ((".scones", 0o700), ("mine", 0o755)):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
        assert (tmp_path / name / "stack").stat().st_mode & 0o777 == 0o700, name
        assert (tmp_path / name / "stack.json").stat().st_mode & 0o777 == 0o600, name


def test_a_stack_another_user_started_in_scones_folder_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scones up refuses another user's .scones; the commands that only read it (classify,
    results, env, invoke) sent this user's images to the stack it named."""
    from scones.cli.errors import CommandFailed

    stack_state = _state_in(monkeypatch, tmp_path / ".scones", ours=True)
    (tmp_path / ".scones").mkdir(mode=0o755)
    (tmp_path / ".scones" / "stack.json").write_text(json.dumps({"pid": os.getpid()}))
    owner = (tmp_path / ".scones" / "stack.json").stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(CommandFailed, match="belongs to another user") as refused:
        stack_state.read_state()
    assert "set SCONES_STATE_DIR to a folder of your own" in str(refused.value)
    # A folder the user named (SCONES_STATE_DIR) is theirs to share: used as it is.
    monkeypatch.setattr(stack_state, "STATE_DIR_IS_OURS", False)
    with pytest.raises(CommandFailed, match="is corrupt"):  # read, then judged on its fields
        stack_state.read_state()


def test_a_refused_folder_names_the_way_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's folder of a name scones gives is refused with the setting that
    moves it: SCONES_STATE_DIR for the state folder, --out for a run's kept work folder
    (SCONES_STATE_DIR does not move that one)."""
    from scones.cli import run
    from scones.cli.errors import CommandFailed

    stack_state = _state_in(monkeypatch, tmp_path / ".scones", ours=True)
    (tmp_path / ".scones").mkdir(mode=0o700)
    (tmp_path / "out" / "work-20261205T120000Z").mkdir(parents=True, mode=0o700)
    owner = (tmp_path / "out").stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(CommandFailed, match="belongs to another user") as refused:
        stack_state.make_stack_work_dir()
    assert str(refused.value).endswith("set SCONES_STATE_DIR to a folder of your own")
    with pytest.raises(CommandFailed, match="belongs to another user") as refused:
        run._private_work_dir(tmp_path / "out" / "work-20261205T120000Z")
    assert str(refused.value).endswith("name a folder of your own with --out")
    assert "SCONES_STATE_DIR" not in str(refused.value)


def test_a_link_at_the_up_lock_is_refused_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scones.cli.errors import CommandFailed

    stack_state = _state_in(monkeypatch, tmp_path / ".scones", ours=True)
    (tmp_path / ".scones").mkdir(mode=0o700)
    (tmp_path / ".scones" / "up.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CommandFailed, match=r"up\.lock cannot be opened"), stack_state.up_lock():
        pass
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backfill", "incoming/", "--timeout", "5"], "--timeout is how long --wait waits"),
        (["backfill", "incoming/", "--region", "eu-west-1"], "--region is for a deployed stack"),
        (
            ["backfill", "incoming/", "--profile", "p", "--region", "r"],
            "--region and --profile are for a deployed stack: add --stack NAME",
        ),
        (["review", "--region", "eu-west-1"], "--region is for a deployed stack: add --aws"),
        (["review", "--stack", "s"], "--stack is for a deployed stack: add --aws"),
        (["redrive", "--dry-run", "--region", "r"], "--region is for a deployed stack"),
        (
            ["redrive", "--dead-letters", "--profile", "p"],
            "--profile is for a deployed stack: add --stack NAME (or --table",
        ),
    ],
)
def test_options_that_would_be_ignored_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option that does not apply is a usage error, not silently dropped: the user
    who wrote --region meant an AWS stack, not the offline one."""
    from scones.cli.main import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


DEEP_JSON = "[" * 100_000 + "]" * 100_000
LONG_INTEGER = "9" * 5000


@pytest.mark.parametrize("text", [DEEP_JSON, LONG_INTEGER], ids=["deep", "long-integer"])
def test_json_the_parser_cannot_take_is_named_by_every_reader(tmp_path: Path, text: str) -> None:
    """JSON nested past the parser's recursion, or an integer past its digit limit, raised
    RecursionError or ValueError past the readers that caught only JSONDecodeError: a
    traceback at the model server's start, in ``scones invoke``, ``cost`` and ``retrain``."""
    from scones.cli.arguments import hyperparameters
    from scones.cli.cost import _measurements
    from scones.cli.errors import CommandError
    from scones.cli.invoke import read_event
    from scones.model.artifact import ModelArtifactError, ModelManifest

    path = tmp_path / "model.json"
    path.write_text(text)
    with pytest.raises(ModelArtifactError, match=r"model\.json is not valid JSON"):
        ModelManifest.load(tmp_path)
    with pytest.raises(CommandError, match="not a JSON event: not readable JSON"):
        read_event(str(path))
    with pytest.raises(CommandError, match=r"model\.json is not readable JSON"):
        _measurements(path, "png")
    # Not JSON, so the value is the text itself, which the recipe's own check then names.
    assert hyperparameters([f"epochs={text}"]) == {"epochs": text}


def test_an_event_past_lambdas_synchronous_payload_quota_is_refused(tmp_path: Path) -> None:
    """Lambda refuses a synchronous request over 6 MB (RequestEntityTooLarge); the offline
    stack would have run it."""
    from scones.cli.errors import CommandError
    from scones.cli.invoke import MAX_SYNC_PAYLOAD_BYTES, read_event

    path = tmp_path / "event.json"
    path.write_text(json.dumps({"body": "x" * (MAX_SYNC_PAYLOAD_BYTES - 20)}))
    assert len(read_event(str(path))["body"]) == MAX_SYNC_PAYLOAD_BYTES - 20
    path.write_text(json.dumps({"body": "x" * MAX_SYNC_PAYLOAD_BYTES}))
    with pytest.raises(CommandError, match=r"the event is 6291468 bytes; Lambda takes at most"):
        read_event(str(path))


def test_each_bad_setting_is_named_for_what_it_is(tmp_path: Path) -> None:
    """A state folder that is a file, an archive that is no tar, a measurements path that
    is a folder, an SDK setting and an unreadable AWS credentials file: each named as what
    it is, in one line (they were an errno, tarfile's list of every compression it tried,
    "run bench handlers first", "credentials refused", and samconfig.toml's fault)."""
    not_a_tar = tmp_path / "cifar.tar.gz"
    not_a_tar.write_bytes(bytes(range(256)))
    (tmp_path / "measurements").mkdir()
    aws = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_CONFIG_FILE": "/nonexistent",
    }
    cases = [
        (["up"], {"SCONES_STATE_DIR": str(not_a_tar)}, "is, or lies under, a file: name a folder"),
        (
            ["prepare-data", "--source", str(not_a_tar), "--out", str(tmp_path / "data")],
            None,
            "is not a readable tar archive: no compression it may have (plain, gzip, bz2 or xz)",
        ),
        (
            ["cost", "--measurements", str(tmp_path / "measurements")],
            None,
            "--measurements " + str(tmp_path / "measurements") + ": cannot be read: [Errno 21]",
        ),
        (
            ["deploy-preflight", "--region", "eu-west-1"],
            aws | {"AWS_RETRY_MODE": "bogus"},
            'the AWS configuration cannot be used: Invalid value provided to "mode"',
        ),
        (
            ["deploy-preflight", "--region", "eu-west-1"],
            aws | {"AWS_SHARED_CREDENTIALS_FILE": str(not_a_tar)},
            "an AWS config or credentials file cannot be read: ConfigParseError",
        ),
    ]
    for argv, env, words in cases:
        environment = None if env is None else {"SCONES_STATE_DIR": str(tmp_path / "s"), **env}
        result = scones(*argv, cwd=PROJECT_ROOT, env=environment)
        assert result.returncode in (1, 2), (argv, result.stderr)
        assert words in result.stderr, (argv, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_classify_that_stops_waiting_says_where_the_late_records_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--timeout 0.5`: the uploads are the stack's, and their records may still come. It
    said "no record came in the last 0 s" and nothing more."""
    from scones.cli import classify
    from scones.cli.main import main
    from scones.offline.client import StackClient, StackClientError, StackEndpoints, Upload
    from scones.template_params import PROJECT_ROOT

    image = next((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))
    fields = StackEndpoints.__dataclass_fields__
    api = StackClient(StackEndpoints(**dict.fromkeys(fields, "x")))
    sent = Upload(bucket="b", key=f"incoming/{image.name}", etag="e", source=str(image))
    monkeypatch.setattr(api, "upload_file", lambda path, key: sent)

    def wait_for_records(uploads: list[Upload], timeout: float, **_: Any) -> dict[Upload, Any]:
        raise StackClientError(
            f"1 upload(s) have no record, and no record came in the last {timeout:g} s: "
            f"{uploads[0].key}"
        )

    monkeypatch.setattr(api, "wait_for_records", wait_for_records)
    monkeypatch.setattr(classify, "read_state", lambda: {"incoming_prefix": "incoming/"})
    monkeypatch.setattr(classify, "client_from_state", lambda: api)
    assert main(["classify", str(image), "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "no record came in the last 0.5 s" in err
    assert "they may still come: `scones results` lists what the stack recorded" in err


def test_run_counts_its_uploads_before_it_counts_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """At thousands of files the uploads take minutes: ``scones run`` printed nothing
    between "uploading N file(s)" and the first record, as if it hung."""
    import argparse
    import io

    from rich.console import Console

    from scones.cli import run
    from scones.cli.inputs import InputFile
    from scones.offline.client import StackClient, StackEndpoints, Upload
    from scones.template_params import PROJECT_ROOT

    images = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[:3]
    inputs = [InputFile(path, f"bicycle/{path.name}", "bicycle") for path in images]
    fields = StackEndpoints.__dataclass_fields__
    api = StackClient(StackEndpoints(**dict.fromkeys(fields, "x")))
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=100)
    drawn_while_uploading: list[str] = []

    def upload_file(path: Path, key: str) -> Upload:
        drawn_while_uploading.append(terminal.getvalue())
        return Upload(bucket="b", key=f"incoming/{key}", etag="e", source=str(path))

    def wait_for_records(
        uploads: list[Upload], timeout: float, on_progress: Any
    ) -> dict[Upload, Any]:
        on_progress(len(uploads), len(uploads))
        return {u: {"key": u.key, "status": "ACCEPTED"} for u in uploads}

    monkeypatch.setattr(api, "upload_file", upload_file)
    monkeypatch.setattr(api, "wait_for_records", wait_for_records)
    args = argparse.Namespace(no_progress=False, timeout=5.0)
    rows, _ = run._classify(api, inputs, args, console)
    assert [r["key"] for r in rows] == [f"incoming/bicycle/{p.name}" for p in images]
    assert "uploading" in drawn_while_uploading[-1]
    drawn = terminal.getvalue()
    assert "uploading" in drawn and "classifying" in drawn and "3/3" in drawn


def test_classify_shows_its_progress_on_a_terminal_and_keeps_json_output_clean(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thousands of files take minutes: on a terminal the uploads and the records waited for
    are counted on standard error, which --json's output never holds."""
    import io

    from rich.console import Console

    from scones.cli import classify
    from scones.cli.main import main
    from scones.offline.client import StackClient, StackEndpoints, Upload
    from scones.template_params import PROJECT_ROOT

    images = sorted((PROJECT_ROOT / "samples" / "bicycle").glob("*.png"))[:3]
    fields = StackEndpoints.__dataclass_fields__
    api = StackClient(StackEndpoints(**dict.fromkeys(fields, "x")))
    sent = {
        image.name: Upload(bucket="b", key=f"incoming/{image.name}", etag="e", source=str(image))
        for image in images
    }
    monkeypatch.setattr(api, "upload_file", lambda path, key: sent[path.name])
    shown: list[tuple[int, int]] = []

    def wait_for_records(
        uploads: list[Upload], timeout: float, on_progress: Any
    ) -> dict[Upload, Any]:
        for done in range(len(uploads) + 1):
            on_progress(done, len(uploads))
            shown.append((done, len(uploads)))
        return {u: {"key": u.key, "status": "ACCEPTED"} for u in uploads}

    terminal = io.StringIO()
    monkeypatch.setattr(api, "wait_for_records", wait_for_records)
    monkeypatch.setattr(classify, "read_state", lambda: {"incoming_prefix": "incoming/"})
    monkeypatch.setattr(classify, "client_from_state", lambda: api)
    monkeypatch.setattr(
        classify,
        "make_console",
        lambda stderr=False: (
            Console(file=terminal, force_terminal=True, width=100) if stderr else Console(width=140)
        ),
    )
    assert main(["classify", *map(str, images), "--json"]) == 0
    assert [r["key"] for r in json.loads(capsys.readouterr().out)] == [
        f"incoming/{image.name}" for image in images
    ]
    assert shown[-1] == (3, 3)
    drawn = terminal.getvalue()
    assert "uploading" in drawn and "classifying" in drawn and "3/3" in drawn

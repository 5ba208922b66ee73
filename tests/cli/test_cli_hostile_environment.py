"""The CLI in a hostile environment: no user name, a state file that is not what ``scones
up`` wrote, a stack without outputs, a host that is no name. Each is a one-line
``scones: error:`` naming the problem, never a traceback."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws
from test_cli_params_and_state import _fake_project, stack_variables

from scones.cli import down, invoke, stack_state
from scones.cli.main import main

USER_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


def scones(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The exit code and stderr of ``scones ARGS`` run in this process."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own exits (--help, a bad option)
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture
def no_user_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a container started with ``--user 12345``: no passwd entry and no $USER."""
    for name in USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def getpwuid(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", getpwuid)


@pytest.mark.parametrize("args", [["--help"], ["cost"], ["review", "--help"]])
def test_commands_run_without_a_user_name(
    no_user_name: None, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, err = scones(capsys, *args)
    assert code == 0, err


@pytest.mark.parametrize(
    ("environment", "words"),
    [
        ({}, "no reviewer name: $LOGNAME and $USER are not set and user id"),
        ({"USER": "a\x1bb"}, "the reviewer name from $USER is unusable: 'a\\x1bb' has characters"),
        ({"LOGNAME": "   "}, "the reviewer name from $LOGNAME is unusable: the reviewer needs"),
    ],
)
def test_review_says_where_a_bad_reviewer_name_came_from(
    no_user_name: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: dict[str, str],
    words: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, err = scones(capsys, "review")
    assert code == 2, err
    assert words in err and "pass --reviewer NAME" in err
    assert "argument --reviewer" not in err  # the user never gave it


@pytest.fixture
def state_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Where every command of this process looks for the running stack's state."""
    path = tmp_path / "stack.json"
    for module in (stack_state, down, invoke):
        monkeypatch.setattr(module, "STATE_FILE", path)
    return path


@pytest.mark.parametrize("pid", [2**31, 10**30])
@pytest.mark.parametrize("command", ["results", "env", "down"])
def test_a_pid_no_process_can_have_is_a_corrupt_state_file(
    state_file: Path, capsys: pytest.CaptureFixture[str], command: str, pid: int
) -> None:
    state_file.write_text(json.dumps({"pid": pid}))
    code, err = scones(capsys, command)
    assert code == 1, err
    assert f"{state_file} is corrupt: {pid} is not a process id" in err


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for ``scones up`` (a `scones down` may signal it)."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"physical_ids": 5}, "its physical_ids 5 is not an object"),
        ({"physical_ids": {"MonitorFunction": 7}}, "its physical_ids gives 'MonitorFunction' 7"),
        ({"model": 5}, "its model 5 is not an object"),
        ({"pid_started": 5}, "its pid_started 5 is not a start time"),
    ],
)
@pytest.mark.parametrize("command", ["env", "down"])
def test_a_state_file_of_a_live_stack_with_bad_fields_is_corrupt(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    live_process: subprocess.Popen[bytes],
    command: str,
    fields: dict[str, Any],
    words: str,
) -> None:
    project, state = _fake_project(tmp_path, live_process.pid)
    path = project / ".scones" / "stack.json"
    for module in (stack_state, down, invoke):
        monkeypatch.setattr(module, "STATE_FILE", path)
    started = stack_state.process_started(live_process.pid)
    path.write_text(json.dumps({**state, "pid_started": started, **fields}))
    code, err = scones(capsys, command)
    assert code == 1, err
    assert f"{path} is corrupt: {words}" in err
    assert live_process.poll() is None  # `scones down` signalled nothing


def test_invoke_does_not_trust_physical_ids_that_are_not_an_object(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    live_process: subprocess.Popen[bytes],
) -> None:
    """The corrupt record is of a live stack (its process still holds the ports): invoke
    says so and starts no stack of its own, as it would for a stale record."""
    project, state = _fake_project(tmp_path, live_process.pid)
    path = project / ".scones" / "stack.json"
    for module in (stack_state, down, invoke):
        monkeypatch.setattr(module, "STATE_FILE", path)
    started = stack_state.process_started(live_process.pid)
    path.write_text(json.dumps({**state, "pid_started": started, "physical_ids": 5}))

    def new_stack(*args: Any) -> int:
        raise AssertionError("invoke started a stack of its own beside a live one")

    monkeypatch.setattr(invoke, "_invoke_on_new_stack", new_stack)
    code, err = scones(capsys, "invoke", "MonitorFunction")
    assert code == 1
    assert "is corrupt: its physical_ids 5 is not an object" in err
    assert f"pid {live_process.pid}" in err


def test_backfill_of_a_stack_without_outputs_names_the_missing_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CloudFormation leaves ``Outputs`` out of a stack that has none yet."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
        cloudformation.create_stack(StackName="bare", TemplateBody=json.dumps(template))
        stack = cloudformation.describe_stacks(StackName="bare")["Stacks"][0]
        assert "Outputs" not in stack
        code, err = scones(
            capsys, "backfill", "incoming/", "--stack", "bare", "--region", "us-east-1"
        )
    assert code == 1, err
    assert "stack bare has no output BackfillStateMachineArn: is it this project's" in err


@pytest.mark.parametrize(
    "host",
    [
        "\udcff",  # the byte 0xff on the command line (`--host $'\xff'`)
        "\u00e9" * 70 + ".com",  # a label too long to encode
        "a\x00b",
    ],
)
def test_serve_on_a_host_that_is_no_name_says_so(
    capsys: pytest.CaptureFixture[str], host: str
) -> None:
    code, err = scones(capsys, "serve", "--host", host, "--port", "0")
    assert code == 2, err
    assert f"scones: error: cannot listen on {host!r}: not a host name" in err


@pytest.fixture
def not_aws() -> Iterator[str]:
    """An HTTP server that answers every request with an HTML page, as a proxy's login page
    or the model server's URL given by mistake as the AWS endpoint would."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>sign in to the proxy</html>")

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_that_does_not_answer_as_aws_and_a_value_that_is_not_utf8_are_named(
    not_aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    where = ["--endpoint-url", not_aws, "--region", "us-east-1"]

    code, err = scones(capsys, "redrive", "--stack", "scones", *where)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("scones: error: the AWS endpoint's answer is not an AWS API answer")
    assert "sign in to the proxy" in err

    # A shell passes bytes that are not UTF-8 as they are; Python keeps them as surrogates.
    code, err = scones(capsys, "redrive", "--stack", "scones\udcff", *where)
    assert code == 2 and "Traceback" not in err
    assert "an argument sent to AWS" in err and "AWS configuration" not in err
    # The same bytes in a credential are the configuration's, not an argument's.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret\udcff")
    code, err = scones(capsys, "redrive", "--stack", "scones", *where)
    assert code == 1 and "Traceback" not in err
    assert "the AWS configuration" in err and "an argument" not in err


def test_a_modelled_aws_error_is_named_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore makes each modelled error (NoSuchBucket, ResourceNotFoundException) a
    class of its own in botocore.errorfactory: a command that met one (its stack's bucket
    gone) printed a traceback."""
    import argparse

    import boto3

    from scones.cli import main as cli_main

    def read_a_gone_bucket(args: argparse.Namespace) -> int:
        boto3.client("s3", region_name="us-east-1").get_object(Bucket="gone", Key="a.png")
        return 0

    parser = argparse.ArgumentParser(prog="scones")
    parser.set_defaults(handler=read_a_gone_bucket)
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        code, err = scones(capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("scones: error: An error occurred (NoSuchBucket) when calling the ")


UNDER_A_MEMORY_LIMIT = """
import resource, sys
from scones.cli.main import build_parser, main

build_parser()  # every command imported before the limit: the command's own work meets it
with open("/proc/self/status") as status:
    size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
limit = (size_kb + 48 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(main(sys.argv[1:]))
"""


def test_running_out_of_memory_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Under a memory limit (`ulimit -v`) a command whose work needs more, here reading a
    16 MB measurements file of eight million numbers, says so in one line."""
    measurements = tmp_path / "measurements.json"
    measurements.write_text("[" + "0," * 8_000_000 + "0]")
    done = subprocess.run(
        [sys.executable, "-c", UNDER_A_MEMORY_LIMIT, "cost", "--measurements", str(measurements)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "scones: error: out of memory (is a memory limit set, `ulimit -v`, or is the machine "
        "short of memory?)"
    ]


def test_aws_calls_still_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], proxy_environment: str
) -> None:
    """Only loopback is reached directly: a stack on AWS is asked through the user's proxy
    (here one that refuses), and the user's NO_PROXY keeps its entries before loopback's."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    os.environ["NO_PROXY"] = "corp.example"  # put back by proxy_environment
    code, err = scones(capsys, "results", "--stack", "scones", "--region", "us-east-1")
    assert code == 1, err
    assert f'Failed to connect to proxy URL: "{proxy_environment}"' in err
    assert os.environ["NO_PROXY"] == "corp.example,127.0.0.1,localhost,::1"
    assert "no_proxy" not in os.environ  # it would hide NO_PROXY from Python's tools


LOOPBACK = "127.0.0.1,localhost,::1"
NO_PROXY_NAMED = {"HTTP_PROXY": None, "http_proxy": None, "HTTPS_PROXY": None, "https_proxy": None}


@pytest.mark.parametrize(
    ("user", "printed"),
    [
        ({"NO_PROXY": "corp.example"}, {"NO_PROXY": f"corp.example,{LOOPBACK}"}),
        ({"no_proxy": ".corp.example, "}, {"no_proxy": f".corp.example,{LOOPBACK}"}),
        ({}, {"NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}),
        ({"NO_PROXY": "*"}, {"NO_PROXY": "*"}),  # urllib honours * only as the whole value
        ({"NO_PROXY": "corp.example,*"}, {"NO_PROXY": f"corp.example,*,{LOOPBACK}"}),
        (
            {"NO_PROXY": "LOCALHOST,a", "no_proxy": "b"},
            {"NO_PROXY": "LOCALHOST,a,127.0.0.1,::1", "no_proxy": f"b,{LOOPBACK}"},
        ),
        ({**NO_PROXY_NAMED, "NO_PROXY": "corp.example"}, {}),  # nothing to go past
    ],
)
def test_env_adds_loopback_to_no_proxy_when_a_proxy_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    live_process: subprocess.Popen[bytes],
    proxy_environment: str,
    user: dict[str, str | None],
    printed: dict[str, str],
) -> None:
    """`eval "$(scones env)"` in a shell that names a proxy: without NO_PROXY the AWS CLI
    and boto3 would send their calls for the stack to the proxy, which cannot reach it.
    The user's entries stay first, and a spelling they set alone stays alone."""
    project, state = _fake_project(tmp_path, live_process.pid)
    monkeypatch.setattr(stack_state, "STATE_FILE", project / ".scones" / "stack.json")
    for name, value in user.items():  # all put back by proxy_environment
        if value is None:
            del os.environ[name]
        else:
            os.environ[name] = value
    assert main(["env", "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported == {**stack_variables(state), **printed}


@pytest.mark.parametrize(
    ("missing", "argv"),
    [
        (missing, argv)
        for argv in (
            ["results", "--stack", "s"],
            ["redrive", "--dry-run", "--stack", "s"],
            ["backfill", "incoming/", "--stack", "s"],
            ["deploy-baseline", "--stack", "s"],
        )
        for missing in ("region", "credentials")
        # deploy-baseline takes samconfig.toml's region, as sam deploy does.
        if (missing, argv[0]) != ("region", "deploy-baseline")
    ],
)
def test_a_machine_with_no_aws_setup_is_told_what_to_configure(
    argv: list[str],
    missing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A fresh machine with no region or no credentials: every command that reaches AWS says
    what to configure. They said only botocore's "You must specify a region." or "Unable to
    locate credentials", and one suggested another region for missing credentials."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if missing == "credentials":
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    else:  # never used: the command stops before it calls AWS
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    code, err = scones(capsys, *argv)
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    if missing == "region":
        assert "pass --region, or set AWS_DEFAULT_REGION" in err
    else:
        assert "Unable to locate credentials: configure them (`aws configure`" in err
        assert "another region" not in err

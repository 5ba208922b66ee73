"""`make deploy`'s steps around sam deploy: credentials first, then the monitor's baseline.

The baseline step runs against the real template deployed into moto, so it reads the same
output (ImageBucketName) and parameter (BaselineKey) that a stack on AWS has.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from sagemaker_fixtures import no_such_endpoint
from scones_core.retraining.dataset import retraining_prefix
from scones_core.sagemaker_names import endpoint_log_group

from scones.costs.workflow import load_workflow
from scones.deploy import (
    NO_CREDENTIALS,
    DeployError,
    SamConfig,
    SamConfigError,
    bucket_name_problem,
    capture_retention_problem,
    concurrency_problem,
    endpoint_advice,
    endpoint_config_parameters,
    endpoint_status,
    express_time_problem,
    keep_endpoint_logs,
    preflight,
    previous_parameters,
    publish_baseline,
    publish_source_bundle,
    read_samconfig,
    reserved_concurrency,
    sent_parameters,
)
from scones.offline.deploy import deploy
from scones.template_params import (
    PROJECT_ROOT,
    load_template,
    parameter_defaults,
    resolve_parameters,
)

MODEL = PROJECT_ROOT / "models" / "bicycle-motorcycle"
REGION = "us-east-1"


def model_with_baseline(tmp_path: Path, **changes: Any) -> Path:
    """A copy of the shipped model whose baseline.json has ``changes`` over its own."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    document = json.loads((MODEL / "baseline.json").read_text())
    (model / "baseline.json").write_text(json.dumps({**document, **changes}))
    return model


def bucket_stack(aws: boto3.Session, name: str) -> str:
    """A CloudFormation stack holding only the image bucket (and its output): its name."""
    bucket = f"{name}-123456789012-us-east-1-images"
    aws.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(
            {
                "Resources": {
                    "B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket}}
                },
                "Outputs": {"ImageBucketName": {"Value": bucket}},
            }
        ),
    )
    return bucket


def no_aws_environment(tmp_path: Path) -> dict[str, str]:
    """The machine's environment with no way to find AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata request from a test
    )
    return env


def failed_make_deploy(tmp_path: Path, *arguments: str) -> str:
    """What `make deploy` printed with no AWS credentials; it must have failed."""
    result = subprocess.run(
        ["make", "--no-print-directory", "deploy", *arguments],
        cwd=PROJECT_ROOT,
        env=no_aws_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    return output


@pytest.mark.slow
def test_make_deploy_without_credentials_fails_at_once_and_says_how_to_configure_them(
    tmp_path: Path,
) -> None:
    output = failed_make_deploy(tmp_path)
    assert "no AWS credentials are configured" in output, output
    assert "aws configure" in output and "AWS_PROFILE" in output
    assert "Building codeuri" not in output and "Deploying with" not in output  # nothing ran
    assert not (tmp_path / "no-credentials").exists()


@pytest.mark.slow
def test_make_deploy_checks_the_options_it_gives_sam_deploy_before_building(
    tmp_path: Path,
) -> None:
    """ARGS go to sam deploy; the preflight reads them too, so it refuses what sam would."""
    output = failed_make_deploy(tmp_path, "ARGS=--parameter-overrides oops")
    assert (
        "scones: error: sam deploy would refuse its config file or options: Invalid value for "
        "'--parameter-overrides': oops is not a valid format"
    ) in output, output
    assert "Building codeuri" not in output and "Deploying with" not in output  # nothing ran


def test_preflight_without_credentials_names_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(Exception, match="no AWS credentials are configured") as raised:
        preflight(boto3.Session(region_name=REGION))
    assert str(raised.value) == NO_CREDENTIALS.format(profile="")


def test_preflight_with_credentials_reports_the_account_and_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        who = preflight(boto3.Session(region_name=REGION))
    assert who["account"] == "123456789012"
    assert who["region"] == REGION
    assert who["credentials"] == "env"


def test_preflight_that_cannot_reach_sts_says_so_rather_than_blaming_the_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # Nothing listens on port 9 of the loopback: the connection is refused at once.
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(Exception, match="AWS STS cannot be reached") as raised:
        preflight(boto3.Session(region_name=REGION))
    assert "were refused" not in str(raised.value)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.mark.slow
def test_deploy_baseline_puts_the_models_baseline_where_the_deployed_stacks_monitor_reads_it(
    aws: boto3.Session,
) -> None:
    deploy(None, stack_name="scones-deploy", region=REGION)  # type: ignore[arg-type]
    result = publish_baseline(aws, "scones-deploy", MODEL)

    stack = aws.client("cloudformation").describe_stacks(StackName="scones-deploy")["Stacks"][0]
    bucket = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}["ImageBucketName"]
    key = load_template()["Parameters"]["BaselineKey"]["Default"]
    assert result["baseline"] == f"s3://{bucket}/{key}"
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == (MODEL / "baseline.json").read_bytes()

    # The endpoint does not exist here: the step says every image would end FAILED.
    status = endpoint_status(aws, "scones-deploy", read_samconfig())
    assert status == {
        "endpoint": "scones-bicycle-motorcycle",
        "status": "missing",
        "create_endpoint": "false",
    }
    advice = endpoint_advice(status)
    assert advice and "ends FAILED" in advice and "scones sagemaker deploy" in advice


@pytest.mark.slow
def test_deploy_puts_the_retraining_source_bundle_where_the_stacks_retraining_reads_it(
    aws: boto3.Session,
) -> None:
    """Without the bundle a retraining run on AWS fails at TrainCandidate; it goes where the
    deployed state machine's TrainCandidate and EvaluateCandidate read it, once per change."""
    import tarfile

    from scones.sagemaker.source_bundle import PROGRAM, build_bundle

    deploy(
        None,  # type: ignore[arg-type]
        stack_name="scones-bundle",
        region=REGION,
        overrides={"RetrainingPrefix": "models-rt/"},
    )
    first = publish_source_bundle(aws, "scones-bundle")
    bucket = "scones-bundle-123456789012-us-east-1-images"
    assert first["source_bundle"] == f"s3://{bucket}/models-rt/code/sourcedir.tar.gz"
    listed = aws.client("cloudformation").list_stack_resources(StackName="scones-bundle")
    (machine,) = [
        r["PhysicalResourceId"]
        for r in listed["StackResourceSummaries"]
        if r.get("LogicalResourceId") == "RetrainingStateMachine"
    ]
    definition = json.loads(
        aws.client("stepfunctions").describe_state_machine(stateMachineArn=machine)["definition"]
    )
    train = definition["States"]["TrainCandidate"]["Parameters"]["HyperParameters"]
    assert json.loads(train["sagemaker_submit_directory"]) == first["source_bundle"]
    s3 = aws.client("s3")
    key = "models-rt/code/sourcedir.tar.gz"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == build_bundle()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert PROGRAM in tar.getnames()
    again = publish_source_bundle(aws, "scones-bundle")
    assert again["unchanged"] == "true" and again["sha256"] == first["sha256"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    assert len(versions) == 1, "an unchanged bundle is not uploaded again"


def parameter_stack(aws: boto3.Session, name: str, **parameters: str) -> None:
    """A CloudFormation stack whose parameters are ``parameters`` (and nothing else)."""
    aws.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(
            {
                "Parameters": {key: {"Type": "String"} for key in parameters},
                "Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
            }
        ),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def test_the_stacks_endpoint_keeps_its_logs_as_long_as_the_stacks_own(aws: boto3.Session) -> None:
    """SageMaker creates the endpoint's log group itself, with no retention: deploy-baseline
    gives it LogRetentionDays; only the stack's own endpoint's, and a group not there yet
    is named, not made."""
    logs = aws.client("logs")
    group = endpoint_log_group("scones-own")
    logs.create_log_group(logGroupName=group)
    parameter_stack(
        aws,
        "with-endpoint",
        CreateEndpoint="true",
        EndpointName="scones-own",
        LogRetentionDays="30",
    )
    assert keep_endpoint_logs(aws, "with-endpoint") == {
        "endpoint_logs": group,
        "endpoint_log_retention_days": "30",
    }
    [described] = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert described["retentionInDays"] == 30
    parameter_stack(aws, "not-yet", CreateEndpoint="true", EndpointName="scones-new")
    missing = keep_endpoint_logs(aws, "not-yet")
    assert "/aws/sagemaker/Endpoints/scones-new does not exist yet" in missing["endpoint_logs"]
    assert not logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/Endpoints/scones-new")[
        "logGroups"
    ]
    outside = endpoint_log_group("theirs")
    logs.create_log_group(logGroupName=outside)
    parameter_stack(aws, "outside", CreateEndpoint="false", EndpointName="theirs")
    assert keep_endpoint_logs(aws, "outside") == {}
    [untouched] = logs.describe_log_groups(logGroupNamePrefix=outside)["logGroups"]
    assert "retentionInDays" not in untouched


def test_a_retention_the_deployer_may_not_set_is_named(aws: boto3.Session) -> None:
    parameter_stack(aws, "denied", CreateEndpoint="true", EndpointName="scones-own")
    logs = aws.client("logs")

    class Session:
        """The session, with its logs client the stubbed one."""

        def client(self, name: str) -> Any:
            return logs if name == "logs" else aws.client(name)

    with Stubber(logs) as stubber:
        stubber.add_client_error(
            "put_retention_policy",
            "AccessDeniedException",
            "not authorized to perform: logs:PutRetentionPolicy",
            expected_params={
                "logGroupName": "/aws/sagemaker/Endpoints/scones-own",
                "retentionInDays": int(parameter_defaults()["LogRetentionDays"]),
            },
        )
        with pytest.raises(
            DeployError,
            match="cannot set the retention of log group /aws/sagemaker/Endpoints/scones-own",
        ):
            keep_endpoint_logs(Session(), "denied")


@pytest.mark.slow
def test_deploy_baseline_follows_a_baseline_key_given_at_deploy_time(aws: boto3.Session) -> None:
    deploy(
        None,  # type: ignore[arg-type]
        stack_name="scones-other",
        region=REGION,
        overrides={"BaselineKey": "baselines/current.json"},
    )
    result = publish_baseline(aws, "scones-other", MODEL)
    assert result["baseline"].endswith("/baselines/current.json")


def test_deploy_baseline_refuses_a_model_the_deployed_stack_would_misread(
    aws: boto3.Session,
) -> None:
    """The deployed stack's own parameters decide: a model of another input size (or class
    order) gets no baseline, and the refusal says how to fix the stack."""
    bucket = "scones-deploy-123456789012-us-east-1-images"
    cfn = aws.client("cloudformation")
    cfn.create_stack(
        StackName="scones-sized",
        TemplateBody=json.dumps(
            {
                "Parameters": {"ModelInputSize": {"Type": "String"}},
                "Resources": {
                    "B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket}}
                },
                "Outputs": {"ImageBucketName": {"Value": bucket}},
            }
        ),
        Parameters=[{"ParameterKey": "ModelInputSize", "ParameterValue": "96x96"}],
    )
    with pytest.raises(DeployError) as raised:
        publish_baseline(aws, "scones-sized", MODEL)
    assert (
        "it takes 32x32 images, but the stack's ModelInputSize is 96x96" in str(raised.value)
        and "deploy the stack with ModelInputSize=32x32" in str(raised.value)
        and str(raised.value).endswith("The baseline was not published.")
    )
    assert aws.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"junk", "the baseline is not JSON: Expecting value"),
        (b'{"labels": {"bicycle": 5}}', "the baseline is incomplete or mistyped"),
        # float() takes "NaN": the monitor's metric document then held NaN, not JSON.
        pytest.param(
            (MODEL / "baseline.json").read_bytes().replace(b"0.968112", b'"NaN"'),
            "the baseline's mean_confidence is not a JSON number: 'NaN'",
            id="nan-string",
        ),
    ],
)
def test_deploy_baseline_refuses_a_file_the_monitor_could_not_use(
    aws: boto3.Session,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    named: str,
) -> None:
    """The monitor would log an unusable baseline every hour and compute no drift: the
    deploy step says so instead, before anything is uploaded."""
    import shutil

    from scones.cli.main import main

    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    (model / "baseline.json").write_bytes(content)
    with pytest.raises(DeployError) as raised:
        publish_baseline(aws, "scones-any", model)
    assert named in str(raised.value) and "was not published" in str(raised.value)
    # A folder without one is a usage error, named before any AWS call.
    (model / "baseline.json").unlink()
    assert main(["deploy-baseline", "--stack", "scones", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert f"--model {model}: no baseline.json there" in err


def test_deploy_baseline_refuses_a_baseline_with_no_mix_over_the_stacks_labels(
    aws: boto3.Session, tmp_path: Path
) -> None:
    """A well-formed baseline whose whole mix is on a label the stack's model lacks: the
    monitor's own rule (``Baseline.label_problem``), which used to fail the monitor's every
    run, refuses it before anything is uploaded."""
    model = model_with_baseline(
        tmp_path,
        labels=["bicycle", "motorcycle", "cat"],
        label_mix={"bicycle": 0, "motorcycle": 0, "cat": 1},
    )
    bucket = bucket_stack(aws, "scones-labels")
    with pytest.raises(DeployError) as raised:
        publish_baseline(aws, "scones-labels", model)
    assert str(raised.value) == (
        f"{model / 'baseline.json'} is not a drift baseline the monitor can use for the "
        f"model at {model}: label_mix gives the model's labels ['bicycle', 'motorcycle'] no "
        "share (all of it is on ['cat']). `scones train` writes one beside the model. The "
        "baseline was not published."
    )
    assert aws.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_deploy_baseline_refuses_the_baseline_of_another_model(
    aws: boto3.Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder whose baseline.json was made for another model (its model_version is not
    model.json's version): published, the monitor would compare the traffic with that
    model's label mix and name that model in every drift metric."""
    from scones.cli.main import main

    model = model_with_baseline(
        tmp_path, model_version="0123456789ab", label_mix={"bicycle": 0.9, "motorcycle": 0.1}
    )
    version = json.loads((MODEL / "model.json").read_text())["version"]
    bucket = bucket_stack(aws, "scones-stale")
    assert main(["deploy-baseline", "--stack", "scones-stale", "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert (
        f"the baseline was made for model version 0123456789ab, not this model's {version} "
        "(model.json's version)" in err
    ), err
    assert "The baseline was not published." in err
    assert aws.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_deploy_baseline_names_a_missing_stack(aws: boto3.Session) -> None:
    with pytest.raises(Exception, match="stack nowhere was not found: deploy it first"):
        publish_baseline(aws, "nowhere", MODEL)


def test_endpoint_advice() -> None:
    assert (
        endpoint_advice({"endpoint": "e", "status": "InService", "create_endpoint": "false"})
        is None
    )
    creating = endpoint_advice({"endpoint": "e", "status": "missing", "create_endpoint": "true"})
    assert creating and "this deploy creates it" in creating


def test_samconfig_overrides_are_valid_template_parameters() -> None:
    config = read_samconfig()
    assert config.stack_name == "scones" and config.region == "us-east-1"
    assert config.stack_name == config.stack_name.lower()  # it names the bucket
    assert config.parameter_overrides["EndpointName"] == "scones-bicycle-motorcycle"
    assert config.parameter_overrides["CreateEndpoint"] == "false"
    # Checked as CloudFormation checks them (types, patterns, rules).
    resolve_parameters(config.parameter_overrides, load_template())
    assert express_time_problem(config.parameter_overrides) is None


def test_preflight_refuses_retries_that_would_outlast_an_express_execution() -> None:
    """A timed-out Express execution writes no record and sends no dead letter."""
    slow = {"RetryMaxAttempts": "4", "EndpointTimeoutSeconds": "10"}
    problem = express_time_problem(slow)
    assert problem is not None
    assert "takes 470 s, past an Express execution's 300 s" in problem
    assert "RetryMaxAttempts" in problem and "WorkflowType=STANDARD" in problem
    assert express_time_problem({**slow, "WorkflowType": "STANDARD"}) is None
    assert express_time_problem({}) is None


def test_preflight_refuses_retries_that_would_outlast_an_express_backfill_batch() -> None:
    """The backfill's batches run as WorkflowType with the same retries, but around a
    function of its own: with a short endpoint timeout the classification fits in 5
    minutes while a batch's retries do not."""
    short_endpoint = {"EndpointTimeoutSeconds": "1", "RetryIntervalSeconds": "3"}
    problem = express_time_problem(short_endpoint)
    assert problem == (
        "with these parameters a backfill batch's slowest path (every retry of the backfill "
        "function to its timeout) takes 301 s, past an Express execution's 300 s: a "
        "timed-out batch fails without starting its objects. Lower RetryMaxAttempts, "
        "RetryIntervalSeconds or RetryMaxDelaySeconds, or set WorkflowType=STANDARD "
        "(`scones cost --param ...` prints it)"
    )
    # Both too slow: both are named, each with what would help it.
    both = express_time_problem({"RetryIntervalSeconds": "4"})
    assert both is not None
    assert "the slowest path to a record" in both and "; and a backfill batch's" in both
    assert express_time_problem({**short_endpoint, "WorkflowType": "STANDARD"}) is None
    for workflow_type in ("EXPRESS", "STANDARD"):
        backfill = load_workflow({"WorkflowType": workflow_type}, machine="BackfillStateMachine")
        processor = backfill.states["ClassifyEveryObject"]["ItemProcessor"]
        assert processor["ProcessorConfig"]["ExecutionType"] == workflow_type


def test_preflight_refuses_a_capture_retention_shorter_than_the_monitor_reads() -> None:
    """Capture expired inside the monitor's window would read as missing traffic. A run
    reads the window that ended a settle before it: both, plus a day for a late run."""
    assert capture_retention_problem({}) is None  # 0: kept forever
    assert capture_retention_problem({"CaptureRetentionDays": "2"}) is None  # 60-minute window
    week = {"MonitorWindowMinutes": "10080", "MonitorSettleMinutes": "0"}
    problem = capture_retention_problem({**week, "CaptureRetentionDays": "7"})
    assert problem is not None
    assert "CaptureRetentionDays=7" in problem and "MonitorWindowMinutes=10080" in problem
    assert capture_retention_problem({**week, "CaptureRetentionDays": "8"}) is None
    assert capture_retention_problem({"CaptureRetentionDays": "1"}) is not None
    # A settle moves the window back: a week's window read a day late leaves no margin.
    settled = {**week, "MonitorSettleMinutes": "1440"}
    problem = capture_retention_problem({**settled, "CaptureRetentionDays": "8"})
    assert problem is not None and "MonitorSettleMinutes=1440" in problem
    assert capture_retention_problem({**settled, "CaptureRetentionDays": "9"}) is None
    day = {"MonitorWindowMinutes": "1440", "MonitorSettleMinutes": "1440"}
    assert capture_retention_problem({**day, "CaptureRetentionDays": "2"}) is not None
    assert capture_retention_problem({**day, "CaptureRetentionDays": "3"}) is None
    # The default settle (10 minutes) counts too.
    assert capture_retention_problem({"MonitorWindowMinutes": "10080", "CaptureRetentionDays": "8"})


def project_copy(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` the project sam deploy runs in: its template.yaml, no samconfig."""
    (folder / "template.yaml").write_bytes((PROJECT_ROOT / "template.yaml").read_bytes())
    monkeypatch.setattr("scones.deploy.PROJECT_ROOT", folder)


def test_read_samconfig_takes_deploys_values_over_the_global_ones(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "a"\nregion = "eu-west-1"\n'
        '[default.deploy.parameters]\nregion = "us-east-2"\n'
        "parameter_overrides = " + '"X=\\"1 2\\" Y=3"\n'
    )
    assert read_samconfig(path) == SamConfig(
        stack_name="a", region="us-east-2", profile=None, parameter_overrides={"X": "1 2", "Y": "3"}
    )
    missing = tmp_path / "missing.toml"
    with pytest.raises(SamConfigError, match=re.escape(f"Config file {missing} does not exist")):
        read_samconfig(missing)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            '"EndpointName=ep WorkflowType=STANDARD"',
            {"EndpointName": "ep", "WorkflowType": "STANDARD"},
        ),
        (
            '"ParameterKey=EndpointName,ParameterValue=ep '
            'ParameterKey=ConfidenceThreshold,ParameterValue=0.9"',
            {"EndpointName": "ep", "ConfidenceThreshold": "0.9"},
        ),
        (
            '["EndpointName=ep", "ConfidenceThreshold=0.9"]',
            {"EndpointName": "ep", "ConfidenceThreshold": "0.9"},
        ),
        (
            '{ EndpointName = "ep", ConfidenceThreshold = 0.9, ModelLabels = ["a", "b"] }',
            {"EndpointName": "ep", "ConfidenceThreshold": "0.9", "ModelLabels": "a,b"},
        ),
        # A file of YAML 1.2 scalars (0400 is 400, not octal 256) and quotes taken off.
        ('"file://params.yaml"', {"ReviewLookbackDays": "400", "EndpointName": "my-endpoint"}),
        (
            '["file://params.toml", "WorkflowType=STANDARD"]',
            {"EndpointName": "from-toml", "WorkflowType": "STANDARD"},
        ),
        # sam takes one pair per line only from the first line, and once it finds a long-form
        # pair it ignores the short ones: the preflight checks what is deployed, no more.
        (
            '"""\nDataCapturePrefix="capture"\nIncomingPrefix="uploads/"\n"""',
            {"DataCapturePrefix": "capture"},
        ),
        (
            '"ParameterKey=DataCapturePrefix,ParameterValue=capture IncomingPrefix=uploads/"',
            {"DataCapturePrefix": "capture"},
        ),
    ],
)
def test_preflight_reads_parameter_overrides_as_sam_deploy_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: str, expected: dict[str, str]
) -> None:
    """The long form, a table and a file:// reference were misread or read as no overrides
    at all, so the checks before ``sam deploy`` passed on the defaults; the pinned SAM CLI's
    own parser now reads them, from where ``make deploy`` runs sam."""
    project_copy(tmp_path, monkeypatch)
    (tmp_path / "params.yaml").write_text(
        "ReviewLookbackDays: 0400\nEndpointName: '\"my-endpoint\"'\n"
    )
    (tmp_path / "params.toml").write_text('EndpointName = "from-toml"\n')
    path = tmp_path / "samconfig.toml"
    path.write_text(
        'version = 0.1\n[default.deploy.parameters]\nstack_name = "s"\n'
        f"parameter_overrides = {overrides}\n"
    )
    assert read_samconfig(path).parameter_overrides == expected


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ('"oops"', "Invalid value for '--parameter-overrides': oops is not a valid format"),
        ('"file://missing.yaml"', "file://missing.yaml was not found or is a directory"),
        ('"file://params.json"', "file://params.json uses an unsupported extension"),
        ("[1, 2]", "1 is invalid in a way the code doesn't expect"),
    ],
)
def test_preflight_refuses_overrides_sam_deploy_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: str, problem: str
) -> None:
    project_copy(tmp_path, monkeypatch)
    (tmp_path / "params.json").write_text("{}")
    path = tmp_path / "samconfig.toml"
    path.write_text(
        'version = 0.1\n[default.deploy.parameters]\nstack_name = "s"\n'
        f"parameter_overrides = {overrides}\n"
    )
    with pytest.raises(SamConfigError, match=re.escape(problem)):
        read_samconfig(path)


def test_a_samconfig_nested_past_the_parsers_depth_is_named(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SamConfigError, match="TOML value nested more than 100 levels deep"):
        read_samconfig(path)


def test_the_checks_read_the_settings_sam_deploy_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A samconfig.yaml, --config-env, --config-file and options on sam deploy's command
    line were not seen, so the checks passed on settings other than the ones deployed."""
    project_copy(tmp_path, monkeypatch)
    (tmp_path / "samconfig.yaml").write_text(
        "version: 0.1\ndefault:\n  deploy:\n    parameters:\n      stack_name: from-yaml\n"
        "      region: eu-west-1\n      parameter_overrides: EndpointName=yaml-endpoint\n"
    )
    assert read_samconfig() == SamConfig(
        stack_name="from-yaml",
        region="eu-west-1",
        parameter_overrides={"EndpointName": "yaml-endpoint"},
    )
    (tmp_path / "other.toml").write_text(
        'version = 0.1\n[prod.global.parameters]\nstack_name = "prod-stack"\n'
        '[prod.deploy.parameters]\nprofile = "prod"\n'
        'parameter_overrides = "WorkflowType=STANDARD"\n'
    )
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[profile prod]\nregion = us-west-2\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))  # sam checks that a profile exists
    prod = ["--config-file", "other.toml", "--config-env", "prod"]
    assert read_samconfig(sam_args=prod) == SamConfig(
        stack_name="prod-stack", profile="prod", parameter_overrides={"WorkflowType": "STANDARD"}
    )
    # The command line wins over the file, and its overrides replace the file's, as in sam.
    given = [*prod, "--stack-name", "cli-stack", "--parameter-overrides", "EndpointName=ep"]
    assert read_samconfig(sam_args=given) == SamConfig(
        stack_name="cli-stack", profile="prod", parameter_overrides={"EndpointName": "ep"}
    )
    with pytest.raises(SamConfigError, match="No such option: --bogus"):
        read_samconfig(sam_args=["--bogus"])


def test_deploy_preflight_checks_the_stack_sam_deploy_options_name(
    aws: boto3.Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options after -- reach sam's reading; --stack still wins, as sam deploy's would."""
    from scones.cli.main import main

    config = tmp_path / "other.toml"
    config.write_text('version = 0.1\n[prod.deploy.parameters]\nstack_name = "prod-stack"\n')
    sam_options = ["--", "--config-file", str(config), "--config-env", "prod"]
    assert main(["deploy-preflight", "--region", REGION, *sam_options]) == 0
    assert "deploying stack prod-stack to account" in capsys.readouterr().out
    assert main(["deploy-preflight", "--stack", "mine", "--region", REGION, *sam_options]) == 0
    assert "deploying stack mine to account" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        # samconfig.toml sets resolve_s3 and confirm_changeset: sam's do_cli refuses these
        # before it builds or uploads anything, so the checks before the build must too.
        (["--s3-bucket", "my-bucket"], "Cannot use both --resolve-s3 and --s3-bucket"),
        (["--output", "json"], "--confirm-changeset is not compatible with --output json"),
        (["--guided", "--output", "json"], "--guided is not compatible with --output json"),
        (["--help"], "run scripts/sam.sh deploy --help"),
    ],
)
def test_options_sam_deploy_refuses_before_building_are_refused_by_the_checks(
    options: list[str], problem: str
) -> None:
    with pytest.raises(SamConfigError, match=re.escape(problem)) as raised:
        read_samconfig(sam_args=options)
    if options != ["--help"]:
        assert str(raised.value).endswith("(config file: samconfig.toml)")


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_a_refusal_names_the_config_file_sam_read(tmp_path: Path, form: str) -> None:
    config = tmp_path / "other.toml"
    config.write_text(
        'version = 0.1\n[default.deploy.parameters]\nstack_name = "s"\nresolve_s3 = true\n'
        's3_bucket = "b"\n'
    )
    given = ["--config-file", str(config)] if form == "separate" else [f"--config-file={config}"]
    with pytest.raises(SamConfigError, match="Cannot use both --resolve-s3") as raised:
        read_samconfig(sam_args=["--config-file", "samconfig.toml", *given])  # the last wins
    assert str(raised.value).endswith(f"(config file: {config})")


def test_with_guided_only_the_credentials_are_checked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """sam deploy --guided asks for the stack name, region and parameters after the
    preflight: a config env that does not exist yet (none of them known) is how a new
    environment is set up, and was refused for its missing region."""
    from scones.cli.main import main

    assert read_samconfig(sam_args=["--guided"]).guided
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        code = main(["deploy-preflight", "--", "--guided", "--config-env", "staging"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "only the AWS credentials are checked here" in err
    assert "in account 123456789012" in out


def test_deploy_baseline_says_when_the_stacks_change_set_was_never_executed(
    aws: boto3.Session,
) -> None:
    """A declined change set leaves a new stack in REVIEW_IN_PROGRESS, and make deploy
    still runs the baseline step after sam deploy."""
    aws.client("cloudformation").create_change_set(
        StackName="declined",
        ChangeSetName="first",
        ChangeSetType="CREATE",
        TemplateBody='{"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}',
    )
    with pytest.raises(Exception, match=r"not deployed yet \(REVIEW_IN_PROGRESS\)"):
        publish_baseline(aws, "declined", MODEL)


def _fake_sam_python(folder: Path, body: str, mode: int = 0o755) -> Path:
    script = folder / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(mode)
    return script


@pytest.mark.parametrize(
    ("body", "mode", "problem"),
    [
        (None, 0, "needs the SAM CLI's environment (.venv-sam): run scripts/bootstrap.sh sam"),
        ("exit 0", 0o644, "[Errno 13] Permission denied"),
        ("exec sleep 30", 0o755, "it did not answer within 0.5 s"),
        (
            f'exec "{sys.executable}" -I "$@"',
            0o755,
            "ModuleNotFoundError: No module named 'samcli'",
        ),
        ("echo half an answer; exit 1", 0o755, "exit status 1: half an answer"),
    ],
)
def test_a_broken_sam_cli_environment_is_named_with_its_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str | None, mode: int, problem: str
) -> None:
    """A missing, unrunnable, hung or incomplete .venv-sam said "sam deploy would refuse"
    with a flattened traceback, or raised one after two minutes."""
    python = tmp_path / "missing" if body is None else _fake_sam_python(tmp_path, body, mode)
    monkeypatch.setattr("scones.deploy.SAM_PYTHON", python)
    # Short only for the hung one: the others start an interpreter, which a loaded machine
    # can take over half a second to do.
    hung = body is not None and "sleep" in body
    monkeypatch.setattr("scones.deploy.SAM_READ_TIMEOUT_S", 0.5 if hung else 60)
    with pytest.raises(SamConfigError) as raised:
        read_samconfig()
    message = str(raised.value)
    assert problem in message and "scripts/bootstrap.sh sam" in message, message
    assert "would refuse" not in message and "Traceback" not in message


def test_the_deploy_script_checks_credentials_before_building() -> None:
    script = (PROJECT_ROOT / "scripts" / "deploy.sh").read_text()
    steps = [line for line in script.splitlines() if line and not line.startswith(("#", " "))]
    order = [s for s in steps if "scones deploy-" in s or "sam.sh" in s]
    assert [shlex.split(s)[0:2] for s in order] == [
        [".venv/bin/scones", "deploy-preflight"],
        ["scripts/sam.sh", "build"],
        ["scripts/sam.sh", "deploy"],
        [".venv/bin/scones", "deploy-baseline"],
    ]


def test_make_deploy_gives_model_to_the_preflight_and_the_baseline_step(tmp_path: Path) -> None:
    """MODEL= names the model the stack serves: `make deploy` checks it before deploying
    and publishes its baseline (ARGS still go to sam deploy); `make deploy-baseline` too."""
    arguments = ["MODEL=my models/vehicles", "ARGS=--config-env prod"]
    planned = subprocess.run(
        ["make", "-n", "--no-print-directory", "deploy", "deploy-baseline", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = [shlex.split(line) for line in planned.splitlines() if "bootstrap" not in line]
    model = ["--model", "my models/vehicles"]
    assert commands == [
        ["scripts/deploy.sh", *model, "--config-env", "prod"],
        [".venv/bin/scones", "deploy-baseline", *model, "--config-env", "prod"],
    ]
    # The deploy script with stand-ins for the CLI and sam, each logging its arguments.
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    script = tmp_path / "scripts" / "deploy.sh"
    script.write_text((PROJECT_ROOT / "scripts" / "deploy.sh").read_text())
    log = tmp_path / "calls.jsonl"
    for stand_in, name in (
        (tmp_path / ".venv/bin/scones", "scones"),
        (tmp_path / "scripts/sam.sh", "sam"),
    ):
        stand_in.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"open({str(log)!r}, 'a').write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
        )
    for path in (script, tmp_path / ".venv/bin/scones", tmp_path / "scripts/sam.sh"):
        path.chmod(0o755)
    subprocess.run(["bash", str(script), *commands[0][1:]], cwd=tmp_path, check=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        ["scones", "deploy-preflight", *model, "--", "--config-env", "prod"],
        ["sam", "build"],
        ["sam", "deploy", "--config-env", "prod"],
        ["scones", "deploy-baseline", *model, "--", "--config-env", "prod"],
    ]


def test_preflight_refuses_a_stack_name_s3_would_refuse_in_the_bucket_name() -> None:
    assert bucket_name_problem("scones", "123456789012", "us-east-1") is None
    longest = "s" * 33  # 63 - len("-123456789012-us-east-1-images")
    assert bucket_name_problem(longest, "123456789012", "us-east-1") is None
    problem = bucket_name_problem(longest + "s", "123456789012", "us-east-1")
    assert problem and "at most 33" in problem and "63" in problem
    shorter = bucket_name_problem("s" * 29, "123456789012", "ap-southeast-2")
    assert shorter and "at most 28" in shorter
    assert bucket_name_problem("Scones", "123456789012", "us-east-1")


class _Session:
    """What the check needs of a boto3 session: its region and one stubbed client."""

    def __init__(self, client: Any) -> None:
        self.region_name = REGION
        self._client = client

    def client(self, name: str) -> Any:
        assert name == "lambda"
        return self._client


@pytest.mark.parametrize(("quota", "refused"), [(10, True), (219, True), (220, False)])
def test_preflight_checks_the_concurrency_quota_against_the_stacks_reservations(
    quota: int, refused: bool
) -> None:
    """A new account's quota can be under the 100 Lambda keeps unreserved plus the stack's
    reservations; sam deploy would then roll back at the first function."""
    assert reserved_concurrency({}) == 120
    # ImagesInFlight reserves that many for SerializeImage and ClassifyImage each, and a
    # tenth of it for the start function.
    assert reserved_concurrency({"ImagesInFlight": "200"}) == 120 + 2 * 150 + 15
    assert reserved_concurrency({"ReserveFunctionConcurrency": "false"}) == 0
    client = boto3.client("lambda", region_name=REGION)
    settings = {"AccountLimit": {"ConcurrentExecutions": quota}, "AccountUsage": {}}
    with Stubber(client) as stubber:
        stubber.add_response("get_account_settings", settings, {})
        problem = concurrency_problem(_Session(client), {})
        stubber.assert_no_pending_responses()
    assert (problem is not None) is refused
    if problem:
        assert f"quota in {REGION} is {quota}" in problem
        assert "ReserveFunctionConcurrency=false" in problem and "at least 220" in problem
    # Without reservations nothing is asked (the stub has no answer left to give).
    with Stubber(client):
        assert (
            concurrency_problem(_Session(client), {"ReserveFunctionConcurrency": "false"}) is None
        )


@pytest.mark.parametrize(
    ("unreserved", "deployed", "refused"),
    [(165, False, True), (219, False, True), (220, False, False), (165, True, False)],
)
def test_preflight_counts_the_reservations_other_stacks_of_the_account_hold(
    unreserved: int, deployed: bool, refused: bool
) -> None:
    """A second copy of the stack (staging beside prod) needs its 120 out of what the
    account has left unreserved, not out of the quota; on an update the stack's own
    reservations are freed and count as unreserved."""
    client = boto3.client("lambda", region_name=REGION)
    limit = {"ConcurrentExecutions": 300, "UnreservedConcurrentExecutions": unreserved}
    previous = parameter_defaults() if deployed else None
    with Stubber(client) as stubber:
        stubber.add_response("get_account_settings", {"AccountLimit": limit}, {})
        problem = concurrency_problem(_Session(client), {}, previous)
        stubber.assert_no_pending_responses()
    assert (problem is not None) is refused, problem
    if problem:
        assert f"other functions of the account already reserve {300 - unreserved}" in problem
        assert f"at least {220 + 300 - unreserved}" in problem


def test_deploy_preflight_stops_on_a_stack_name_the_bucket_cannot_take(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command runs the name and quota checks after the credentials (moto answers
    the account settings with a quota that holds the reservations)."""
    from scones.cli.main import main

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        assert main(["deploy-preflight", "--stack", "s" * 34, "--region", REGION]) != 0
        refused = capsys.readouterr().err
        assert "S3 refuses" in refused and "at most 33" in refused
        assert main(["deploy-preflight", "--stack", "scones", "--region", REGION]) == 0
        assert "deploying stack scones to account 123456789012" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"EndpointTimeoutSeconds": "7"}, "EndpointTimeoutSeconds='7' is not one of"),
        ({"RetryMaxAttempts": "three"}, "RetryMaxAttempts='three'"),
        ({"RetryMaxAttempts": "4", "EndpointTimeoutSeconds": "10"}, "past an Express execution"),
    ],
)
def test_deploy_preflight_names_overrides_cloudformation_or_express_would_refuse(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    problem: str,
) -> None:
    """samconfig.toml's parameter_overrides are checked before they are used: a bad value
    is named, not a traceback."""
    code, err = preflight_with(monkeypatch, capsys, overrides)
    assert code == 2
    assert problem in err and "Traceback" not in err


@functools.cache
def _samconfig_read_by_sam(root: Path, text: str) -> SamConfig:
    return read_samconfig()


def project_samconfig() -> SamConfig:
    """What the pinned SAM CLI reads from the project's own samconfig.toml: one run of sam
    per worker for the preflight tests, which then replace its ``parameter_overrides``
    (a copy each: the cached reading stays as sam gave it)."""
    import scones.deploy

    root = scones.deploy.PROJECT_ROOT
    config = _samconfig_read_by_sam(root, (root / "samconfig.toml").read_text())
    return dataclasses.replace(config, parameter_overrides=dict(config.parameter_overrides))


def preflight_with(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    stack: dict[str, str] | None = None,
) -> tuple[int, str]:
    """`scones deploy-preflight` (moto's STS) with samconfig's ``parameter_overrides``
    replaced, for a first deploy or, with ``stack``, over a stack deployed with those
    parameter values: its exit code and stderr."""
    code, _, err = preflight_output(monkeypatch, capsys, overrides, stack)
    return code, err


def preflight_output(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    stack: dict[str, str] | None = None,
    *options: str,
) -> tuple[int, str, str]:
    """:func:`preflight_with`'s exit code, stdout and stderr; ``options`` are the command's."""
    import scones.deploy
    from scones.cli.main import main

    config = dataclasses.replace(project_samconfig(), parameter_overrides=overrides)
    monkeypatch.setattr(scones.deploy, "read_samconfig", lambda *a, **k: config)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        if stack is not None:
            stand_in_stack(boto3.client("cloudformation", region_name=REGION), stack)
        code = main(["deploy-preflight", "--stack", "scones", "--region", REGION, *options])
    out, err = capsys.readouterr()
    return code, out, err


def stand_in_stack(cloudformation: Any, parameters: dict[str, str]) -> None:
    """The stack ``scones`` deployed with these parameter values: a stand-in declaring the
    real template's parameters (moto cannot run the real one with CreateEndpoint=true);
    the preflight reads only its parameters."""
    declared = {
        name: {key: value for key, value in spec.items() if key in ("Type", "Default")}
        for name, spec in load_template()["Parameters"].items()
    }
    # One a former template declared, which this one no longer has.
    declared["RetiredSetting"] = {"Type": "String", "Default": "old"}
    cloudformation.create_stack(
        StackName="scones",
        TemplateBody=json.dumps(
            {"Parameters": declared, "Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}
        ),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def test_deploy_preflight_checks_the_values_an_existing_stack_keeps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On an existing stack sam deploy sends every parameter the overrides do not name as
    UsePreviousValue: the stack keeps its value, not the template's default. The checks
    passed a switch to Express over a stack's Standard-only retries, and refused a change
    that keeps a Standard stack Standard."""
    standard = {"WorkflowType": "STANDARD", "RetryMaxAttempts": "6", "EndpointTimeoutSeconds": "10"}
    code, err = preflight_with(monkeypatch, capsys, {"WorkflowType": "EXPRESS"}, standard)
    assert code == 2, err
    assert "takes 898 s, past an Express execution's 300 s" in err
    assert (
        "(stack scones keeps EndpointTimeoutSeconds=10, RetryMaxAttempts=6: "
        "parameter_overrides does not name them)"
    ) in err
    # The same overrides on a first deploy take the template's defaults, which fit.
    code, err = preflight_with(monkeypatch, capsys, {"WorkflowType": "EXPRESS"})
    assert code == 0, err
    # Retries only a Standard workflow can hold, on a stack that stays Standard.
    code, out, err = preflight_output(monkeypatch, capsys, {"RetryMaxAttempts": "6"}, standard)
    assert code == 0, err
    assert out.splitlines()[1] == (
        "stack scones keeps its values of the parameters not overridden: "
        "EndpointTimeoutSeconds=10, WorkflowType=STANDARD"
    )
    # A parameter the template no longer declares is not sent; nor named as unknown.
    assert "RetiredSetting" not in err


def test_sent_parameters_are_what_sam_deploy_makes_cloudformation_deploy(
    aws: boto3.Session,
) -> None:
    """Override, else the stack's value, else the default; None for a stack sam creates."""
    cfn = aws.client("cloudformation")
    assert previous_parameters(cfn, "scones") is None
    stand_in_stack(cfn, {"RetryMaxAttempts": "6"})
    previous = previous_parameters(cfn, "scones")
    assert previous is not None and previous["RetryMaxAttempts"] == "6"
    # The stack of an older template: a parameter since removed, none of those since added.
    previous = {"RetryMaxAttempts": "6", "EndpointName": "", "RetiredSetting": "x"}
    sent = sent_parameters({"WorkflowType": "STANDARD", "Typo": "1"}, previous)
    assert sent["RetryMaxAttempts"] == "6"  # kept
    assert sent["EndpointName"] == ""  # kept, though empty
    assert sent["WorkflowType"] == "STANDARD" and sent["Typo"] == "1"  # as given
    defaults = {n: str(spec["Default"]) for n, spec in load_template()["Parameters"].items()}
    assert sent["ConfidenceThreshold"] == defaults["ConfidenceThreshold"]  # new: its default
    assert "RetiredSetting" not in sent  # sam sends only the template's parameters
    assert sent_parameters({}, None) == defaults
    # A change set never executed leaves a stack sam deploy creates anew.
    cfn.create_change_set(
        StackName="declined",
        ChangeSetName="first",
        ChangeSetType="CREATE",
        TemplateBody='{"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}',
    )
    assert previous_parameters(cfn, "declined") is None


def test_deploy_preflight_warns_before_an_update_deletes_the_endpoint_or_the_workflow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CreateEndpoint true to false deletes the endpoint the workflow calls; a WorkflowType
    change replaces the state machine, and deleting the old one terminates its running
    executions without a record. Both may be meant and both can be recovered from, so the
    deploy goes on, with what to do."""
    serving = {
        "WorkflowType": "STANDARD",
        "CreateEndpoint": "true",
        "ModelImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/scones:1",
        "ModelDataUrl": "s3://models-bucket/model.tar.gz",
    }
    code, err = preflight_with(
        monkeypatch, capsys, {"WorkflowType": "EXPRESS", "CreateEndpoint": "false"}, serving
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "this deploy changes" in line]
    assert len(warnings) == 2, err
    endpoint, workflow = warnings
    assert endpoint.startswith(
        "scones: warning: this deploy changes CreateEndpoint from true to false: "
        "CloudFormation deletes the stack's endpoint scones-bicycle-motorcycle (the resources "
        "it removes: SageMakerEndpoint, SageMakerEndpointConfig, SageMakerExecutionRole, "
        "SageMakerModel); "
        "every upload ends FAILED until an endpoint named scones-bicycle-motorcycle exists"
    ), endpoint
    assert "scones sagemaker deploy" in endpoint and "scones redrive --stack scones" in endpoint
    assert workflow.startswith(
        "scones: warning: this deploy changes WorkflowType from STANDARD to EXPRESS: "
        "CloudFormation replaces the classification state machine (ClassificationStateMachine)"
        " and deletes the old one, which terminates its running executions"
    ), workflow
    assert "`scones backfill incoming/ --stack scones`" in workflow
    # Pointed at an endpoint of its own, the deleted one is not called.
    code, err = preflight_with(
        monkeypatch,
        capsys,
        {"CreateEndpoint": "false", "EndpointName": "mine"},
        serving,
    )
    assert code == 0, err
    assert "deletes the stack's endpoint scones-bicycle-motorcycle" in err
    assert "the workflow calls mine instead" in err and "WorkflowType from" not in err
    # The same values again (the stack's kept or given anew): nothing is deleted.
    for overrides in ({}, {"WorkflowType": "STANDARD", "CreateEndpoint": "true"}):
        code, err = preflight_with(monkeypatch, capsys, overrides, serving)
        assert code == 0, err
        assert "this deploy changes" not in err, err
    # A first deploy replaces nothing.
    code, err = preflight_with(monkeypatch, capsys, {"WorkflowType": "STANDARD"})
    assert code == 0, err
    assert "this deploy changes" not in err, err


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"ModelInputSize": "64x64"},
            "takes 32x32 images, but the stack's ModelInputSize is 64x64: the workflow would "
            "resize every image to that size and the server again to the model's",
        ),
        (
            {"ModelLabels": "motorcycle,bicycle"},
            "it answers bicycle,motorcycle, in that order, but the stack's ModelLabels is "
            "motorcycle,bicycle",
        ),
    ],
)
def test_deploy_preflight_warns_when_the_bundled_model_does_not_fit_the_stack(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    problem: str,
) -> None:
    """Nothing on AWS would say so (the offline stack refuses the same, `check_model`); the
    endpoint may serve another model, so this is a warning, and deploy-baseline, given
    the served model's folder, refuses a mismatch."""
    code, err = preflight_with(monkeypatch, capsys, overrides)
    assert code == 0
    assert "scones: warning: the model at" in err and problem in err
    assert "make deploy MODEL=DIR" in err and "make deploy-baseline MODEL=DIR" in err


def test_deploy_preflight_refuses_a_named_model_that_does_not_fit_the_stack(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`make deploy MODEL=DIR`: the model is the one the stack serves, so a mismatch is
    refused before sam deploy, not by deploy-baseline after it; one that fits passes."""
    own = {"ModelLabels": "van,truck"}
    code, _, err = preflight_output(monkeypatch, capsys, own, None, "--model", str(MODEL))
    assert code == 2, err
    assert f"the model at {MODEL}: it answers bicycle,motorcycle" in err
    assert "deploy-baseline would refuse its baseline after sam deploy" in err
    code, _, err = preflight_output(monkeypatch, capsys, {}, None, "--model", str(MODEL))
    assert code == 0 and "the model at" not in err, err
    # A folder without a baseline is refused before AWS is asked anything.
    code, _, err = preflight_output(monkeypatch, capsys, {}, None, "--model", str(tmp_path))
    assert code == 2 and f"--model {tmp_path}: no baseline.json there" in err, err


@pytest.mark.parametrize(
    ("baseline", "named"),
    [
        pytest.param(
            {"model_version": "0123456789ab"},
            "the baseline was made for model version 0123456789ab, not this model's",
            id="another-model's",
        ),
        pytest.param(
            {"label_mix": {"bicycle": 0, "motorcycle": 0, "cat": 1}},
            "label_mix names ['bicycle', 'cat', 'motorcycle'] but labels are",
            id="unusable",
        ),
    ],
)
def test_deploy_preflight_refuses_a_baseline_deploy_baseline_would_refuse(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    baseline: dict[str, Any],
    named: str,
) -> None:
    """`make deploy MODEL=DIR` with a baseline.json that is not the model's own, or one the
    monitor could not use: deploy-baseline refuses it, but only after sam deploy has
    deployed the stack. The preflight applies the same rule (``model_baseline``) first."""
    model = model_with_baseline(tmp_path, **baseline)
    code, out, err = preflight_output(monkeypatch, capsys, {}, None, "--model", str(model))
    assert code == 2, err
    assert err.startswith(
        f"scones: error: --model {model}: {model / 'baseline.json'} is not a drift baseline "
        f"the monitor can use for the model at {model}: "
    ), err
    assert named in err and "deploy-baseline would refuse it after sam deploy" in err, err
    assert out == ""


def test_deploy_preflight_warns_that_retraining_cannot_serve_another_input_size(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Retraining trains 32x32 models: on a 64x64 stack every run would pay for a training
    job and fail at the gate (the candidate cannot be scored beside production). The
    dataset step refuses such a run first; the preflight says so before the deploy."""
    code, err = preflight_with(monkeypatch, capsys, {"ModelInputSize": "64x64"})
    assert code == 0
    assert (
        "scones: warning: retraining trains 32x32 models, but the stack serves 64x64 images "
        "(ModelInputSize)"
    ) in err
    assert "ends FAILED at its first step, before any training job" in err
    code, err = preflight_with(monkeypatch, capsys, {})
    assert code == 0 and "retraining trains" not in err


class _StubbedSession:
    """A session whose clients are stubbed (botocore Stubber checks each request's shape
    against the real API)."""

    def __init__(self) -> None:
        session = boto3.Session(
            region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
        )
        self.clients = {name: session.client(name) for name in ("cloudformation", "sagemaker")}
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}

    def client(self, name: str) -> Any:
        return self.clients[name]


def deployed_stack(cfn: Stubber, outputs: dict[str, str] | None = None, **parameters: str) -> None:
    """DescribeStacks' answer for the stack ``scones`` deployed with ``parameters``."""
    stack: dict[str, Any] = {
        "StackName": "scones",
        "CreationTime": "2026-12-01T00:00:00Z",
        "StackStatus": "UPDATE_COMPLETE",
        "Parameters": [
            {"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()
        ],
    }
    if outputs:
        stack["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]
    cfn.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "scones"})


def promoted_endpoint_config(sagemaker: Stubber) -> None:
    """DescribeEndpointConfig's answer for the config a retraining promoted."""
    sagemaker.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": "ep-rt-20261202120000-config",
            "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "ep-rt-model"}],
            "CreationTime": "2026-12-02T12:00:00Z",
        },
        {"EndpointConfigName": "ep-rt-20261202120000-config"},
    )


def captured_into(destination: str, percent: int = 100) -> dict[str, Any]:
    """DescribeEndpoint's DataCaptureConfig for an endpoint capturing into ``destination``."""
    return {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": percent,
        "DestinationS3Uri": destination,
        "KmsKeyId": "",
    }


# Where the stack ``scones`` (account 123456789012, us-east-1) has its endpoint capture.
STACK_CAPTURE = "s3://scones-123456789012-us-east-1-images/datacapture"


def described_endpoint(sagemaker: Stubber, config: str, **answer: Any) -> None:
    """DescribeEndpoint's answer for the endpoint ``ep``, InService on ``config`` and
    capturing where the stack ``scones`` reads."""
    sagemaker.add_response(
        "describe_endpoint",
        {
            "EndpointName": "ep",
            "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
            "EndpointConfigName": config,
            "EndpointStatus": "InService",
            "CreationTime": "2026-12-01T00:00:00Z",
            "LastModifiedTime": "2026-12-01T00:00:00Z",
            "DataCaptureConfig": captured_into(STACK_CAPTURE),
            **answer,
        },
        {"EndpointName": "ep"},
    )


def stack_endpoint_config(cfn: Stubber) -> None:
    """DescribeStackResource's answer for the stack's endpoint config. CloudFormation's
    physical id of an endpoint config is its ARN, the name in lower case."""
    cfn.add_response(
        "describe_stack_resource",
        {
            "StackResourceDetail": {
                "LogicalResourceId": "SageMakerEndpointConfig",
                "PhysicalResourceId": (
                    "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/"
                    "sagemakerendpointconfig-abc123"
                ),
                "ResourceType": "AWS::SageMaker::EndpointConfig",
                "LastUpdatedTimestamp": "2026-12-01T00:00:00Z",
                "ResourceStatus": "CREATE_COMPLETE",
            }
        },
        {"StackName": "scones", "LogicalResourceId": "SageMakerEndpointConfig"},
    )


def test_preflight_warns_that_a_deploy_may_undo_a_promoted_model() -> None:
    """With CreateEndpoint=true, CloudFormation names the stack's endpoint config; after a
    promotion the endpoint serves another one, and a deploy that changes the endpoint's
    settings would put the stack's model back. The warning names the promoted artifact."""
    assert load_template()["Resources"]["SageMakerEndpointConfig"]["Type"] == (
        "AWS::SageMaker::EndpointConfig"
    )
    session = _StubbedSession()
    cfn, sm = session.stubs["cloudformation"], session.stubs["sagemaker"]
    deployed_stack(cfn, EndpointName="ep", CreateEndpoint="true")
    described_endpoint(sm, "ep-rt-20261202120000-config", LastModifiedTime="2026-12-02T12:30:00Z")
    stack_endpoint_config(cfn)
    promoted_endpoint_config(sm)
    artifact = "s3://bucket/retraining/runs/x/output/model.tar.gz"
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/scones-models/3"
    sm.add_response(  # retraining creates the promoted model from its package
        "describe_model",
        {
            "ModelName": "ep-rt-model",
            "PrimaryContainer": {"ModelPackageName": package},
            "CreationTime": "2026-12-02T12:00:00Z",
            "ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/ep-rt-model",
        },
        {"ModelName": "ep-rt-model"},
    )
    sm.add_response(
        "describe_model_package",
        {
            "ModelPackageName": "scones-models",
            "ModelPackageArn": package,
            "CreationTime": "2026-12-02T12:00:00Z",
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": artifact}],
                "SupportedContentTypes": ["image/png"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        },
        {"ModelPackageName": package},
    )
    config = SamConfig(stack_name="scones", region=REGION, profile=None, parameter_overrides={})
    with cfn, sm:
        status = endpoint_status(session, "scones", config)
    assert status["serving_config"] == "ep-rt-20261202120000-config"
    assert status["stack_config"] == "sagemakerendpointconfig-abc123"
    advice = endpoint_advice(status)
    assert advice and "retraining promoted a model" in advice
    assert f"deploy with ModelDataUrl={artifact}" in advice
    # Every setting the endpoint config is made of, as README lists them.
    assert "(DataCapturePrefix, DataCaptureSamplingPercentage, EndpointInstanceCount," in advice
    readme = " ".join((PROJECT_ROOT / "README.md").read_text().split())
    # A new EndpointName makes a new endpoint from the stack's config: the model too.
    assert "EndpointName" in endpoint_config_parameters()
    listed = ", ".join(f"`{name}`" for name in endpoint_config_parameters())
    assert f"that changes the endpoint's settings ({listed})" in readme
    # The stack's own config served (CloudFormation's ARN, SageMaker's name): nothing to say.
    own = _StubbedSession()
    described_endpoint(own.stubs["sagemaker"], "SageMakerEndpointConfig-AbC123")
    config = SamConfig(
        stack_name="scones",
        region=REGION,
        parameter_overrides={"EndpointName": "ep", "CreateEndpoint": "true"},
    )
    deployed_stack(own.stubs["cloudformation"], EndpointName="ep", CreateEndpoint="true")
    stack_endpoint_config(own.stubs["cloudformation"])
    with own.stubs["cloudformation"], own.stubs["sagemaker"]:
        unchanged = endpoint_status(own, "scones", config)
    assert "serving_config" not in unchanged and endpoint_advice(unchanged) is None


def test_an_existing_endpoint_whose_variant_the_stack_does_not_name_is_warned_about() -> None:
    """With CreateEndpoint=false the endpoint is the user's: a variant other than
    EndpointVariantName leaves the monitor reading nothing and the error alarm blind."""

    def described(variant: str) -> _StubbedSession:
        session = _StubbedSession()
        described_endpoint(
            session.stubs["sagemaker"],
            "ep-config",
            ProductionVariants=[{"VariantName": variant, "CurrentWeight": 1.0}],
        )
        return session

    config = SamConfig(stack_name=None, region=REGION, parameter_overrides={"EndpointName": "ep"})
    session = described("blue")
    with session.stubs["sagemaker"]:
        status = endpoint_status(session, None, config)
    assert (status["variant"], status["served_variants"]) == ("AllTraffic", "blue")
    advice = endpoint_advice(status)
    assert advice is not None
    assert "serves variant(s) blue, not the stack's EndpointVariantName=AllTraffic" in advice
    assert advice.endswith("Deploy with EndpointVariantName=blue")
    named = dataclasses.replace(
        config, parameter_overrides={"EndpointName": "ep", "EndpointVariantName": "blue"}
    )
    session = described("blue")
    with session.stubs["sagemaker"]:
        status = endpoint_status(session, None, named)
    assert "served_variants" not in status and endpoint_advice(status) is None
    # The preflight runs before `sam deploy`: the value this deploy sends wins over the one
    # the stack was deployed with (sam uses the previous value only where none is given).
    session = described("blue")
    deployed_stack(
        session.stubs["cloudformation"], EndpointVariantName="AllTraffic", CreateEndpoint="false"
    )
    named = dataclasses.replace(named, stack_name="scones")
    with session.stubs["cloudformation"], session.stubs["sagemaker"]:
        status = endpoint_status(session, "scones", named)
    assert "served_variants" not in status and endpoint_advice(status) is None


def test_only_sagemakers_no_such_endpoint_answer_makes_the_endpoint_missing() -> None:
    """A refusal to describe the endpoint (another validation error, or access denied)
    is raised as what it is: reporting it as ``missing`` would tell the user every image
    ends FAILED, or that CreateEndpoint=true can create it, about an endpoint that may
    well serve."""
    config = SamConfig(stack_name=None, region=REGION, parameter_overrides={"EndpointName": "ep"})
    session = _StubbedSession()
    no_such_endpoint(session.stubs["sagemaker"], "ep")
    with session.stubs["sagemaker"]:
        assert endpoint_status(session, None, config)["status"] == "missing"
    for code, message in (
        ("ValidationException", "Endpoint ep is being deleted, retry later."),
        ("AccessDeniedException", "not authorized to perform: sagemaker:DescribeEndpoint"),
    ):
        session = _StubbedSession()
        session.stubs["sagemaker"].add_client_error(
            "describe_endpoint",
            service_error_code=code,
            service_message=message,
            http_status_code=400,
            expected_params={"EndpointName": "ep"},
        )
        with session.stubs["sagemaker"], pytest.raises(ClientError, match=code) as raised:
            endpoint_status(session, None, config)
        assert message in str(raised.value)


def test_an_endpoint_out_of_service_is_named_before_its_variant() -> None:
    advice = endpoint_advice(
        {
            "endpoint": "ep",
            "status": "OutOfService",
            "create_endpoint": "false",
            "variant": "AllTraffic",
            "served_variants": "blue",
        }
    )
    assert advice is not None
    assert advice.startswith("endpoint ep is OutOfService: images are classified once it is")
    assert "Also, endpoint ep serves variant(s) blue" in advice


def test_deploy_baseline_keeps_the_baseline_of_a_model_retraining_promoted() -> None:
    """After a promotion the endpoint serves the candidate, whose baseline the promotion
    put at BaselineKey: a routine make deploy (sam deploy, then deploy-baseline) that left
    the endpoint alone must not put the bundled model's baseline back. No S3 client is
    stubbed: a put would fail the test."""
    session = _StubbedSession()
    cfn, sm = session.stubs["cloudformation"], session.stubs["sagemaker"]
    deployed_stack(
        cfn, outputs={"ImageBucketName": "images"}, EndpointName="ep", CreateEndpoint="true"
    )
    described_endpoint(sm, "ep-rt-20261202120000-config")
    stack_endpoint_config(cfn)
    promoted_endpoint_config(sm)
    sm.add_response(
        "describe_model",
        {
            "ModelName": "ep-rt-model",
            "PrimaryContainer": {"Image": "img", "ModelDataUrl": "s3://images/x/model.tar.gz"},
            "CreationTime": "2026-12-02T12:00:00Z",
            "ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/ep-rt-model",
        },
        {"ModelName": "ep-rt-model"},
    )
    with cfn, sm:
        result = publish_baseline(session, "scones", MODEL)
    key = load_template()["Parameters"]["BaselineKey"]["Default"]
    assert result["baseline"] == f"s3://images/{key}"
    assert "serves endpoint config ep-rt-20261202120000-config, not the stack's" in result["kept"]


def test_deploy_baseline_keeps_a_promoted_baseline_on_an_endpoint_of_its_own() -> None:
    """CreateEndpoint=false (the default): retraining still promotes into the endpoint the
    stack calls, under a config it names ``<EndpointName>-rt-...``; that baseline stays
    too. No S3 client is stubbed: a put would fail the test."""
    session = _StubbedSession()
    cfn, sm = session.stubs["cloudformation"], session.stubs["sagemaker"]
    deployed_stack(cfn, outputs={"ImageBucketName": "images"}, EndpointName="ep")
    described_endpoint(sm, f"{retraining_prefix('ep')}261202-abcdef12")
    with cfn, sm:
        result = publish_baseline(session, "scones", MODEL)
    assert "serves endpoint config ep-rt-261202-abcdef12" in result["kept"]


def test_a_stack_whose_creation_failed_is_named_before_any_check() -> None:
    """ROLLBACK_COMPLETE: CloudFormation refuses to update it, so no value of it is kept,
    and nothing it had can be deleted; the way on is to delete it first."""
    session = _StubbedSession()
    cfn = session.stubs["cloudformation"]
    cfn.add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "scones",
                    "CreationTime": "2026-12-01T00:00:00Z",
                    "StackStatus": "ROLLBACK_COMPLETE",
                    "Parameters": [{"ParameterKey": "WorkflowType", "ParameterValue": "STANDARD"}],
                }
            ]
        },
        {"StackName": "scones"},
    )
    with cfn, pytest.raises(Exception, match=r"ROLLBACK_COMPLETE: its creation failed") as raised:
        previous_parameters(session.client("cloudformation"), "scones")
    assert "sam delete --stack-name scones" in str(raised.value)


def serving_endpoint(name: str, capture: str) -> None:
    """An endpoint ``name`` (moto) that captures its traffic into ``capture``."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model(
        ModelName=f"{name}-model",
        PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://models/model.tar.gz"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        DataCaptureConfig={
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": capture,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def preflight_beside(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    capture: str,
) -> tuple[int, str]:
    """`scones deploy-preflight` for a first deploy of the stack ``scones``, in an account
    where the endpoint ``prod-ep`` already serves and captures into ``capture``."""
    import scones.deploy
    from scones.cli.main import main

    config = dataclasses.replace(project_samconfig(), parameter_overrides=overrides)
    monkeypatch.setattr(scones.deploy, "read_samconfig", lambda *a, **k: config)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        serving_endpoint("prod-ep", capture)
        code = main(["deploy-preflight", "--stack", "scones", "--region", REGION])
    return code, capsys.readouterr().err


def test_deploy_preflight_warns_when_the_endpoint_captures_for_another_stack(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second stack in the account (staging beside prod) deployed with prod's EndpointName
    and CreateEndpoint=false would send its images to prod's endpoint, whose capture lands
    in prod's bucket: this stack's monitor would alert CAPTURE_MISSING every window, prod's
    would judge (and retrain on) staging's traffic."""
    shared = {"EndpointName": "prod-ep", "CreateEndpoint": "false"}
    code, err = preflight_beside(monkeypatch, capsys, shared, "s3://prod-images/datacapture")
    assert code == 0, err
    assert "endpoint prod-ep captures its traffic into s3://prod-images/datacapture" in err
    assert "not s3://scones-123456789012-us-east-1-images/datacapture" in err
    assert "give this stack its own EndpointName" in err
    # An endpoint made for this stack (scones sagemaker deploy --stack) captures into the
    # bucket the stack's first deploy creates: nothing to say.
    own = "s3://scones-123456789012-us-east-1-images/datacapture"
    code, err = preflight_beside(monkeypatch, capsys, shared, own)
    assert code == 0 and "captures its traffic" not in err, err


def test_deploy_preflight_refuses_to_create_an_endpoint_whose_name_is_taken(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With CreateEndpoint=true over a name another endpoint has, CloudFormation fails on
    the name and rolls the stack back (endpoint names are unique in an account and region):
    the preflight stops first and names the way out."""
    taken = {
        "EndpointName": "prod-ep",
        "CreateEndpoint": "true",
        "ModelImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/scones:1",
        "ModelDataUrl": "s3://models/model.tar.gz",
    }
    code, err = preflight_beside(monkeypatch, capsys, taken, "s3://prod-images/datacapture")
    assert code == 2, err
    assert "an endpoint named prod-ep already exists and this stack did not create it" in err
    assert "Give this stack its own EndpointName" in err
    assert "deploying stack" not in err

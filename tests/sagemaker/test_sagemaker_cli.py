"""``scones sagemaker ...`` end to end: real argument parsing, stubbed SageMaker, moto S3."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from sagemaker_fixtures import ACCOUNT_ARN, REGION, ROLE_ARN, no_such_endpoint

import scones.cli.sagemaker as cli
from scones.cli.main import main
from scones.model.dataset import prepare_dataset
from scones.sagemaker import source_bundle, training
from scones.sagemaker.channels import channel_uris
from scones.sagemaker.s3 import S3Uri
from scones.template_params import parameter_default

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "cifar100-bicycle-motorcycle"
SUFFIX = "20261125-101500"
IC_IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
TORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
SERVING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/scones-serving:1"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset(BUNDLED, out, validation_fraction=0.2, seed=0)
    return out


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch, sagemaker: Any, stubber: Stubber) -> dict[str, Any]:
    """The clients the command gets: the stubbed SageMaker one (tests add S3 where needed)."""
    made = {"sagemaker": sagemaker}
    monkeypatch.setattr(cli, "make_client", lambda service, region: made[service])
    monkeypatch.setattr(cli, "now_suffix", lambda: SUFFIX)
    return made


@pytest.fixture
def s3(clients: dict[str, Any]) -> Iterator[Any]:
    """S3 in moto, with the data bucket."""
    with mock_aws():
        clients["s3"] = boto3.client("s3", region_name=REGION)
        clients["s3"].create_bucket(Bucket="scones-data")
        yield clients["s3"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    try:
        code = main(["sagemaker", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


BUILTIN_ARGS = (
    "train-builtin",
    "--role-arn",
    ROLE_ARN,
    "--data-uri",
    "s3://scones-data/cifar",
    "--output-uri",
    "s3://scones-data/models",
)


def expected_builtin(samples: int, **hyperparameters: Any) -> dict[str, Any]:
    return training.builtin_training_request(
        job_name=f"scones-image-classification-{SUFFIX}",
        image_uri=IC_IMAGE,
        role_arn=ROLE_ARN,
        channels=channel_uris(S3Uri.parse("s3://scones-data/cifar")),
        output=S3Uri.parse("s3://scones-data/models"),
        hyperparameters=training.BuiltinHyperparameters(samples, **hyperparameters),
        resources=training.Resources("ml.g4dn.xlarge"),
    )


def test_train_builtin_counts_samples_and_starts_the_job(
    clients: dict[str, Any], stubber: Stubber, prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = expected_builtin(
        800, epochs=5, learning_rate=0.01, augmentation_type="crop", use_pretrained_model=True
    )
    job_arn = f"{ACCOUNT_ARN}:training-job/{request['TrainingJobName']}"
    stubber.add_response("create_training_job", {"TrainingJobArn": job_arn}, request)
    code, result, _ = run(
        capsys,
        *BUILTIN_ARGS,
        "--prepared-dir",
        str(prepared),
        "--epochs",
        "5",
        "--learning-rate",
        "0.01",
        "--augmentation-type",
        "crop",
        "--use-pretrained-model",
    )
    assert code == 0
    assert result == {"training_job_name": request["TrainingJobName"], "training_job_arn": job_arn}


def test_train_builtin_waits_for_the_model(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    request = expected_builtin(1000)
    name = request["TrainingJobName"]
    artifacts = f"s3://scones-data/models/{name}/output/model.tar.gz"
    described = {
        "TrainingJobName": name,
        "TrainingJobArn": f"{ACCOUNT_ARN}:training-job/{name}",
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "AlgorithmSpecification": request["AlgorithmSpecification"],
        "ModelArtifacts": {"S3ModelArtifacts": artifacts},
        "ResourceConfig": request["ResourceConfig"],
        "StoppingCondition": request["StoppingCondition"],
        "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
    }
    stubber.add_response("create_training_job", {"TrainingJobArn": described["TrainingJobArn"]})
    stubber.add_response("describe_training_job", described, {"TrainingJobName": name})
    stubber.add_response("describe_training_job", described, {"TrainingJobName": name})
    code, result, _ = run(capsys, *BUILTIN_ARGS, "--num-training-samples", "1000", "--wait")
    assert code == 0
    assert result["model_data"] == artifacts


def test_dry_run_sends_nothing_and_can_save_the_request(
    clients: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "retrain.json"
    code, result, _ = run(
        capsys,
        *BUILTIN_ARGS,
        "--num-training-samples",
        "800",
        "--image-uri",
        IC_IMAGE,
        "--dry-run",
        "--save-request",
        str(saved),
    )
    assert code == 0
    assert result == {"CreateTrainingJob": expected_builtin(800)}
    assert json.loads(saved.read_text()) == expected_builtin(800)


def test_train_script_uploads_the_bundle_and_starts_the_job(
    s3: Any, stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"scones-pytorch-{SUFFIX}"
    bundle_uri = S3Uri.parse(f"s3://scones-data/models/{name}/source/sourcedir.tar.gz")
    threshold = float(parameter_default("ConfidenceThreshold"))
    request = training.script_training_request(
        job_name=name,
        image_uri=TORCH_IMAGE,
        role_arn=ROLE_ARN,
        train_uri="s3://scones-data/cifar/train/",
        hyperparameters=training.script_hyperparameters(
            {"epochs": 60, "members": 3, "name": "nightly", "threshold": threshold},
            program="scones_train.py",
            submit_directory=bundle_uri,
            region=REGION,
            job_name=name,
        ),
        output=S3Uri.parse("s3://scones-data/models"),
        resources=training.Resources(parameter_default("RetrainingInstanceType")),
    )
    job_arn = f"{ACCOUNT_ARN}:training-job/{name}"
    stubber.add_response("create_training_job", {"TrainingJobArn": job_arn}, request)
    code, result, err = run(
        capsys,
        "train-script",
        "--role-arn",
        ROLE_ARN,
        "--image-uri",
        TORCH_IMAGE,
        "--data-uri",
        "s3://scones-data/cifar/",
        "--output-uri",
        "s3://scones-data/models",
        "-p",
        "epochs=60",
        "-p",
        "members=3",
        "--hyperparameter",
        "name=nightly",
    )
    assert code == 0, err
    assert result == {
        "source_bundle": str(bundle_uri),
        "training_job_name": name,
        "training_job_arn": job_arn,
    }
    body = s3.get_object(Bucket=bundle_uri.bucket, Key=bundle_uri.key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = set(tar.getnames())
    assert {source_bundle.PROGRAM, "requirements.txt", "scones/sagemaker/entry_point.py"} <= names


def described_endpoint(name: str, capture: str | None = None) -> dict[str, Any]:
    """DescribeEndpoint's answer for an endpoint in service, capturing into ``capture``."""
    answer: dict[str, Any] = {
        "EndpointName": name,
        "EndpointArn": f"{ACCOUNT_ARN}:endpoint/{name}",
        "EndpointConfigName": f"{name}-config-previous",
        "EndpointStatus": "InService",
        "CreationTime": datetime(2026, 11, 1, tzinfo=UTC),
        "LastModifiedTime": datetime(2026, 11, 1, tzinfo=UTC),
    }
    if capture is not None:
        answer["DataCaptureConfig"] = {
            "EnableCapture": True,
            "CaptureStatus": "Started",
            "CurrentSamplingPercentage": 100,
            "KmsKeyId": "",  # a required member of DescribeEndpoint's DataCaptureConfig
            "DestinationS3Uri": capture,
        }
    return answer


def endpoint_lookup(stubber: Stubber, name: str, described: dict[str, Any] | None) -> None:
    """Queue DescribeEndpoint's answer: ``described``, or SageMaker's error for no such name."""
    if described is None:
        no_such_endpoint(stubber, name)
    else:
        stubber.add_response("describe_endpoint", described, {"EndpointName": name})


def deploy_responses(stubber: Stubber, *, update: bool = False) -> dict[str, Any]:
    """Queue the hosting responses (the endpoint described first: there to update, absent to
    create); the requests are checked where they are built."""
    endpoint = parameter_default("EndpointName")
    names = {
        "model": f"{endpoint}-{SUFFIX}",
        "config": f"{endpoint}-config-{SUFFIX}",
        "endpoint": endpoint,
    }
    endpoint_lookup(stubber, endpoint, described_endpoint(endpoint) if update else None)
    stubber.add_response("create_model", {"ModelArn": f"{ACCOUNT_ARN}:model/{names['model']}"})
    stubber.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ACCOUNT_ARN}:endpoint-config/{names['config']}"},
    )
    stubber.add_response(
        "update_endpoint" if update else "create_endpoint",
        {"EndpointArn": f"{ACCOUNT_ARN}:endpoint/{endpoint}"},
    )
    return names


def test_deploy_from_a_training_job_with_capture_and_wait(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = parameter_default("EndpointName")
    artifacts = "s3://scones-data/models/job-1/output/model.tar.gz"
    stubber.add_response(
        "describe_training_job",
        {
            "TrainingJobName": "job-1",
            "TrainingJobArn": f"{ACCOUNT_ARN}:training-job/job-1",
            "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed",
            "AlgorithmSpecification": {"TrainingImage": IC_IMAGE, "TrainingInputMode": "File"},
            "ModelArtifacts": {"S3ModelArtifacts": artifacts},
            "ResourceConfig": {
                "InstanceType": "ml.g4dn.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 30,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
        },
        {"TrainingJobName": "job-1"},
    )
    names = {"model": f"{endpoint}-{SUFFIX}", "config": f"{endpoint}-config-{SUFFIX}"}
    endpoint_lookup(stubber, endpoint, None)
    stubber.add_response(
        "create_model",
        {"ModelArn": f"{ACCOUNT_ARN}:model/{names['model']}"},
        {
            "ModelName": names["model"],
            "PrimaryContainer": {"Image": IC_IMAGE, "ModelDataUrl": artifacts},
            "ExecutionRoleArn": ROLE_ARN,
        },
    )
    capture_prefix = parameter_default("DataCapturePrefix")
    stubber.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ACCOUNT_ARN}:endpoint-config/{names['config']}"},
        {
            "EndpointConfigName": names["config"],
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": names["model"],
                    "InitialInstanceCount": 1,
                    "InstanceType": parameter_default("EndpointInstanceType"),
                    "InitialVariantWeight": 1.0,
                }
            ],
            "DataCaptureConfig": {
                "EnableCapture": True,
                "InitialSamplingPercentage": int(
                    float(parameter_default("DataCaptureSamplingPercentage"))
                ),
                "DestinationS3Uri": f"s3://scones-stack-bucket/{capture_prefix}",
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
            },
        },
    )
    stubber.add_response(
        "create_endpoint",
        {"EndpointArn": f"{ACCOUNT_ARN}:endpoint/{endpoint}"},
        {"EndpointName": endpoint, "EndpointConfigName": names["config"]},
    )
    in_service = {
        "EndpointName": endpoint,
        "EndpointArn": f"{ACCOUNT_ARN}:endpoint/{endpoint}",
        "EndpointConfigName": names["config"],
        "EndpointStatus": "InService",
        "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
        "LastModifiedTime": datetime(2026, 11, 25, tzinfo=UTC),
    }
    stubber.add_response("describe_endpoint", in_service, {"EndpointName": endpoint})
    code, result, err = run(
        capsys,
        "deploy",
        "--role-arn",
        ROLE_ARN,
        "--image-uri",
        IC_IMAGE,
        "--training-job",
        "job-1",
        "--capture-bucket",
        "scones-stack-bucket",
        "--wait",
    )
    assert code == 0, err
    assert result == {
        "model_name": names["model"],
        "model_arn": f"{ACCOUNT_ARN}:model/{names['model']}",
        "endpoint_config_name": names["config"],
        "endpoint_config_arn": f"{ACCOUNT_ARN}:endpoint-config/{names['config']}",
        "endpoint_name": endpoint,
        "endpoint_arn": f"{ACCOUNT_ARN}:endpoint/{endpoint}",
        "endpoint_status": "InService",
    }


UPDATE_WITHOUT_CAPTURE = (
    "deploy",
    "--role-arn",
    ROLE_ARN,
    "--image-uri",
    SERVING_IMAGE,
    "--model-data",
    "s3://scones-data/models/m/model.tar.gz",
    "--no-capture",
    "--update",
)


def test_deploy_update_without_capture(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    names = deploy_responses(stubber, update=True)
    code, result, err = run(capsys, *UPDATE_WITHOUT_CAPTURE)
    assert code == 0, err
    assert result["endpoint_config_name"] == names["config"]


def test_deploy_update_and_wait_fails_when_sagemaker_rolled_the_update_back(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed update leaves the endpoint InService on its previous config, with the
    reason in FailureReason: the command must not report that as a deploy."""
    names = deploy_responses(stubber, update=True)
    reason = "The primary container for production variant AllTraffic did not pass the ping"
    stubber.add_response(
        "describe_endpoint",
        {
            "EndpointName": names["endpoint"],
            "EndpointArn": f"{ACCOUNT_ARN}:endpoint/{names['endpoint']}",
            "EndpointConfigName": f"{names['endpoint']}-config-previous",
            "EndpointStatus": "InService",
            "FailureReason": reason,
            "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
            "LastModifiedTime": datetime(2026, 11, 25, tzinfo=UTC),
        },
        {"EndpointName": names["endpoint"]},
    )
    code, _, err = run(capsys, *UPDATE_WITHOUT_CAPTURE, "--wait")
    assert code != 0
    assert f"not {names['config']}" in err and "rolled it back" in err and reason in err, err


CREATE_WITHOUT_CAPTURE = UPDATE_WITHOUT_CAPTURE[:-1]


def test_deploy_refuses_a_taken_endpoint_name_before_creating_anything(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    """Endpoint names are unique per account and region: CreateEndpoint would refuse one
    already there, after CreateModel and CreateEndpointConfig had made their resources.
    Nothing but DescribeEndpoint is queued, so any create call fails the test."""
    endpoint = parameter_default("EndpointName")
    endpoint_lookup(stubber, endpoint, described_endpoint(endpoint))
    code, _, err = run(capsys, *CREATE_WITHOUT_CAPTURE)
    assert code == 2, err
    assert f"endpoint {endpoint} already exists in {REGION}" in err, err
    assert "pass --update" in err and "another endpoint with --endpoint-name" in err, err


def test_deploy_update_of_a_missing_endpoint_is_refused_before_creating_anything(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    """UpdateEndpoint of a name no endpoint has fails after the model and config exist."""
    endpoint = parameter_default("EndpointName")
    endpoint_lookup(stubber, endpoint, None)
    code, _, err = run(capsys, *UPDATE_WITHOUT_CAPTURE)
    assert code == 2, err
    assert f"endpoint {endpoint} does not exist in {REGION}" in err, err
    assert "leave out --update to create it" in err, err


def test_deploy_reports_a_describe_endpoint_error_other_than_no_such_endpoint(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only SageMaker's "Could not find endpoint" means the name is free: a role that may not
    describe it is not told to create it."""
    stubber.add_client_error(
        "describe_endpoint",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform: sagemaker:DescribeEndpoint",
        http_status_code=400,
        expected_params={"EndpointName": parameter_default("EndpointName")},
    )
    code, _, err = run(capsys, *CREATE_WITHOUT_CAPTURE)
    assert code == 1, err
    assert "DescribeEndpoint failed: AccessDeniedException" in err, err


def test_deploy_dry_run_shows_the_capture_config(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = run(
        capsys,
        "deploy",
        "--role-arn",
        ROLE_ARN,
        "--image-uri",
        SERVING_IMAGE,
        "--model-data",
        "s3://scones-data/models/m/model.tar.gz",
        "--capture-uri",
        "s3://scones-data/capture",
        "--sampling-percentage",
        "10",
        "--endpoint-name",
        "canary",
        "--dry-run",
    )
    assert code == 0
    assert set(result) == {"CreateModel", "CreateEndpointConfig", "CreateEndpoint"}
    capture = result["CreateEndpointConfig"]["DataCaptureConfig"]
    assert capture["InitialSamplingPercentage"] == 10
    assert capture["DestinationS3Uri"] == "s3://scones-data/capture"
    assert result["CreateEndpoint"] == {
        "EndpointName": "canary",
        "EndpointConfigName": f"canary-config-{SUFFIX}",
    }
    # The stack's monitor reads the capture of, and its error alarm watches, this variant.
    (variant,) = result["CreateEndpointConfig"]["ProductionVariants"]
    assert variant["VariantName"] == parameter_default("EndpointVariantName")
    # As many instances as the stack's own endpoint would have.
    assert variant["InitialInstanceCount"] == int(parameter_default("EndpointInstanceCount"))


def test_deploy_names_the_variant_it_is_given(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--variant-name", "blue-1"]
    code, result, _ = run(capsys, *argv, "--dry-run")
    assert code == 0
    (variant,) = result["CreateEndpointConfig"]["ProductionVariants"]
    assert variant["VariantName"] == "blue-1"
    code, result, _ = run(capsys, *argv, "--instance-count", "3", "--dry-run")
    assert result["CreateEndpointConfig"]["ProductionVariants"][0]["InitialInstanceCount"] == 3


DEPLOY = ("deploy", "--image-uri", SERVING_IMAGE, "--model-data", "s3://b-1/m.tar.gz")

# A stack deployed with parameter overrides: none of these is the template's default.
STACK_PARAMETERS = {
    "EndpointName": "orders-classifier",
    "EndpointVariantName": "blue-1",
    "EndpointInstanceType": "ml.c5.large",
    "EndpointInstanceCount": "2",
    "DataCapturePrefix": "traffic/capture",
    "DataCaptureSamplingPercentage": "25",
}
STACK_BUCKET = "scones-123456789012-us-east-1-images"


@pytest.fixture
def cloudformation(clients: dict[str, Any]) -> Iterator[Stubber]:
    """The stubbed CloudFormation client ``--stack`` reads the deployed stack with."""
    clients["cloudformation"] = boto3.client("cloudformation", region_name=REGION)
    with Stubber(clients["cloudformation"]) as stub:
        yield stub
        stub.assert_no_pending_responses()


def describe_stack(
    stub: Stubber, outputs: dict[str, str], parameters: dict[str, str] = STACK_PARAMETERS
) -> None:
    stub.add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "orders",
                    "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
                    "StackStatus": "UPDATE_COMPLETE",
                    "Parameters": [
                        {"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()
                    ],
                    "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
                }
            ]
        },
        {"StackName": "orders"},
    )


def test_deploy_for_a_stack_takes_its_parameters_and_bucket(
    clients: dict[str, Any], cloudformation: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    """The endpoint the stack's workflow calls, captured where its monitor reads: its
    EndpointName, variant and capture prefix, not template.yaml's defaults."""
    assert all(parameter_default(k) != v for k, v in STACK_PARAMETERS.items())
    describe_stack(cloudformation, {"ImageBucketName": STACK_BUCKET})
    code, result, err = run(
        capsys, *DEPLOY, "--role-arn", ROLE_ARN, "--stack", "orders", "--dry-run"
    )
    assert code == 0, err
    assert result["CreateEndpoint"]["EndpointName"] == "orders-classifier"
    config = result["CreateEndpointConfig"]
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "blue-1"
    assert variant["InstanceType"] == "ml.c5.large"
    assert variant["InitialInstanceCount"] == 2
    capture = config["DataCaptureConfig"]
    assert capture["DestinationS3Uri"] == f"s3://{STACK_BUCKET}/traffic/capture"
    assert capture["InitialSamplingPercentage"] == 25


def test_deploy_for_a_stack_lets_explicit_options_win(
    clients: dict[str, Any], cloudformation: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    describe_stack(cloudformation, {"ImageBucketName": STACK_BUCKET})
    code, result, err = run(
        capsys,
        *DEPLOY,
        "--role-arn",
        ROLE_ARN,
        "--stack",
        "orders",
        "--endpoint-name",
        "canary",
        "--variant-name",
        "green-2",
        "--instance-count",
        "3",
        "--capture-bucket",
        "other-bucket",
        "--sampling-percentage",
        "5",
        "--dry-run",
    )
    assert code == 0, err
    assert result["CreateEndpoint"]["EndpointName"] == "canary"
    (variant,) = result["CreateEndpointConfig"]["ProductionVariants"]
    assert (variant["VariantName"], variant["InitialInstanceCount"]) == ("green-2", 3)
    assert variant["InstanceType"] == "ml.c5.large"  # not given: the stack's
    capture = result["CreateEndpointConfig"]["DataCaptureConfig"]
    # The bucket given, under the stack's prefix (where its monitor would read it).
    assert capture["DestinationS3Uri"] == "s3://other-bucket/traffic/capture"
    assert capture["InitialSamplingPercentage"] == 5


def test_deploy_for_a_stack_without_its_bucket_or_a_stack_at_all_is_refused(
    clients: dict[str, Any], cloudformation: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (*DEPLOY, "--role-arn", ROLE_ARN, "--stack", "orders", "--dry-run")
    describe_stack(cloudformation, {})  # still being created: no outputs yet
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "stack orders has no ImageBucketName output" in err
    cloudformation.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message="Stack with id orders does not exist",
        http_status_code=400,
    )
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert "stack orders was not found" in err and f"in {REGION}" in err, err


OTHER_STACK_CAPTURE = "s3://scones-123456789012-us-east-1-other-images/datacapture"
STACK_UPDATE = (*DEPLOY, "--role-arn", ROLE_ARN, "--stack", "orders", "--update")


def test_deploy_update_for_a_stack_refuses_another_stacks_endpoint(
    clients: dict[str, Any],
    stubber: Stubber,
    cloudformation: Stubber,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two stacks in one account can name the same endpoint: the one capturing into another
    bucket is the other stack's, and updating it would send that stack's capture (what its
    monitor reads) into this stack's bucket. Refused before anything is created, naming both
    destinations, with or without this deploy's own capture."""
    ours = f"s3://{STACK_BUCKET}/traffic/capture"
    for extra, planned in (
        ((), f"into {ours}"),
        (("--no-capture",), f"nothing (it is for bucket {STACK_BUCKET})"),
    ):
        describe_stack(cloudformation, {"ImageBucketName": STACK_BUCKET})
        endpoint_lookup(
            stubber,
            "orders-classifier",
            described_endpoint("orders-classifier", OTHER_STACK_CAPTURE),
        )
        code, _, err = run(capsys, *STACK_UPDATE, *extra)
        assert code == 2, err
        assert f"endpoint orders-classifier captures into {OTHER_STACK_CAPTURE}" in err, err
        assert planned in err and "--take-over" in err, err


def test_deploy_update_without_a_stack_refuses_an_endpoint_capturing_elsewhere(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --stack the capture this deploy gives is compared: a staging deploy updating
    production's endpoint by name would move production's capture into staging's bucket."""
    endpoint_lookup(
        stubber, "orders-classifier", described_endpoint("orders-classifier", OTHER_STACK_CAPTURE)
    )
    argv = (
        *DEPLOY,
        "--role-arn",
        ROLE_ARN,
        "--endpoint-name",
        "orders-classifier",
        "--capture-bucket",
        STACK_BUCKET,
        "--update",
    )
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert f"endpoint orders-classifier captures into {OTHER_STACK_CAPTURE}" in err, err


@pytest.mark.parametrize(
    ("status", "update", "advice"),
    [
        ("Updating", True, "wait until it is InService"),
        ("Failed", True, "delete it (aws sagemaker delete-endpoint)"),
        ("Failed", False, "it cannot be updated while Failed"),
    ],
)
def test_deploy_refuses_an_endpoint_sagemaker_cannot_update_before_creating_anything(
    clients: dict[str, Any],
    stubber: Stubber,
    capsys: pytest.CaptureFixture[str],
    status: str,
    update: bool,
    advice: str,
) -> None:
    """UpdateEndpoint refuses an endpoint with an operation under way, and a failed one
    (only DeleteEndpoint is accepted): refused first, not after the model and config were
    made, and a taken name is not answered with --update when that cannot work."""
    described = {**described_endpoint("orders-classifier"), "EndpointStatus": status}
    endpoint_lookup(stubber, "orders-classifier", described)
    argv = (*DEPLOY, "--role-arn", ROLE_ARN, "--endpoint-name", "orders-classifier")
    code, _, err = run(capsys, *argv, "--no-capture", *(("--update",) if update else ()))
    assert code == 2, err
    assert advice in err, err
    assert "pass --update" not in err


def stack_update_responses(stubber: Stubber) -> None:
    """What an update of the stack's endpoint sends after the endpoint is described."""
    model, config = f"orders-classifier-{SUFFIX}", f"orders-classifier-config-{SUFFIX}"
    stubber.add_response("create_model", {"ModelArn": f"{ACCOUNT_ARN}:model/{model}"})
    stubber.add_response(
        "create_endpoint_config", {"EndpointConfigArn": f"{ACCOUNT_ARN}:endpoint-config/{config}"}
    )
    stubber.add_response(
        "update_endpoint",
        {"EndpointArn": f"{ACCOUNT_ARN}:endpoint/orders-classifier"},
        {"EndpointName": "orders-classifier", "EndpointConfigName": config},
    )


def test_deploy_update_for_a_stack_updates_its_own_endpoint_or_one_taken_over(
    clients: dict[str, Any],
    stubber: Stubber,
    cloudformation: Stubber,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An endpoint capturing into the stack's bucket (under any prefix) is updated; one
    capturing elsewhere only with --take-over."""
    for capture, extra in (
        (f"s3://{STACK_BUCKET}/older/prefix", ()),
        (OTHER_STACK_CAPTURE, ("--take-over",)),
    ):
        describe_stack(cloudformation, {"ImageBucketName": STACK_BUCKET})
        endpoint_lookup(
            stubber, "orders-classifier", described_endpoint("orders-classifier", capture)
        )
        stack_update_responses(stubber)
        code, result, err = run(capsys, *STACK_UPDATE, *extra)
        assert code == 0, err
        assert result["endpoint_name"] == "orders-classifier"


TRAIN_SCRIPT = (
    "train-script",
    "--role-arn",
    ROLE_ARN,
    "--image-uri",
    TORCH_IMAGE,
    "--data-uri",
    "s3://b-1/d",
    "--output-uri",
    "s3://b-1/o",
)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            (*BUILTIN_ARGS[:1], *BUILTIN_ARGS[3:], "--num-training-samples", "8"),
            "--role-arn is required",
        ),
        ((*BUILTIN_ARGS, "--num-training-samples", "0"), "num_training_samples must be a positive"),
        ((*BUILTIN_ARGS, "--prepared-dir", "/nonexistent"), ".lst file not found"),
        (
            (
                "train-builtin",
                "--role-arn",
                ROLE_ARN,
                "--data-uri",
                "scones-data/cifar",
                "--output-uri",
                "s3://b-1/o",
            ),
            "--data-uri: not an S3 URI",
        ),
        (
            (
                "train-builtin",
                "--role-arn",
                "admin",
                "--data-uri",
                "s3://b-1/d",
                "--output-uri",
                "s3://b-1/o",
                "--num-training-samples",
                "8",
            ),
            "not an IAM role ARN",
        ),
        (
            (
                "train-script",
                "--role-arn",
                ROLE_ARN,
                "--data-uri",
                "s3://b-1/d",
                "--output-uri",
                "s3://b-1/o",
            ),
            "--image-uri is required",
        ),
        (
            (*TRAIN_SCRIPT, "-p", "epochs"),
            "--hyperparameter expects NAME=VALUE",
        ),
        (
            (*TRAIN_SCRIPT, "-p", "epochs=abc"),
            "the training program refuses it: argument --epochs: invalid int value: 'abc'",
        ),
        (
            (*TRAIN_SCRIPT, "-p", "bogus=1"),
            "unrecognized arguments: --bogus 1",
        ),
        (
            (*TRAIN_SCRIPT, "-p", "lr=inf"),
            "learning_rate must be a finite number > 0",
        ),
        ((*DEPLOY, "--capture-uri", "s3://b-1/c"), "--role-arn is required"),
        ((*DEPLOY, "--role-arn", ROLE_ARN), "--capture-uri or --capture-bucket is required"),
        (
            (
                *DEPLOY,
                "--role-arn",
                ROLE_ARN,
                "--capture-uri",
                "s3://b-1/c",
                "--sampling-percentage",
                "150",
            ),
            "sampling percentage must be 0-100",
        ),
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--capture-uri", "s3:/b-1/c"),
            "--capture-uri: not an S3 URI",
        ),
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--capture-uri", "s3://b-1/c"),
            "--no-capture contradicts",
        ),
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--sampling-percentage", "50"),
            "--no-capture contradicts --sampling-percentage",
        ),
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--endpoint-name", "Bad_Name"),
            "invalid SageMaker name",
        ),
        # A variant is named like any SageMaker resource: refused before CreateModel.
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--variant-name", "bad variant!"),
            "invalid SageMaker name 'bad variant!'",
        ),
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--instance-count", "0"),
            "argument --instance-count: 0 is not at least 1",
        ),
        (
            ("deploy", "--role-arn", ROLE_ARN, "--image-uri", SERVING_IMAGE, "--no-capture"),
            "--model-data or --training-job is required",
        ),
        # Only an update checks whose endpoint it is: nothing to take over else.
        (
            (*DEPLOY, "--role-arn", ROLE_ARN, "--no-capture", "--take-over"),
            "--take-over is for --update",
        ),
        (
            ("deploy", "--role-arn", ROLE_ARN, "--model-data", "s3://b-1/m.tar.gz", "--no-capture"),
            "--image-uri is required",
        ),
    ],
)
def test_clear_errors(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, _, err = run(capsys, *argv, "--dry-run")
    assert code == 2
    assert message in err


def test_aws_errors_are_reported_by_operation(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint_lookup(stubber, parameter_default("EndpointName"), None)
    stubber.add_client_error(
        "create_model",
        service_error_code="ValidationException",
        service_message="Could not access model data at s3://b-1/m.tar.gz",
        http_status_code=400,
    )
    code, _, err = run(capsys, *DEPLOY, "--role-arn", ROLE_ARN, "--no-capture")
    assert code == 1  # asked correctly; AWS refused
    assert "CreateModel failed: ValidationException: Could not access model data" in err


def test_deploy_refuses_an_unfinished_training_job(
    clients: dict[str, Any], stubber: Stubber, capsys: pytest.CaptureFixture[str]
) -> None:
    stubber.add_response(
        "describe_training_job",
        {
            "TrainingJobName": "job-2",
            "TrainingJobArn": f"{ACCOUNT_ARN}:training-job/job-2",
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "AlgorithmSpecification": {"TrainingImage": IC_IMAGE, "TrainingInputMode": "File"},
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "ResourceConfig": {
                "InstanceType": "ml.g4dn.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 30,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
        },
    )
    code, _, err = run(
        capsys,
        "deploy",
        "--role-arn",
        ROLE_ARN,
        "--image-uri",
        IC_IMAGE,
        "--training-job",
        "job-2",
        "--no-capture",
    )
    assert code == 2
    assert "training job job-2 is InProgress, not Completed" in err


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sagemaker", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train-builtin", "train-script", "deploy"))

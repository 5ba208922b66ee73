"""Request builders and the thin client calls, checked against botocore's Stubber.

The Stubber validates every request against the SageMaker service model, so an
expected request that SageMaker would reject fails here too.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import Stubber
from sagemaker_fixtures import REGION, ROLE_ARN, no_such_endpoint

from scones.sagemaker import hosting, training
from scones.sagemaker.channels import channel_uris
from scones.sagemaker.errors import LaunchError, ResourceFailedError
from scones.sagemaker.naming import check_name, resource_name, timestamp_suffix
from scones.sagemaker.s3 import S3Uri

IC_IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
TORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
JOB_ARN = f"arn:aws:sagemaker:{REGION}:123456789012:training-job/"


def s3_channel(name: str, uri: str, content_type: str | None) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }
    if content_type:
        channel["ContentType"] = content_type
    return channel


def builtin_request(**overrides: Any) -> dict[str, Any]:
    hyperparameters = training.BuiltinHyperparameters(
        num_training_samples=800,
        epochs=30,
        learning_rate=0.001,
        mini_batch_size=32,
        use_pretrained_model=True,
        augmentation_type="crop_color_transform",
        num_layers=18,
    )
    arguments: dict[str, Any] = {
        "job_name": "scones-image-classification-20261125-101500",
        "image_uri": IC_IMAGE,
        "role_arn": ROLE_ARN,
        "channels": channel_uris(S3Uri.parse("s3://scones-data/cifar")),
        "output": S3Uri.parse("s3://scones-data/models"),
        "hyperparameters": hyperparameters,
        "resources": training.Resources(instance_type="ml.g4dn.xlarge"),
    }
    arguments.update(overrides)
    return training.builtin_training_request(**arguments)


# --- names and URIs -----------------------------------------------------------------------


def test_names_carry_the_injected_clock() -> None:
    clock = lambda: datetime(2026, 11, 25, 11, 15, 0, tzinfo=timezone(timedelta(hours=1)))  # noqa: E731
    suffix = timestamp_suffix(clock)
    assert suffix == "20261125-101500"
    assert resource_name("scones-pytorch", suffix) == "scones-pytorch-20261125-101500"
    long = resource_name("x" * 80, suffix)
    assert len(long) == 63 and long.endswith("-20261125-101500")
    assert timestamp_suffix(lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "20260102-030405"


@pytest.mark.parametrize("name", ["", "-leading", "trailing-", "under_score", "x" * 64, "a b"])
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(LaunchError, match="invalid SageMaker name"):
        check_name(name)


def test_s3_uris() -> None:
    uri = S3Uri.parse("s3://my-bucket/a/b/")
    assert (uri.bucket, uri.key, str(uri), uri.prefix_uri) == (
        "my-bucket",
        "a/b",
        "s3://my-bucket/a/b",
        "s3://my-bucket/a/b/",
    )
    assert str(uri.join("c", "/d/")) == "s3://my-bucket/a/b/c/d"
    assert str(S3Uri.parse("s3://my-bucket").join("x")) == "s3://my-bucket/x"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("my-bucket/prefix", "not an S3 URI"),
        ("https://my-bucket.s3.amazonaws.com/x", "not an S3 URI"),
        ("s3://", "invalid S3 bucket name"),
        ("s3://UpperCase/x", "invalid S3 bucket name"),
        ("s3://ab/x", "invalid S3 bucket name"),
        ("s3://my-bucket/a//b", "invalid S3 key"),
        ("s3://my-bucket/a/../b", "invalid S3 key"),
    ],
)
def test_malformed_s3_uris(uri: str, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        S3Uri.parse(uri)


def test_builtin_image_uri_per_region() -> None:
    assert training.builtin_image_uri("us-east-1") == IC_IMAGE
    assert training.builtin_image_uri("eu-west-1") == (
        "685385470294.dkr.ecr.eu-west-1.amazonaws.com/image-classification:1"
    )
    with pytest.raises(LaunchError, match="pass --image-uri"):
        training.builtin_image_uri("mars-north-1")


# --- training requests --------------------------------------------------------------------


def test_builtin_request_shape(sagemaker: Any, stubber: Stubber) -> None:
    request = builtin_request()
    assert request == {
        "TrainingJobName": "scones-image-classification-20261125-101500",
        "AlgorithmSpecification": {"TrainingImage": IC_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE_ARN,
        "HyperParameters": {
            "image_shape": "3,32,32",
            "num_classes": "2",
            "num_training_samples": "800",
            "epochs": "30",
            "learning_rate": "0.001",
            "mini_batch_size": "32",
            "use_pretrained_model": "1",
            "augmentation_type": "crop_color_transform",
            "num_layers": "18",
        },
        "InputDataConfig": [
            s3_channel("train", "s3://scones-data/cifar/train/", "application/x-image"),
            s3_channel("validation", "s3://scones-data/cifar/validation/", "application/x-image"),
            s3_channel("train_lst", "s3://scones-data/cifar/train_lst/", "application/x-image"),
            s3_channel(
                "validation_lst", "s3://scones-data/cifar/validation_lst/", "application/x-image"
            ),
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://scones-data/models/"},
        "ResourceConfig": {
            "InstanceType": "ml.g4dn.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 10800},
    }
    arn = JOB_ARN + request["TrainingJobName"]
    stubber.add_response("create_training_job", {"TrainingJobArn": arn}, request)
    assert training.start_training_job(sagemaker, request) == arn


def test_builtin_defaults_are_the_algorithms() -> None:
    hyperparameters = training.BuiltinHyperparameters(num_training_samples=10).as_strings()
    assert hyperparameters == {
        "image_shape": "3,32,32",
        "num_classes": "2",
        "num_training_samples": "10",
        "epochs": "30",
        "learning_rate": "0.1",
        "mini_batch_size": "32",
        "use_pretrained_model": "0",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_training_samples": 0}, "num_training_samples must be a positive integer"),
        ({"epochs": -1}, "epochs must be a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0"),
        ({"augmentation_type": "rotate"}, "augmentation_type must be one of"),
        ({"num_layers": 0}, "num_layers must be one of 18, 20, 32"),
        ({"num_layers": 7}, "num_layers must be one of 18, 20, 32"),
    ],
)
def test_bad_builtin_hyperparameters(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        training.BuiltinHyperparameters(**{"num_training_samples": 10, **fields})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"role_arn": ""}, "role ARN .* is required"),
        ({"role_arn": "SconesRole"}, "not an IAM role ARN"),
        ({"role_arn": "arn:aws:iam::123:role/x"}, "not an IAM role ARN"),
        ({"image_uri": "not an image"}, "not a container image URI"),
    ],
)
def test_bad_training_settings(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        builtin_request(**overrides)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"instance_type": "m5.large"}, "start with 'ml.'"),
        ({"instance_count": 0}, "instance_count must be >= 1"),
        ({"max_runtime_seconds": 0}, "max_runtime_seconds must be >= 1"),
    ],
)
def test_bad_resources(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        training.Resources(**{"instance_type": "ml.m5.large", **fields})


def test_script_request_shape(sagemaker: Any, stubber: Stubber) -> None:
    name = "scones-pytorch-20261125-101500"
    bundle = S3Uri.parse(f"s3://scones-data/models/{name}/source/sourcedir.tar.gz")
    hyperparameters = training.script_hyperparameters(
        {"epochs": 40, "lr": 0.05, "threshold": 0.93, "name": "bicycle-motorcycle"},
        program="scones_train.py",
        submit_directory=bundle,
        region=REGION,
        job_name=name,
    )
    assert hyperparameters == {
        "epochs": "40",
        "lr": "0.05",
        "threshold": "0.93",
        "name": '"bicycle-motorcycle"',
        "sagemaker_program": '"scones_train.py"',
        "sagemaker_submit_directory": f'"{bundle}"',
        "sagemaker_region": '"us-east-1"',
        "sagemaker_job_name": f'"{name}"',
        "sagemaker_container_log_level": "20",
    }
    request = training.script_training_request(
        job_name=name,
        image_uri=TORCH_IMAGE,
        role_arn=ROLE_ARN,
        train_uri="s3://scones-data/cifar/train/",
        hyperparameters=hyperparameters,
        output=S3Uri.parse("s3://scones-data/models"),
        resources=training.Resources(instance_type="ml.m5.xlarge", max_runtime_seconds=3600),
    )
    assert request == {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": TORCH_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE_ARN,
        "HyperParameters": hyperparameters,
        "InputDataConfig": [s3_channel("train", "s3://scones-data/cifar/train/", None)],
        "OutputDataConfig": {"S3OutputPath": "s3://scones-data/models/"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    stubber.add_response("create_training_job", {"TrainingJobArn": JOB_ARN + name}, request)
    assert training.start_training_job(sagemaker, request) == JOB_ARN + name


def test_script_hyperparameters_reserve_the_toolkit_names() -> None:
    with pytest.raises(LaunchError, match="'sagemaker_' are reserved"):
        training.script_hyperparameters(
            {"sagemaker_program": "evil.py"},
            program="scones_train.py",
            submit_directory=S3Uri.parse("s3://b-1/x.tar.gz"),
            region=REGION,
            job_name="j",
        )


def test_stubber_rejects_an_invalid_request(sagemaker: Any, stubber: Stubber) -> None:
    """The service model, not our code, says a request without a role is invalid."""
    request = builtin_request()
    del request["RoleArn"]
    stubber.add_response("create_training_job", {"TrainingJobArn": JOB_ARN + "x"})
    with pytest.raises(ParamValidationError, match="RoleArn"):
        training.start_training_job(sagemaker, request)
    request = builtin_request()
    request["ResourceConfig"]["InstanceCount"] = "one"
    with pytest.raises(ParamValidationError, match="InstanceCount"):
        training.start_training_job(sagemaker, request)
    training.start_training_job(sagemaker, builtin_request())  # consumes the queued response


def test_wait_for_training_job(sagemaker: Any, stubber: Stubber) -> None:
    name = "scones-image-classification-20261125-101500"
    artifacts = f"s3://scones-data/models/{name}/output/model.tar.gz"
    completed = describe_training_job(
        name, "Completed", ModelArtifacts={"S3ModelArtifacts": artifacts}
    )
    stubber.add_response("describe_training_job", completed, {"TrainingJobName": name})
    stubber.add_response("describe_training_job", completed, {"TrainingJobName": name})
    assert training.wait_for_training_job(sagemaker, name, delay=1, max_attempts=1) == artifacts


def test_wait_for_a_failed_training_job(sagemaker: Any, stubber: Stubber) -> None:
    name = "scones-image-classification-20261125-101500"
    failed = describe_training_job(name, "Failed", FailureReason="ClientError: no train.lst")
    stubber.add_response("describe_training_job", failed, {"TrainingJobName": name})
    stubber.add_response("describe_training_job", failed, {"TrainingJobName": name})
    with pytest.raises(
        ResourceFailedError, match=f"{name} ended Failed: ClientError: no train.lst"
    ):
        training.wait_for_training_job(sagemaker, name, delay=1, max_attempts=1)


def test_a_training_job_stopped_at_its_runtime_limit_says_so(
    sagemaker: Any, stubber: Stubber
) -> None:
    """A job SageMaker stops at MaxRuntimeInSeconds has no FailureReason: its secondary
    status and the last transition's message are the reason."""
    name = "scones-image-classification-20261125-101500"
    message = "Training job runtime exceeded MaxRuntimeInSeconds provided"
    stopped = describe_training_job(
        name,
        "Stopped",
        SecondaryStatus="MaxRuntimeExceeded",
        SecondaryStatusTransitions=[
            {"Status": "Training", "StartTime": datetime(2026, 11, 25, tzinfo=UTC)},
            {
                "Status": "MaxRuntimeExceeded",
                "StartTime": datetime(2026, 11, 25, 3, tzinfo=UTC),
                "StatusMessage": message,
            },
        ],
    )
    stubber.add_response("describe_training_job", stopped, {"TrainingJobName": name})
    stubber.add_response("describe_training_job", stopped, {"TrainingJobName": name})
    with pytest.raises(ResourceFailedError) as failure:
        training.wait_for_training_job(sagemaker, name, delay=1, max_attempts=1)
    expected = f"training job {name} ended Stopped (MaxRuntimeExceeded): {message}"
    assert str(failure.value) == expected


def test_a_training_job_still_running_when_the_wait_ends_is_not_called_ended(
    sagemaker: Any, stubber: Stubber
) -> None:
    name = "scones-image-classification-20261125-101500"
    running = describe_training_job(name, "InProgress", SecondaryStatus="Training")
    stubber.add_response("describe_training_job", running, {"TrainingJobName": name})
    stubber.add_response("describe_training_job", running, {"TrainingJobName": name})
    with pytest.raises(ResourceFailedError) as failure:
        training.wait_for_training_job(sagemaker, name, delay=1, max_attempts=1)
    message = str(failure.value)
    assert "ended" not in message
    assert f"training job {name} is still InProgress (Training) after 1 checks" in message


def describe_training_job(name: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": JOB_ARN + name,
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "AlgorithmSpecification": {"TrainingImage": IC_IMAGE, "TrainingInputMode": "File"},
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "ResourceConfig": {
            "InstanceType": "ml.g4dn.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 10800},
        "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
        **extra,
    }


# --- hosting ------------------------------------------------------------------------------

MODEL_DATA = "s3://scones-data/models/job/output/model.tar.gz"


def deploy_plan(capture: hosting.DataCapture | None) -> hosting.DeployPlan:
    return hosting.DeployPlan(
        model=hosting.model_request(
            model_name="scones-bicycle-motorcycle-20261125-101500",
            image_uri=IC_IMAGE,
            model_data_url=MODEL_DATA,
            role_arn=ROLE_ARN,
        ),
        endpoint_config=hosting.endpoint_config_request(
            config_name="scones-bicycle-motorcycle-config-20261125-101500",
            model_name="scones-bicycle-motorcycle-20261125-101500",
            instance_type="ml.m5.large",
            capture=capture,
        ),
        endpoint=hosting.endpoint_request(
            endpoint_name="scones-bicycle-motorcycle",
            config_name="scones-bicycle-motorcycle-config-20261125-101500",
        ),
    )


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:123456789012:{kind}/{name}"


def test_endpoint_config_carries_data_capture() -> None:
    capture = hosting.DataCapture(S3Uri.parse("s3://scones-bucket/datacapture"), 25)
    plan = deploy_plan(capture)
    assert plan.endpoint_config == {
        "EndpointConfigName": "scones-bicycle-motorcycle-config-20261125-101500",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "scones-bicycle-motorcycle-20261125-101500",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
        ],
        "DataCaptureConfig": {
            "EnableCapture": True,
            "InitialSamplingPercentage": 25,
            "DestinationS3Uri": "s3://scones-bucket/datacapture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        },
    }
    assert plan.model == {
        "ModelName": "scones-bicycle-motorcycle-20261125-101500",
        "PrimaryContainer": {"Image": IC_IMAGE, "ModelDataUrl": MODEL_DATA},
        "ExecutionRoleArn": ROLE_ARN,
    }
    assert "DataCaptureConfig" not in deploy_plan(None).endpoint_config


@pytest.mark.parametrize("percentage", [-1, 101, 1000])
def test_sampling_percentage_out_of_range(percentage: int) -> None:
    with pytest.raises(LaunchError, match="sampling percentage must be 0-100"):
        hosting.DataCapture(S3Uri.parse("s3://scones-bucket/dc"), percentage)


@pytest.mark.parametrize("update", [False, True])
def test_deploy_returns_arns_without_waiting(
    sagemaker: Any, stubber: Stubber, update: bool
) -> None:
    plan = deploy_plan(hosting.DataCapture(S3Uri.parse("s3://scones-bucket/datacapture")))
    model, config, endpoint = (
        plan.model["ModelName"],
        plan.endpoint_config["EndpointConfigName"],
        plan.endpoint["EndpointName"],
    )
    if update:  # there to update
        queue_endpoint(stubber, describe_endpoint("InService", EndpointConfigName=OLD_CONFIG))
    else:  # a name no endpoint has yet
        queue_no_endpoint(stubber)
    stubber.add_response("create_model", {"ModelArn": arn("model", model)}, plan.model)
    stubber.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": arn("endpoint-config", config)},
        plan.endpoint_config,
    )
    stubber.add_response(
        "update_endpoint" if update else "create_endpoint",
        {"EndpointArn": arn("endpoint", endpoint)},
        plan.endpoint,
    )
    result = hosting.deploy(sagemaker, plan, update=update)
    assert result.as_dict() == {
        "model_name": model,
        "model_arn": arn("model", model),
        "endpoint_config_name": config,
        "endpoint_config_arn": arn("endpoint-config", config),
        "endpoint_name": endpoint,
        "endpoint_arn": arn("endpoint", endpoint),
    }


CAPTURE = {
    "EnableCapture": True,
    "CaptureStatus": "Started",
    "CurrentSamplingPercentage": 100,
    "KmsKeyId": "",  # a required member of DescribeEndpoint's DataCaptureConfig
    "DestinationS3Uri": "s3://other-stack-bucket/datacapture",
}


@pytest.mark.parametrize(
    ("update", "described", "capture_bucket", "message"),
    [
        (False, {}, None, "already exists in us-east-1 (InService, serving endpoint config"),
        (True, None, None, "does not exist in us-east-1, so it cannot be updated"),
        (
            True,
            {"DataCaptureConfig": CAPTURE},
            "scones-bucket",
            "captures into s3://other-stack-bucket/datacapture, and this deploy would capture "
            "into s3://scones-bucket/datacapture",
        ),
    ],
)
def test_deploy_refuses_before_creating_anything(
    sagemaker: Any,
    stubber: Stubber,
    update: bool,
    described: dict[str, Any] | None,
    capture_bucket: str | None,
    message: str,
) -> None:
    """What CreateEndpoint or UpdateEndpoint would refuse once the model and config exist
    (they would stay behind) is refused after DescribeEndpoint alone: no create is queued."""
    if described is None:
        queue_no_endpoint(stubber)
    else:
        queue_endpoint(stubber, describe_endpoint("InService", **described))
    plan = deploy_plan(hosting.DataCapture(S3Uri.parse("s3://scones-bucket/datacapture")))
    with pytest.raises(LaunchError, match=re.escape(message)):
        hosting.deploy(sagemaker, plan, update=update, capture_bucket=capture_bucket)


def test_existing_endpoint_is_none_only_for_a_name_no_endpoint_has(
    sagemaker: Any, stubber: Stubber
) -> None:
    queue_no_endpoint(stubber)
    assert hosting.existing_endpoint(sagemaker, ENDPOINT) is None
    stubber.add_client_error(
        "describe_endpoint",
        service_error_code="ThrottlingException",
        service_message="Rate exceeded",
        http_status_code=400,
        expected_params={"EndpointName": ENDPOINT},
    )
    with pytest.raises(ClientError, match="ThrottlingException"):
        hosting.existing_endpoint(sagemaker, ENDPOINT)
    queue_endpoint(stubber, describe_endpoint("InService"))
    found = hosting.existing_endpoint(sagemaker, ENDPOINT)
    assert found is not None and found["EndpointStatus"] == "InService"


def test_stubber_rejects_an_endpoint_config_without_variants(
    sagemaker: Any, stubber: Stubber
) -> None:
    valid = deploy_plan(None).endpoint_config
    invalid = {k: v for k, v in valid.items() if k != "ProductionVariants"}
    stubber.add_response(
        "create_endpoint_config", {"EndpointConfigArn": arn("endpoint-config", "x")}
    )
    with pytest.raises(ParamValidationError, match="ProductionVariants"):
        sagemaker.create_endpoint_config(**invalid)
    sagemaker.create_endpoint_config(**valid)


def describe_endpoint(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "EndpointName": "scones-bicycle-motorcycle",
        "EndpointArn": arn("endpoint", "scones-bicycle-motorcycle"),
        "EndpointConfigName": "scones-bicycle-motorcycle-config-20261125-101500",
        "EndpointStatus": status,
        "CreationTime": datetime(2026, 11, 25, tzinfo=UTC),
        "LastModifiedTime": datetime(2026, 11, 25, tzinfo=UTC),
        **extra,
    }


ENDPOINT = "scones-bicycle-motorcycle"
OLD_CONFIG = "scones-bicycle-motorcycle-config-20261101-080000"
NEW_CONFIG = "scones-bicycle-motorcycle-config-20261125-101500"


class Sleeps:
    """The wait's injected sleep: records the delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def queue_endpoint(stubber: Stubber, *answers: dict[str, Any]) -> None:
    for answer in answers:
        stubber.add_response("describe_endpoint", answer, {"EndpointName": ENDPOINT})


def queue_no_endpoint(stubber: Stubber) -> None:
    """SageMaker's answer to DescribeEndpoint of a name no endpoint has."""
    no_such_endpoint(stubber, ENDPOINT)


def test_wait_for_endpoint(sagemaker: Any, stubber: Stubber) -> None:
    queue_endpoint(stubber, describe_endpoint("Creating"), describe_endpoint("InService"))
    sleeps = Sleeps()
    status = hosting.wait_for_endpoint(sagemaker, ENDPOINT, delay=7, sleep=sleeps)
    assert status == "InService"
    assert sleeps.delays == [7]


def test_wait_for_a_failed_endpoint(sagemaker: Any, stubber: Stubber) -> None:
    queue_endpoint(stubber, describe_endpoint("Failed", FailureReason="image not found in ECR"))
    with pytest.raises(ResourceFailedError, match="is Failed: image not found in ECR"):
        hosting.wait_for_endpoint(sagemaker, ENDPOINT, delay=1, sleep=Sleeps())


def test_an_update_is_done_only_when_its_config_serves(sagemaker: Any, stubber: Stubber) -> None:
    queue_endpoint(
        stubber,
        describe_endpoint("Updating", EndpointConfigName=OLD_CONFIG),
        describe_endpoint("InService", EndpointConfigName=NEW_CONFIG),
    )
    status = hosting.wait_for_endpoint(
        sagemaker, ENDPOINT, config_name=NEW_CONFIG, delay=1, sleep=Sleeps()
    )
    assert status == "InService"


def test_an_update_that_sagemaker_rolled_back_is_a_failure(
    sagemaker: Any, stubber: Stubber
) -> None:
    """A failed UpdateEndpoint ends InService on the previous config, with FailureReason
    (DescribeEndpoint's documentation): the old model serves, the update did not happen."""
    reason = "The primary container for production variant AllTraffic did not pass the ping"
    queue_endpoint(
        stubber,
        describe_endpoint("Updating", EndpointConfigName=OLD_CONFIG),
        describe_endpoint("InService", EndpointConfigName=OLD_CONFIG, FailureReason=reason),
    )
    with pytest.raises(ResourceFailedError) as failure:
        hosting.wait_for_endpoint(
            sagemaker, ENDPOINT, config_name=NEW_CONFIG, delay=1, sleep=Sleeps()
        )
    message = str(failure.value)
    assert f"InService on endpoint config {OLD_CONFIG}, not {NEW_CONFIG}" in message
    assert "rolled it back" in message and reason in message


def test_a_failed_rollback_is_reported_without_waiting_out_the_limit(
    sagemaker: Any, stubber: Stubber
) -> None:
    """UpdateRollbackFailed is settled: the waiter of botocore would poll it for an hour."""
    reason = "Both the deployment and the rollback failed"
    queue_endpoint(stubber, describe_endpoint("UpdateRollbackFailed", FailureReason=reason))
    sleeps = Sleeps()
    with pytest.raises(ResourceFailedError, match=f"is UpdateRollbackFailed: {reason}"):
        hosting.wait_for_endpoint(sagemaker, ENDPOINT, config_name=NEW_CONFIG, sleep=sleeps)
    assert sleeps.delays == []


def test_an_endpoint_that_does_not_settle_is_not_called_failed(
    sagemaker: Any, stubber: Stubber
) -> None:
    queue_endpoint(stubber, *[describe_endpoint("Updating")] * 3)
    sleeps = Sleeps()
    with pytest.raises(ResourceFailedError, match="is still Updating after 3 checks 5 s apart"):
        hosting.wait_for_endpoint(sagemaker, ENDPOINT, delay=5, max_attempts=3, sleep=sleeps)
    assert sleeps.delays == [5, 5]


def test_requests_are_json_serialisable() -> None:
    """``--dry-run`` prints them, and RetrainingJobConfigS3Uri stores one as JSON."""
    json.dumps(builtin_request())
    json.dumps(deploy_plan(hosting.DataCapture(S3Uri.parse("s3://b-1/p"))).__dict__)

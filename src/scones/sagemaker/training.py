"""SageMaker training jobs: request builders (pure) and thin calls on an injected client.

Two kinds of job:

- the built-in image-classification algorithm, configured as the original
  project used it (``image_shape`` ``3,32,32``, two classes, the four
  ``application/x-image`` channels written by ``scones prepare-data``);
- the project's own PyTorch training in script mode: a framework image runs
  ``scones_train.py`` from a source bundle on S3 (see :mod:`.source_bundle`).

The builders return the exact ``CreateTrainingJob`` request, so tests compare
dicts and a dry run can print what would be sent.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import WaiterError

from scones.sagemaker.channels import ChannelUris
from scones.sagemaker.errors import LaunchError, ResourceFailedError
from scones.sagemaker.s3 import S3Uri

IMAGE_SHAPE = "3,32,32"
NUM_CLASSES = 2
AUGMENTATION_TYPES = ("crop", "crop_color", "crop_color_transform")
# The depths the built-in image-classification algorithm offers (ImageNet-style and CIFAR-style).
BUILTIN_NUM_LAYERS = (18, 20, 32, 34, 44, 50, 56, 101, 110, 152, 200)
IMAGE_CONTENT_TYPE = "application/x-image"

BUILTIN_REGISTRIES: Mapping[str, str] = {
    "ap-northeast-1": "501404015308",
    "ap-northeast-2": "306986355934",
    "ap-south-1": "991648021394",
    "ap-southeast-1": "475088953585",
    "ap-southeast-2": "544295431143",
    "ca-central-1": "469771592824",
    "eu-central-1": "813361260812",
    "eu-north-1": "669576153137",
    "eu-west-1": "685385470294",
    "eu-west-2": "644912444149",
    "eu-west-3": "749696950732",
    "sa-east-1": "855470959533",
    "us-east-1": "811284229777",
    "us-east-2": "825641698319",
    "us-west-1": "632365934929",
    "us-west-2": "433757028032",
}
"""ECR accounts of the built-in ``image-classification:1`` image, as listed in the
SageMaker Python SDK (``sagemaker/image_uri_config/image-classification.json``). For
other regions, ``sagemaker.image_uris.retrieve("image-classification", region)`` or the
"Docker Registry Paths" page of the SageMaker documentation gives the URI."""

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_IMAGE_URI = re.compile(r"^[\w.-]+(:\d+)?/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})?$")


def builtin_image_uri(region: str) -> str:
    """The built-in image-classification algorithm's image in ``region``."""
    account = BUILTIN_REGISTRIES.get(region)
    if account is None:
        raise LaunchError(
            f"no known image-classification image for region {region!r}; pass --image-uri "
            '(sagemaker.image_uris.retrieve("image-classification", region) prints it)'
        )
    return f"{account}.dkr.ecr.{region}.amazonaws.com/image-classification:1"


def check_role_arn(role_arn: str | None) -> str:
    if not role_arn:
        raise LaunchError("an IAM role ARN that SageMaker can assume is required (--role-arn)")
    if not _ROLE_ARN.match(role_arn):
        raise LaunchError(f"not an IAM role ARN: {role_arn!r}")
    return role_arn


def check_image_uri(image_uri: str) -> str:
    if not _IMAGE_URI.match(image_uri):
        raise LaunchError(f"not a container image URI: {image_uri!r}")
    return image_uri


@dataclass(frozen=True)
class Resources:
    """Where and how long a training job runs."""

    instance_type: str
    instance_count: int = 1
    volume_size_gb: int = 30
    max_runtime_seconds: int = 3 * 3600

    def __post_init__(self) -> None:
        if not self.instance_type.startswith("ml."):
            raise LaunchError(f"SageMaker instance types start with 'ml.': {self.instance_type!r}")
        for name in ("instance_count", "volume_size_gb", "max_runtime_seconds"):
            if getattr(self, name) < 1:
                raise LaunchError(f"{name} must be >= 1, got {getattr(self, name)}")

    def request_parts(self) -> dict[str, Any]:
        return {
            "ResourceConfig": {
                "InstanceType": self.instance_type,
                "InstanceCount": self.instance_count,
                "VolumeSizeInGB": self.volume_size_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_seconds},
        }


@dataclass(frozen=True)
class BuiltinHyperparameters:
    """The image-classification algorithm's settings; defaults are the algorithm's own."""

    num_training_samples: int
    epochs: int = 30
    learning_rate: float = 0.1
    mini_batch_size: int = 32
    use_pretrained_model: bool = False
    augmentation_type: str | None = None
    num_layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_training_samples", "epochs", "mini_batch_size"):
            if getattr(self, name) < 1:
                raise LaunchError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise LaunchError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate}"
            )
        if self.augmentation_type is not None and self.augmentation_type not in AUGMENTATION_TYPES:
            raise LaunchError(
                f"augmentation_type must be one of {', '.join(AUGMENTATION_TYPES)}, "
                f"got {self.augmentation_type!r}"
            )
        if self.num_layers is not None and self.num_layers not in BUILTIN_NUM_LAYERS:
            raise LaunchError(
                f"num_layers must be one of {', '.join(map(str, BUILTIN_NUM_LAYERS))} "
                f"(the built-in algorithm's ResNets), got {self.num_layers}"
            )

    def as_strings(self) -> dict[str, str]:
        """The ``HyperParameters`` map: SageMaker takes every value as a string."""
        values: dict[str, str] = {
            "image_shape": IMAGE_SHAPE,
            "num_classes": str(NUM_CLASSES),
            "num_training_samples": str(self.num_training_samples),
            "epochs": str(self.epochs),
            "learning_rate": repr(float(self.learning_rate)),
            "mini_batch_size": str(self.mini_batch_size),
            "use_pretrained_model": "1" if self.use_pretrained_model else "0",
        }
        if self.augmentation_type is not None:
            values["augmentation_type"] = self.augmentation_type
        if self.num_layers is not None:
            values["num_layers"] = str(self.num_layers)
        return values


def _channel(name: str, uri: str, content_type: str | None) -> dict[str, Any]:
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


def builtin_training_request(
    *,
    job_name: str,
    image_uri: str,
    role_arn: str,
    channels: ChannelUris,
    output: S3Uri,
    hyperparameters: BuiltinHyperparameters,
    resources: Resources,
) -> dict[str, Any]:
    """``CreateTrainingJob`` for the built-in algorithm on the four lst-mode channels."""
    return _training_request(
        job_name=job_name,
        image_uri=image_uri,
        role_arn=role_arn,
        hyperparameters=hyperparameters.as_strings(),
        inputs=[
            _channel(name, uri, IMAGE_CONTENT_TYPE) for name, uri in channels.as_dict().items()
        ],
        output=output,
        resources=resources,
    )


def script_hyperparameters(
    values: Mapping[str, str | int | float | bool],
    *,
    program: str,
    submit_directory: S3Uri,
    region: str,
    job_name: str,
) -> dict[str, str]:
    """JSON-encode every value and add the keys the SageMaker training toolkit reads.

    This is what the SageMaker Python SDK sends for framework estimators; the toolkit
    decodes the values and passes them to the program as ``--name value`` arguments.
    """
    reserved = [key for key in values if key.startswith("sagemaker_")]
    if reserved:
        raise LaunchError(
            f"hyperparameter names starting with 'sagemaker_' are reserved: {reserved}"
        )
    encoded = {key: json.dumps(value) for key, value in values.items()}
    encoded.update(
        {
            "sagemaker_program": json.dumps(program),
            "sagemaker_submit_directory": json.dumps(str(submit_directory)),
            "sagemaker_region": json.dumps(region),
            "sagemaker_job_name": json.dumps(job_name),
            "sagemaker_container_log_level": "20",
        }
    )
    return encoded


def script_training_request(
    *,
    job_name: str,
    image_uri: str,
    role_arn: str,
    train_uri: str,
    hyperparameters: Mapping[str, str],
    output: S3Uri,
    resources: Resources,
) -> dict[str, Any]:
    """``CreateTrainingJob`` for script mode; see :func:`script_hyperparameters`."""
    return _training_request(
        job_name=job_name,
        image_uri=image_uri,
        role_arn=role_arn,
        hyperparameters=dict(hyperparameters),
        inputs=[_channel("train", train_uri, None)],
        output=output,
        resources=resources,
    )


def _training_request(
    *,
    job_name: str,
    image_uri: str,
    role_arn: str,
    hyperparameters: dict[str, str],
    inputs: list[dict[str, Any]],
    output: S3Uri,
    resources: Resources,
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request both training forms share (File input mode)."""
    return {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {
            "TrainingImage": check_image_uri(image_uri),
            "TrainingInputMode": "File",
        },
        "RoleArn": check_role_arn(role_arn),
        "HyperParameters": hyperparameters,
        "InputDataConfig": inputs,
        "OutputDataConfig": {"S3OutputPath": output.prefix_uri},
        **resources.request_parts(),
    }


def start_training_job(sagemaker_client: Any, request: Mapping[str, Any]) -> str:
    """Send the request; the job's ARN."""
    return str(sagemaker_client.create_training_job(**request)["TrainingJobArn"])


def wait_for_training_job(
    sagemaker_client: Any, job_name: str, *, delay: int = 60, max_attempts: int = 240
) -> str:
    """Block until the job stops; the S3 URI of its ``model.tar.gz``."""
    waiter = sagemaker_client.get_waiter("training_job_completed_or_stopped")
    with contextlib.suppress(WaiterError):  # a failed job ends the wait; the status says why
        waiter.wait(
            TrainingJobName=job_name, WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts}
        )
    job = sagemaker_client.describe_training_job(TrainingJobName=job_name)
    status = str(job["TrainingJobStatus"])
    if status == "Completed":
        return str(job["ModelArtifacts"]["S3ModelArtifacts"])
    secondary = job.get("SecondaryStatus")
    state = f"{status} ({secondary})" if secondary and secondary != status else status
    if status in RUNNING_JOB_STATUSES:
        raise ResourceFailedError(
            f"training job {job_name} is still {state} after {max_attempts} checks {delay} s "
            "apart: it goes on, so check it later with DescribeTrainingJob"
        )
    raise ResourceFailedError(f"training job {job_name} ended {state}: {_stop_reason(job)}")


# DescribeTrainingJob's statuses of a job that has not stopped yet.
RUNNING_JOB_STATUSES = frozenset({"InProgress", "Stopping"})


def _stop_reason(job: Mapping[str, Any]) -> str:
    """``FailureReason``, or else the last status transition's message: a job SageMaker
    stopped (its runtime limit, spot capacity) may carry no ``FailureReason``."""
    if job.get("FailureReason"):
        return str(job["FailureReason"])
    messages = [
        str(t["StatusMessage"])
        for t in job.get("SecondaryStatusTransitions") or []
        if t.get("StatusMessage")
    ]
    return messages[-1] if messages else "no reason given"

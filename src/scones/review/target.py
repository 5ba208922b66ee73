"""Where a review reads and writes: a deployed stack, found through CloudFormation.

The same code serves AWS and the offline stack: only the endpoint URLs differ.
Outputs give the bucket and the table; parameters give the labels, the labelled
data prefix and the accepted-sample share (as deployed, not as template.yaml says).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from botocore.config import Config
from scones_core.bucket_layout import INCOMING, nested_pairs
from scones_core.errors import SettingsError
from scones_core.review import ReviewSettings
from scones_core.settings import ImageLimits, parse_labels

from scones.template_params import function_environment, parameter_defaults

# SigV4 (the bucket is encrypted with KMS) and path-style addressing, which the offline
# stack's loopback endpoint needs as well as AWS accepts.
S3_CONFIG = Config(signature_version="s3v4", s3={"addressing_style": "path"})


class TargetError(RuntimeError):
    """The stack cannot be found or lacks what a review needs."""


@dataclass(frozen=True)
class ReviewTarget:
    stack_name: str
    bucket: str
    table_name: str
    incoming_prefix: str
    parameters: dict[str, str]

    def settings(self, *, sample_share: float | None, sample_days: float) -> ReviewSettings:
        labels = parse_labels(self.parameters["ModelLabels"])
        prefix = self.parameters["LabelledDataPrefix"]
        if nested_pairs(
            {INCOMING: self.incoming_prefix, "LabelledDataPrefix": prefix},
            [(INCOMING, "LabelledDataPrefix")],
        ):
            raise TargetError(
                f"LabelledDataPrefix {prefix!r} overlaps IncomingPrefix {self.incoming_prefix!r}: "
                "copies would be classified again"
            )
        share = (
            float(self.parameters["ReviewSampleShare"]) if sample_share is None else sample_share
        )
        return ReviewSettings(
            bucket=self.bucket,
            table_name=self.table_name,
            labels=labels,
            labelled_prefix=prefix,
            sample_share=share,
            sample_window=timedelta(days=sample_days),
            upload_retention=upload_retention(self.parameters),
            image_limits=image_limits(self.parameters),
        )


def image_limits(parameters: dict[str, str]) -> ImageLimits:
    """The deployed image rules, as the Serialize step reads them (its environment)."""
    try:
        return ImageLimits.from_env(
            function_environment("SerializeImageFunction", overrides=parameters)
        )
    except SettingsError as exc:
        raise TargetError(f"the stack's image rules: {exc}") from None


def upload_retention(parameters: dict[str, str]) -> timedelta | None:
    """The deployed ``UploadRetentionDays`` (0, or absent in an older stack: kept forever)."""
    value = parameters.get("UploadRetentionDays", "0")
    try:
        days = int(value)
    except ValueError:
        raise TargetError(f"UploadRetentionDays {value!r} is not a whole number of days") from None
    return timedelta(days=days) if days > 0 else None


def find_target(cloudformation: Any, *, stack_name: str | None, bucket: str | None) -> ReviewTarget:
    """The stack named ``stack_name``, or the one whose bucket is ``bucket``."""
    if stack_name:
        try:
            stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        except Exception as exc:
            raise TargetError(f"stack {stack_name!r}: {exc}") from exc
    else:
        stacks = [
            s
            for page in cloudformation.get_paginator("describe_stacks").paginate()
            for s in page["Stacks"]
        ]
    for stack in stacks:
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if bucket and outputs.get("ImageBucketName") != bucket:
            continue
        if "ImageBucketName" not in outputs or "ResultsTableName" not in outputs:
            continue
        parameters = parameter_defaults() | {
            p["ParameterKey"]: str(p.get("ParameterValue", "")) for p in stack.get("Parameters", [])
        }
        return ReviewTarget(
            stack_name=stack["StackName"],
            bucket=outputs["ImageBucketName"],
            table_name=outputs["ResultsTableName"],
            incoming_prefix=str(outputs.get("IncomingPrefix") or parameters["IncomingPrefix"]),
            parameters=parameters,
        )
    wanted = f"stack {stack_name!r}" if stack_name else f"a stack with bucket {bucket!r}"
    raise TargetError(f"found no {wanted} with ImageBucketName and ResultsTableName outputs")

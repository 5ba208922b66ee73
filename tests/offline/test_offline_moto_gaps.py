"""moto's known gaps, checked on a raw deployment (no filling), in-process.

Kept apart from the running-stack tests: ``mock_aws`` resets moto's global
state when it exits, which would wipe a stack running in the same process.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from scones.offline.deploy import transform
from scones.offline.gaps import package_state_machines
from scones.offline.packaging import package_template
from scones.template_params import PROJECT_ROOT, load_template


def cfn_template() -> dict[str, Any]:
    template = load_template()
    packaged, _ = package_template(template, PROJECT_ROOT, "artifacts")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        definitions = package_state_machines(packaged, PROJECT_ROOT, s3, "artifacts")
    return {"cfn": transform(packaged, "us-east-1"), "definitions": definitions}


def test_moto_still_drops_what_the_deployment_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    """When this fails, a moto upgrade closed a gap: drop that part of scones.offline.gaps."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    built = cfn_template()
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        for key, data in _artifacts():
            s3.put_object(Bucket="artifacts", Key=key, Body=data)
        template = dict(built["cfn"])
        # moto cannot take the layer Ref at all; leave layers out to see the rest.
        for resource in template["Resources"].values():
            resource.get("Properties", {}).pop("Layers", None)
        cfn.create_stack(
            StackName="raw", TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"]
        )
        resources = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cfn.list_stack_resources(StackName="raw")["StackResourceSummaries"]
        }
        bucket = resources["ImageBucket"]
        assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)
        table = resources["ResultsTable"]
        pitr = boto3.client("dynamodb", region_name="us-east-1").describe_continuous_backups(
            TableName=table
        )["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
        assert pitr["PointInTimeRecoveryStatus"] == "DISABLED"
        assert (
            boto3.client("cloudwatch", region_name="us-east-1").describe_alarms()["MetricAlarms"]
            == []
        )


def _artifacts() -> list[tuple[str, bytes]]:
    _, artifacts = package_template(load_template(), PROJECT_ROOT, "artifacts")
    return [(a.key, a.data) for a in artifacts]

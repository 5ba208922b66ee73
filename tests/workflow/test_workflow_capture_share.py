"""The offline endpoint captures the share of requests DataCaptureSamplingPercentage says,
as the endpoint config's InitialSamplingPercentage does on AWS: the monitor is told that
share and counts the traffic it expects in the capture by it."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES
from scones_core.records import capture_id

from scones.offline.stack import OfflineStack, StackOptions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("capture-share-stack")]


def test_a_stack_that_samples_none_of_its_traffic_captures_none() -> None:
    options = StackOptions(overrides={"DataCaptureSamplingPercentage": "0"})
    with OfflineStack(options) as stack:
        api = stack.api()
        images = sorted(SAMPLES.glob("*/*.png"))[:4]
        records = api.wait_for_records(api.upload_files(images, key_prefix="sampled/"), 120)
        classified = [r for r in records.values() if r["status"] in ("ACCEPTED", "NEEDS_REVIEW")]
        assert len(classified) == 4  # the endpoint answered every request
        assert stack.flush_capture() == 0
        listing = stack.client("s3").list_objects_v2(
            Bucket=stack.bucket, Prefix=stack.parameters["DataCapturePrefix"]
        )
        assert listing["KeyCount"] == 0


def test_the_variant_named_by_the_stack_serves_captures_and_is_monitored() -> None:
    """EndpointVariantName (an existing endpoint's variant need not be AllTraffic) names
    the variant that answers, the capture folder it writes and the one the monitor reads."""
    options = StackOptions(overrides={"EndpointVariantName": "blue-1"})
    with OfflineStack(options) as stack:
        api = stack.api()
        images = sorted(SAMPLES.glob("*/*.png"))[:2]
        records = api.wait_for_records(api.upload_files(images, key_prefix="blue/"), 120)
        assert {r["endpoint_variant"] for r in records.values()} == {"blue-1"}
        stack.flush_capture()
        prefix = f"{stack.parameters['DataCapturePrefix']}/{stack.parameters['EndpointName']}/"
        listing = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
        assert {o["Key"][len(prefix) :].split("/")[0] for o in listing["Contents"]} == {"blue-1"}
        assert api.invoke_monitor({})["request_count"] == 2
        # Each captured request names its record by digest (the InferenceId the classify
        # step sends): an upload's captured copy can be found, and erased, from its record.
        captured = {
            json.loads(line)["eventMetadata"]["inferenceId"]
            for o in listing["Contents"]
            for line in stack.client("s3")
            .get_object(Bucket=stack.bucket, Key=o["Key"])["Body"]
            .read()
            .decode()
            .splitlines()
        }
        assert captured == {capture_id(r["pk"]) for r in records.values()}
        # A second variant of the endpoint (an A/B variant, say) captured in the same hour:
        # the monitor still measures blue-1 only, and names the folder it leaves unread.
        s3 = stack.client("s3")
        first = listing["Contents"][0]["Key"]
        s3.copy_object(
            Bucket=stack.bucket,
            CopySource={"Bucket": stack.bucket, "Key": first},
            Key=prefix + "green-2/" + first[len(prefix + "blue-1/") :],
        )
        result = api.invoke_monitor({})
        assert result["request_count"] == 2
        assert [(w["code"], w["source"]) for w in result["warnings"]] == [
            ("OTHER_VARIANT_CAPTURE", f"s3://{stack.bucket}/{prefix}green-2/")
        ]

"""The offline endpoint captures the share of requests DataCaptureSamplingPercentage says,
as the endpoint config's InitialSamplingPercentage does on AWS: the monitor is told that
share and counts the traffic it expects in the capture by it."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

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

"""The whole image catalog through the offline stack: one exact record per upload.

Real template in moto, the real ASL, the real handlers in Lambda workers and the
shipped model behind the endpoint. Rejected files must never reach the endpoint
(no ClassifyImage state in their execution history), and a valid unusual file
must get the same answer as the plain PNG it was made from.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SAMPLES, template_limits
from image_catalog import SAME_INPUT, Entry, awkward_keys, bad_inputs, unusual_images
from workflow_helpers import image_events

from scones.offline.client import Upload
from scones.offline.stack import OfflineStack

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-stack")]

LIMITS = template_limits()
SOURCE = sorted((SAMPLES / "motorcycle").glob("*.png"))[0]
CATALOG = (
    bad_inputs(SOURCE, LIMITS.max_bytes, LIMITS.max_pixels)
    + unusual_images(SOURCE)
    + awkward_keys(SOURCE)
)


@pytest.fixture(scope="module")
def outcome(stack: OfflineStack) -> dict[str, tuple[Entry, Upload, dict[str, Any]]]:
    api = stack.api()
    uploads = {entry.name: (entry, api.upload_bytes(entry.key, entry.data)) for entry in CATALOG}
    records = api.wait_for_records([u for _, u in uploads.values()], timeout=180)
    return {name: (entry, upload, records[upload]) for name, (entry, upload) in uploads.items()}


def states_entered(stack: OfflineStack, record: dict[str, Any]) -> set[str]:
    """The states this image's iteration entered (its batch's other images aside)."""
    sfn = stack.api().client("stepfunctions")
    return {
        event["stateEnteredEventDetails"]["name"]
        for event in image_events(sfn, record["execution_arn"], record["pk"])
        if "stateEnteredEventDetails" in event
    }


def test_every_upload_has_exactly_one_record_under_its_exact_key(
    stack: OfflineStack, outcome: dict[str, tuple[Entry, Upload, dict[str, Any]]]
) -> None:
    by_key: dict[str, int] = {}
    for record in stack.api().records():
        by_key[record["key"]] = by_key.get(record["key"], 0) + 1
    for entry, upload, record in outcome.values():
        assert record["key"] == upload.key, entry.name
        assert by_key[upload.key] == 1, entry.name


@pytest.mark.parametrize("name", [e.name for e in CATALOG if e.status == "REJECTED"])
def test_rejected_files_get_their_code_and_never_reach_the_endpoint(
    stack: OfflineStack, outcome: dict[str, tuple[Entry, Upload, dict[str, Any]]], name: str
) -> None:
    entry, _, record = outcome[name]

    assert record["status"] == "REJECTED"
    assert record["error_code"] == entry.error_code
    assert entry.reason_words in record["reason"]
    assert "label" not in record and "confidence" not in record
    entered = states_entered(stack, record)
    assert "ClassifyImage" not in entered
    assert {"SerializeImage", "CheckImage", "RecordRejected"} <= entered


@pytest.mark.parametrize("name", [e.name for e in CATALOG if e.status == "CLASSIFIED"])
def test_valid_unusual_files_are_classified_like_their_png_source(
    outcome: dict[str, tuple[Entry, Upload, dict[str, Any]]], name: str
) -> None:
    entry, _, record = outcome[name]
    _, _, plain = outcome["plain.png"]

    assert record["status"] in ("ACCEPTED", "NEEDS_REVIEW")
    assert record["label"] == SOURCE.parent.name
    if entry.compare == SAME_INPUT and entry.source == plain_source():
        assert record["probabilities"] == plain["probabilities"]
        assert record["status"] == plain["status"]


def plain_source() -> bytes:
    return SOURCE.read_bytes()

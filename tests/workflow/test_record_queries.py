"""The status index's one query (``record_queries.status_index_pages``), as DynamoDB's
API takes it: each bound's key condition, and placeholders a caller may not reuse."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from scones_core.record_queries import status_index_pages
from scones_core.records import RECORDED_AT_ATTRIBUTE, STATUS_ATTRIBUTE, STATUS_INDEX_NAME, Status


def captured(client: Any, bounds: dict[str, Any]) -> dict[str, Any]:
    """The request the query sends for ``bounds``; the Stubber checks it against
    botocore's model of DynamoDB's Query."""
    seen: dict[str, Any] = {}

    def keep(params: dict[str, Any], **_: Any) -> None:
        seen.update(params)

    client.meta.events.register("provide-client-params.dynamodb.Query", keep)
    with Stubber(client) as stubber:
        stubber.add_response("query", {"Items": [], "Count": 0})
        pages = list(status_index_pages(client, "results", Status.FAILED, **bounds))
        stubber.assert_no_pending_responses()
    assert pages == [{"Items": [], "Count": 0}]
    return seen


def asked(**bounds: Any) -> dict[str, Any]:
    return captured(boto3.client("dynamodb", region_name="us-east-1"), bounds)


@pytest.mark.parametrize(
    ("bounds", "condition", "values"),
    [
        ({}, "#status = :status", {}),
        ({"at_least": "a"}, "#status = :status AND #recorded >= :at_least", {":at_least"}),
        ({"at_most": "b"}, "#status = :status AND #recorded <= :at_most", {":at_most"}),
        (
            {"at_least": "a", "at_most": "b"},
            "#status = :status AND #recorded BETWEEN :at_least AND :at_most",
            {":at_least", ":at_most"},
        ),
        ({"before": "c"}, "#status = :status AND #recorded < :before", {":before"}),
    ],
)
def test_each_bound_asks_the_status_index_for_its_range(
    bounds: dict[str, str], condition: str, values: set[str]
) -> None:
    request = asked(**bounds)
    assert request["IndexName"] == STATUS_INDEX_NAME
    assert request["KeyConditionExpression"] == condition
    assert request["ExpressionAttributeValues"][":status"] == {"S": "FAILED"}
    assert set(request["ExpressionAttributeValues"]) == {":status", *values}
    expected_names = {"#status": STATUS_ATTRIBUTE}
    if bounds:
        expected_names["#recorded"] = RECORDED_AT_ATTRIBUTE
    assert request["ExpressionAttributeNames"] == expected_names


def test_the_callers_own_placeholders_and_request_are_added() -> None:
    request = captured(
        boto3.client("dynamodb", region_name="us-east-1"),
        {
            "at_least": "a",
            "names": {"#sampled": "review_sampled"},
            "values": {":true": {"BOOL": True}},
            "FilterExpression": "#sampled = :true",
            "Select": "COUNT",
        },
    )
    assert request["ExpressionAttributeNames"]["#sampled"] == "review_sampled"
    assert request["ExpressionAttributeValues"][":true"] == {"BOOL": True}
    assert request["FilterExpression"] == "#sampled = :true"
    assert request["Select"] == "COUNT"


@pytest.mark.parametrize(
    "bounds",
    [
        {"names": {"#status": "other"}},
        {"at_least": "a", "names": {"#recorded": "other"}},
        {"values": {":status": {"S": "ACCEPTED"}}},
        {"before": "c", "values": {":before": {"S": "d"}}},
    ],
)
def test_a_caller_may_not_reuse_the_key_conditions_placeholders(bounds: dict[str, Any]) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    with pytest.raises(ValueError, match="placeholders of the key condition reused"):
        list(status_index_pages(client, "results", Status.FAILED, **bounds))


@pytest.mark.parametrize("bound", ["at_least", "at_most"])
def test_before_is_a_range_of_its_own(bound: str) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    with pytest.raises(ValueError, match="one range"):
        list(status_index_pages(client, "results", Status.FAILED, before="c", **{bound: "a"}))

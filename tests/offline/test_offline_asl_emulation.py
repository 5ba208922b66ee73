"""What moto's ASL grammar refuses in the backfill's Distributed Map, and its offline rewrite."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from scones.asl_check import substitute
from scones.offline.asl_emulation import for_moto
from scones.template_params import PROJECT_ROOT, parameter_defaults

ROLE = "arn:aws:iam::123456789012:role/backfill"


def backfill_definition() -> str:
    text = (PROJECT_ROOT / "statemachine" / "backfill.asl.json").read_text()
    defaults = parameter_defaults()
    values = {name: defaults[name] for name in defaults}
    values["ImageBucketName"] = "bucket"
    values["BackfillFunctionArn"] = "arn:aws:lambda:us-east-1:123456789012:function:backfill"
    return substitute(text, values)


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_moto_still_refuses_the_distributed_map_as_aws_takes_it() -> None:
    """When this fails, moto parses ItemBatcher and EXPRESS children: drop the emulation."""
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    with pytest.raises(sfn.exceptions.ClientError, match=r"ItemBatcher|EXPRESS"):
        sfn.create_state_machine(name="raw", definition=backfill_definition(), roleArn=ROLE)


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_the_rewrite_keeps_the_map_and_hands_the_processor_aws_batch_shape() -> None:
    original = json.loads(backfill_definition())
    rewritten = json.loads(for_moto(backfill_definition()))
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    sfn.create_state_machine(name="offline", definition=json.dumps(rewritten), roleArn=ROLE)
    before, after = (d["States"]["ClassifyEveryObject"] for d in (original, rewritten))
    assert "ItemBatcher" not in after
    assert after["ItemSelector"] == {
        "Items.$": "States.Array($$.Map.Item.Value)",
        "BatchInput": before["ItemBatcher"]["BatchInput"],
    }
    assert after["ItemReader"] == before["ItemReader"]
    assert after["MaxConcurrency"] == before["MaxConcurrency"]
    assert after["ToleratedFailurePercentage"] == before["ToleratedFailurePercentage"]
    assert after["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert for_moto('{"StartAt": "A", "States": {}}') == '{"StartAt": "A", "States": {}}'

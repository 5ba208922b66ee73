"""``scones.offline.express_retention``: finished Express executions are forgotten offline,
as AWS keeps none; Standard executions and running ones stay.

The first assertions are the guard: moto keeps every finished Express execution (with its
history). Once it stops doing that, they fail and the sweeper can go.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from scones.offline.express_retention import ExpressRetention, prune_finished_express

ROLE = "arn:aws:iam::123456789012:role/sfn"
PASS = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
WAIT = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 30, "End": True}}})


def _settled(sfn: Any, arns: list[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = [sfn.describe_execution(executionArn=a)["status"] for a in arns]
        if "RUNNING" not in statuses:
            return
        time.sleep(0.05)
    raise AssertionError(f"executions still running: {statuses}")


def _start(sfn: Any, machine: str, name: str) -> str:
    return str(sfn.start_execution(stateMachineArn=machine, name=name)["executionArn"])


def _machine(sfn: Any, name: str, definition: str = PASS, kind: str = "EXPRESS") -> str:
    return str(
        sfn.create_state_machine(name=name, definition=definition, roleArn=ROLE, type=kind)[
            "stateMachineArn"
        ]
    )


def _count(sfn: Any, machine: str) -> int:
    return len(sfn.list_executions(stateMachineArn=machine)["executions"])


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_finished_express_executions_are_forgotten_after_the_retention() -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    express = _machine(sfn, "express")
    standard = _machine(sfn, "standard", kind="STANDARD")
    waiting = _machine(sfn, "waiting", WAIT)
    done = [_start(sfn, express, f"done-{n}") for n in range(3)]
    kept = [_start(sfn, standard, f"kept-{n}") for n in range(2)]
    running = _start(sfn, waiting, "running")
    _settled(sfn, done + kept)
    # The guard: moto keeps them, history and all.
    assert _count(sfn, express) == 3
    assert sfn.get_execution_history(executionArn=done[0])["events"]

    now = datetime.now(UTC)
    assert prune_finished_express(now, timedelta(minutes=10)) == 0  # not over long enough
    assert prune_finished_express(now + timedelta(minutes=11), timedelta(minutes=10)) == 3

    assert _count(sfn, express) == 0
    assert _count(sfn, standard) == 2  # Standard histories are readable on AWS too
    assert sfn.describe_execution(executionArn=running)["status"] == "RUNNING"
    assert _count(sfn, waiting) == 1
    sfn.stop_execution(executionArn=running)


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_the_sweeper_prunes_in_the_background_until_stopped() -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    express = _machine(sfn, "express")
    sweeper = ExpressRetention(timedelta(seconds=1)).start()
    try:
        # Not described first: on a loaded machine the sweeper may prune one (1 s after it
        # ended) before a description reaches it. Only finished executions are pruned, so
        # none left means all five finished and went.
        for n in range(5):
            _start(sfn, express, f"e-{n}")
        deadline = time.monotonic() + 30
        # The sweeper counts a pass once it has pruned it: wait for both.
        while (_count(sfn, express) or sweeper.dropped < 5) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _count(sfn, express) == 0
        assert sweeper.dropped == 5
    finally:
        sweeper.stop()

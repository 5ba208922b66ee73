"""``scones.offline.interpreter_threads``: the Step Functions interpreter's ended threads
are forgotten; running ones, and ones not started yet, stay.

The first assertions are the guard: moto keeps every thread it started, ended or not.
Once it stops doing that, they fail and the sweeper can go.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
from moto import mock_aws
from moto.stepfunctions.parser.utils import TMP_THREADS

from scones.offline.interpreter_threads import ThreadSweeper, prune_finished_threads

ROLE = "arn:aws:iam::123456789012:role/sfn"
PASS = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
WAIT = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 30, "End": True}}})


def _machine(sfn: Any, name: str, definition: str = PASS, kind: str = "STANDARD") -> str:
    arn = sfn.create_state_machine(name=name, definition=definition, roleArn=ROLE, type=kind)
    return str(arn["stateMachineArn"])


def _run(sfn: Any, machine: str, names: list[str]) -> None:
    arns = [sfn.start_execution(stateMachineArn=machine, name=n)["executionArn"] for n in names]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(sfn.describe_execution(executionArn=a)["status"] != "RUNNING" for a in arns):
            return
        time.sleep(0.05)
    raise AssertionError("executions still running")


def _ended() -> int:
    return sum(t.ident is not None and not t.is_alive() for t in TMP_THREADS)


def _wait_ended(at_least: int) -> None:
    # An execution reads SUCCEEDED a moment before its threads return.
    deadline = time.monotonic() + 10
    while _ended() < at_least and time.monotonic() < deadline:
        time.sleep(0.05)


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_ended_interpreter_threads_are_forgotten() -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    standard = _machine(sfn, "standard")
    express = _machine(sfn, "express", kind="EXPRESS")
    waiting = _machine(sfn, "waiting", WAIT)
    prune_finished_threads()  # what other tests in this process left
    running = sfn.start_execution(stateMachineArn=waiting, name="running")["executionArn"]
    not_started = threading.Thread(target=lambda: None)
    TMP_THREADS.append(not_started)  # as moto does, just before it starts one
    _run(sfn, standard, [f"s-{n}" for n in range(5)])
    _run(sfn, express, [f"e-{n}" for n in range(5)])
    # Each execution ends two threads (its logic and its program's): all twenty must have
    # ended, or one still alive below could end between `alive` and the prune.
    _wait_ended(20)
    # The guard: moto keeps each execution's threads once they have ended.
    assert _ended() >= 10
    alive = [t for t in TMP_THREADS if t.is_alive()]
    assert alive  # the waiting execution's

    assert prune_finished_threads() >= 10
    assert _ended() == 0
    assert not_started in TMP_THREADS
    assert all(t in TMP_THREADS for t in alive)
    sfn.stop_execution(executionArn=running)
    TMP_THREADS.remove(not_started)


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_the_sweeper_prunes_in_the_background_until_stopped() -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    standard = _machine(sfn, "standard")
    prune_finished_threads()
    sweeper = ThreadSweeper(interval=0.2).start()
    try:
        _run(sfn, standard, [f"s-{n}" for n in range(5)])
        deadline = time.monotonic() + 30
        while (_ended() or sweeper.dropped < 5) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ended() == 0
        assert sweeper.dropped >= 5
    finally:
        sweeper.stop()
    _run(sfn, standard, ["after"])
    _wait_ended(1)
    time.sleep(0.5)
    assert _ended() >= 1  # stopped: nothing prunes any more

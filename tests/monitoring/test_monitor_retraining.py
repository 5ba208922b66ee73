"""Retraining starts once per cooldown, backing off while an alert persists:
Stubber-checked requests, moto marker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber
from scones_core.monitoring.locations import S3Location
from scones_core.monitoring.retraining import (
    ALREADY_RUNNING,
    COOLDOWN,
    NOT_CONFIGURED,
    STARTED,
    SUPERSEDED,
    RetrainingConfigError,
    RetrainingLauncher,
    RetrainingTargets,
    execution_arn_of,
    marker_key,
    next_cooldown,
    run_name,
    training_job_name,
)
from scones_core.monitoring.window_report import LOW_CONFIDENCE, Alert

from tests.monitoring.conftest import BUCKET, ENDPOINT, REGION, STATE_TABLE, WINDOW_END, Aws

STATE_MACHINE = f"arn:aws:states:{REGION}:123456789012:stateMachine:scones-retrain"
JOB_CONFIG = S3Location(BUCKET, "retraining/training-job.json")
ALERTS = [Alert(LOW_CONFIDENCE, "95.0% of 40 requests were below the confidence threshold")]
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
MAX_COOLDOWN = 30 * DAY
NAME = f"{ENDPOINT}-retrain-20261125-1300"  # the run WINDOW_END starts
JOB_TEMPLATE = {
    # as `scones sagemaker train-builtin --save-request` names it; the monitor renames it
    "TrainingJobName": "scones-image-classification-20261203-041002",
    "AlgorithmSpecification": {"TrainingImage": "example/train:1", "TrainingInputMode": "File"},
    "RoleArn": "arn:aws:iam::123456789012:role/training",
    "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models/"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
}


class MonitorRun(RetrainingLauncher):
    """The launcher as a monitor run calls it: the run comes ``late`` after it was due
    (``settle`` after its window's end), and its clock reads that."""

    def __init__(self, targets: RetrainingTargets, *, late: timedelta, **clients) -> None:
        super().__init__(targets, clock=lambda: self.now, **clients)
        self.late = late
        self.now = WINDOW_END

    def start(self, alerts, at, context):
        self.now = at + self._targets.settle + self.late
        return super().start(alerts, at, context)


def launcher(
    aws: Aws,
    sfn=None,
    sagemaker=None,
    *,
    state_machine=True,
    job=False,
    late=timedelta(0),
    settle=timedelta(0),
    period=HOUR,
):
    return MonitorRun(
        RetrainingTargets(
            endpoint_name=ENDPOINT,
            marker_table=STATE_TABLE,
            cooldown=DAY,
            max_cooldown=MAX_COOLDOWN,
            settle=settle,
            period=period,
            state_machine_arn=STATE_MACHINE if state_machine else None,
            job_config=JOB_CONFIG if job else None,
        ),
        late=late,
        dynamodb=aws.dynamodb,
        s3=aws.s3,
        stepfunctions=sfn,
        sagemaker=sagemaker,
    )


def nothing_running(stub: Stubber) -> None:
    """Queue the check for a retraining run in progress: none."""
    stub.add_response(
        "list_executions",
        {"executions": []},
        {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING", "maxResults": 2},
    )


def marker(aws: Aws) -> dict | None:
    key = marker_key(ENDPOINT)
    return aws.dynamodb.get_item(TableName=STATE_TABLE, Key={"pk": {"S": key}}).get("Item")


def test_names_are_deterministic_and_valid() -> None:
    assert run_name(ENDPOINT, WINDOW_END) == NAME
    # the training job is named like the run: the monitor's IAM grant is <endpoint>-retrain-*
    assert training_job_name(ENDPOINT, WINDOW_END) == NAME
    longest = training_job_name("e" * 40, WINDOW_END)  # EndpointName's MaxLength
    assert len(longest) == 62 and longest == "e" * 40 + "-retrain-20261125-1300"
    with pytest.raises(RetrainingConfigError, match="gives no valid training job name"):
        training_job_name("e" * 60, WINDOW_END)
    assert len(run_name("e" * 100, WINDOW_END)) <= 80


def test_the_cooldown_doubles_per_start_of_a_streak_up_to_its_maximum() -> None:
    assert [next_cooldown(DAY, MAX_COOLDOWN, n) / DAY for n in range(1, 8)] == [
        1,
        2,
        4,
        8,
        16,
        30,
        30,
    ]
    assert next_cooldown(DAY, DAY, 5) == DAY  # a maximum at the base keeps it fixed
    assert next_cooldown(DAY, DAY / 2, 5) == DAY  # and one below it counts as the base
    # A streak of years of hourly windows does not overflow.
    assert next_cooldown(timedelta(minutes=1), MAX_COOLDOWN, 10**6) == MAX_COOLDOWN


def test_state_machine_started_once_per_cooldown(aws: Aws) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response(
            "start_execution",
            {
                "executionArn": f"{STATE_MACHINE.replace('stateMachine', 'execution')}:{NAME}",
                "startDate": WINDOW_END,
            },
            {"stateMachineArn": STATE_MACHINE, "name": NAME, "input": ANY},
        )
        first = launcher(aws, sfn).start(ALERTS, WINDOW_END, {"request_count": 40})
        # Later windows within the cooldown, and a retry of the first, make no call at
        # all: the Stubber has no response queued and would raise if one were made.
        later = [
            launcher(aws, sfn).start(ALERTS, WINDOW_END + delta, {})
            for delta in (timedelta(hours=11), DAY - timedelta(minutes=1), timedelta(0))
        ]
        stub.assert_no_pending_responses()
    assert first.status == STARTED and first.started
    assert (first.cooldown_until, first.streak) == (WINDOW_END + DAY, 1)
    assert first.execution_arn.endswith(f":execution:scones-retrain:{NAME}")
    for outcome in later:
        assert (outcome.status, outcome.run_name) == (COOLDOWN, NAME)
        assert outcome.cooldown_until == WINDOW_END + DAY
    item = marker(aws)
    assert item is not None
    assert item["run_name"]["S"] == NAME
    assert item["execution_arn"]["S"] == first.execution_arn
    assert item["reasons"]["L"] == [{"S": LOW_CONFIDENCE}]
    assert "status" not in item  # stays out of the status index


def test_the_cooldown_runs_from_the_start_not_from_the_day(aws: Aws) -> None:
    """A start at 23:00 and a persisting alert: no second start at midnight (the
    cooldown is counted from the start, not in windows of the calendar)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    late = datetime(2026, 11, 25, 23, tzinfo=UTC)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": late})
        assert launcher(aws, sfn).start(ALERTS, late, {}).started
        for hours in range(1, 24):
            outcome = launcher(aws, sfn).start(ALERTS, late + timedelta(hours=hours), {})
            assert outcome.status == COOLDOWN, hours
        stub.assert_no_pending_responses()


def test_an_alert_that_outlasts_its_retraining_backs_off(aws: Aws) -> None:
    """An alert raised every hour for 60 days (a lasting change in the label mix): starts
    after 0, 1, 3, 7, 15 and 31 days, then every 30 days; not one a day."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    started: list[float] = []
    allowed_from = WINDOW_END
    with Stubber(sfn) as stub:
        for hour in range(60 * 24):
            at = WINDOW_END + timedelta(hours=hour)
            if at >= allowed_from:  # only then may the launcher call anything
                nothing_running(stub)
                stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": at})
            outcome = launcher(aws, sfn).start(ALERTS, at, {})
            stub.assert_no_pending_responses()
            if outcome.started:
                started.append(hour / 24)
            assert outcome.cooldown_until is not None
            allowed_from = outcome.cooldown_until
    assert started == [0, 1, 3, 7, 15, 31]


def test_an_alert_that_comes_back_later_begins_at_the_base_cooldown(aws: Aws) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        for _ in range(3):
            nothing_running(stub)
            stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        assert launcher(aws, sfn).start(ALERTS, WINDOW_END, {}).streak == 1
        # the alert persists: the next start comes as soon as allowed
        assert launcher(aws, sfn).start(ALERTS, WINDOW_END + DAY, {}).streak == 2
        # quiet for a while (more than one cooldown after the next start was allowed)
        again = launcher(aws, sfn).start(ALERTS, WINDOW_END + 5 * DAY, {})
        stub.assert_no_pending_responses()
    assert (again.streak, again.cooldown_until) == (1, WINDOW_END + 6 * DAY)


def test_a_late_run_counts_the_cooldown_from_when_it_starts_not_from_its_window(
    aws: Aws,
) -> None:
    """Daily windows: the run for one comes 20 h late (a retry, a redriven dead letter)
    and starts retraining. The next day's run, 4 h after that start, is still in the
    cooldown; the marker expires by the start too. A cooldown counted from the window's
    end would have let it start again at once, with no back-off."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    late = timedelta(hours=20)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        first = launcher(aws, sfn, late=late, period=DAY).start(ALERTS, WINDOW_END, {})
        assert (first.status, first.cooldown_until) == (STARTED, WINDOW_END + late + DAY)
        item = marker(aws)
        assert item["next_allowed"]["S"] == "2026-11-27T09:00:00Z"
        assert int(item["expires_at"]["N"]) == int((WINDOW_END + late + 3 * DAY).timestamp())
        next_day = launcher(aws, sfn, period=DAY).start(ALERTS, WINDOW_END + DAY, {})
        assert (next_day.status, next_day.run_name) == (COOLDOWN, NAME)
        stub.assert_no_pending_responses()  # nothing more was called
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:y", "startDate": WINDOW_END})
        after = launcher(aws, sfn, period=DAY).start(ALERTS, WINDOW_END + 2 * DAY, {})
        stub.assert_no_pending_responses()
    # The alert persisted: the back-off doubles the cooldown.
    assert (after.status, after.streak, after.cooldown_until) == (
        STARTED,
        2,
        WINDOW_END + 4 * DAY,
    )


def test_an_on_time_run_counts_its_start_when_it_was_due(aws: Aws) -> None:
    """A run is due a settle after its window's end; one that is still measuring 14
    minutes later counts its start at its due time, so the cooldown ends on a later
    run's due time and seconds of delay never put the next start off a whole period."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    settle = timedelta(minutes=10)
    with Stubber(sfn) as stub:
        for _ in range(2):
            nothing_running(stub)
            stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        slow = launcher(aws, sfn, settle=settle, late=timedelta(minutes=14))
        first = slow.start(ALERTS, WINDOW_END, {})
        assert first.cooldown_until == WINDOW_END + settle + DAY  # the due time, + 24 h
        on_time = launcher(aws, sfn, settle=settle).start(ALERTS, WINDOW_END + DAY, {})
        stub.assert_no_pending_responses()
    assert (on_time.status, on_time.streak) == (STARTED, 2)


def test_a_run_that_comes_after_the_next_windows_run_was_due_starts_nothing(
    aws: Aws,
) -> None:
    """An hourly window's run replayed 3 days late: newer windows have been measured
    since (and would have started retraining were the alert still there), so it starts
    nothing, claims nothing, and the current window's run starts retraining as usual. A
    run less than a period late still starts; a late retry of the window that did start
    names that start."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    now = WINDOW_END + 3 * DAY
    with Stubber(sfn) as stub:
        old = launcher(aws, sfn, late=3 * DAY).start(ALERTS, WINDOW_END, {})
        assert (old.status, old.run_name, old.started) == (SUPERSEDED, NAME, False)
        stub.assert_no_pending_responses()  # not even the check for a running execution
        assert marker(aws) is None
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": now})
        current = launcher(aws, sfn).start(ALERTS, now, {})
        stub.assert_no_pending_responses()
        assert (current.status, current.streak, current.cooldown_until) == (STARTED, 1, now + DAY)
        again = launcher(aws, sfn, late=3 * HOUR).start(ALERTS, now, {})
        assert (again.status, again.run_name) == (COOLDOWN, current.run_name)
    aws.dynamodb.delete_item(TableName=STATE_TABLE, Key={"pk": {"S": marker_key(ENDPOINT)}})
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:y", "startDate": now})
        in_time = launcher(aws, sfn, late=HOUR - timedelta(minutes=1)).start(ALERTS, now, {})
        stub.assert_no_pending_responses()
    assert in_time.started
    # A one-minute schedule: a run still measuring 10 minutes after it was due is on time.
    aws.dynamodb.delete_item(TableName=STATE_TABLE, Key={"pk": {"S": marker_key(ENDPOINT)}})
    minutely = launcher(aws, sfn, late=timedelta(minutes=10), period=timedelta(minutes=1))
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:z", "startDate": now})
        slow = minutely.start(ALERTS, now, {})
        stub.assert_no_pending_responses()
    assert (slow.status, slow.cooldown_until) == (STARTED, now + DAY)


def die_between_claim_and_start(aws: Aws, sfn: object, stub: Stubber) -> None:
    """A run that claims its start and dies before StartExecution answers."""
    nothing_running(stub)
    stub.add_client_error("start_execution", "ServiceUnavailable", http_status_code=503)
    dying = launcher(aws, sfn)
    dying._release = lambda *_: None  # type: ignore[method-assign]  # it never got there
    with pytest.raises(Exception, match="ServiceUnavailable"):
        dying.start(ALERTS, WINDOW_END, {})


def test_a_resumed_start_counts_its_cooldown_from_the_retry(aws: Aws) -> None:
    """A run that claimed its start and died; Lambda's retry comes 40 minutes later and
    starts it: the cooldown runs from that start, not from the dead run's claim."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        die_between_claim_and_start(aws, sfn, stub)
        assert marker(aws)["next_allowed"]["S"] == "2026-11-26T13:00:00Z"
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        retry = launcher(aws, sfn, late=timedelta(minutes=40)).start(ALERTS, WINDOW_END, {})
        stub.assert_no_pending_responses()
    assert (retry.status, retry.run_name, retry.streak) == (STARTED, NAME, 1)
    assert retry.cooldown_until == WINDOW_END + timedelta(minutes=40) + DAY
    item = marker(aws)
    assert (item["next_allowed"]["S"], item["execution_arn"]["S"]) == (
        "2026-11-26T13:40:00Z",
        "arn:x",
    )


def test_execution_input_names_the_reasons(aws: Aws) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    captured: dict = {}

    def remember(params, **_):
        captured.update(params)

    sfn.meta.events.register("provide-client-params.states.StartExecution", remember)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response(
            "start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END}, None
        )
        launcher(aws, sfn).start(ALERTS, WINDOW_END, {"request_count": 40})
    document = json.loads(captured["input"])
    assert document["reasons"] == [{"code": a.code, "message": a.message} for a in ALERTS]
    assert document["window"] == {"request_count": 40}
    assert (document["cooldown_until"], document["streak"]) == ("2026-11-26T13:00:00Z", 1)


def test_existing_execution_counts_as_started(aws: Aws) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_client_error("start_execution", "ExecutionAlreadyExists", "exists")
        outcome = launcher(aws, sfn).start(ALERTS, WINDOW_END, {})
    assert outcome.started
    assert outcome.execution_arn == (
        f"{STATE_MACHINE.replace(':stateMachine:', ':execution:')}:{outcome.run_name}"
    )


def test_a_failed_start_releases_the_marker_so_the_next_run_retries(aws: Aws) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_client_error("start_execution", "ExecutionLimitExceeded", "too many")
        with pytest.raises(Exception, match="ExecutionLimitExceeded"):
            launcher(aws, sfn).start(ALERTS, WINDOW_END, {})
        assert marker(aws) is None
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        assert launcher(aws, sfn).start(ALERTS, WINDOW_END, {}).started
        before = marker(aws)
        # A failed start after a cooldown puts the last start's marker back as it was:
        # its streak still counts.
        later = WINDOW_END + DAY
        nothing_running(stub)
        stub.add_client_error("start_execution", "ExecutionLimitExceeded", "too many")
        with pytest.raises(Exception, match="ExecutionLimitExceeded"):
            launcher(aws, sfn).start(ALERTS, later, {})
        assert marker(aws) == before
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:y", "startDate": later})
        assert launcher(aws, sfn).start(ALERTS, later, {}).streak == 2
        stub.assert_no_pending_responses()


def test_two_runs_that_read_the_same_marker_start_one_retraining(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim is a put conditioned on the marker as read: of two monitor runs that
    read it at once (a redriven window overlapping a scheduled run), the second starts
    nothing and names the start that holds the cooldown."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    first, second = launcher(aws, sfn), launcher(aws, sfn)
    read = second._read_marker
    as_both_saw_it = iter([read()])  # nothing yet
    monkeypatch.setattr(second, "_read_marker", lambda: next(as_both_saw_it, None) or read())
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        assert first.start(ALERTS, WINDOW_END, {}).started
        # The Stubber has nothing more queued: the second run must call nothing.
        lost = second.start(ALERTS, WINDOW_END + timedelta(hours=1), {})
        stub.assert_no_pending_responses()
    assert (lost.status, lost.run_name, lost.cooldown_until) == (COOLDOWN, NAME, WINDOW_END + DAY)
    assert marker(aws)["execution_arn"]["S"] == "arn:x"


def test_a_marker_it_cannot_read_is_replaced_not_obeyed_for_ever(aws: Aws) -> None:
    """An item in another layout (a hand edit, an older version) must not block
    retraining: it is replaced, on the condition that it is still what was read."""
    aws.dynamodb.put_item(
        TableName=STATE_TABLE,
        Item={"pk": {"S": marker_key(ENDPOINT)}, "run_name": {"S": "by-hand"}},
    )
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        assert launcher(aws, sfn).start(ALERTS, WINDOW_END, {}).started
        stub.assert_no_pending_responses()
    assert marker(aws)["run_name"]["S"] == NAME


def test_a_start_claimed_by_a_run_that_died_is_made_by_its_retry(aws: Aws) -> None:
    """A monitor run that timed out between its claim and StartExecution: the retry of
    the same window starts the run under the same name; a later window is not held back
    by a claim that started nothing once no run can still be making it."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        die_between_claim_and_start(aws, sfn, stub)
        assert "execution_arn" not in marker(aws)
        nothing_running(stub)
        stub.add_response(
            "start_execution",
            {"executionArn": "arn:x", "startDate": WINDOW_END},
            {"stateMachineArn": STATE_MACHINE, "name": NAME, "input": ANY},
        )
        retried = launcher(aws, sfn).start(ALERTS, WINDOW_END, {})
        stub.assert_no_pending_responses()
    assert (retried.status, retried.run_name, retried.streak) == (STARTED, NAME, 1)
    assert marker(aws)["execution_arn"]["S"] == "arn:x"

    # Again a claim that started nothing, its run long gone: the next window may start.
    aws.dynamodb.update_item(
        TableName=STATE_TABLE,
        Key={"pk": {"S": marker_key(ENDPOINT)}},
        UpdateExpression="REMOVE execution_arn SET started_at = :long_ago",
        ExpressionAttributeValues={":long_ago": {"S": "2026-11-25T13:00:05.000Z"}},
    )
    later = WINDOW_END + timedelta(hours=2)
    with Stubber(sfn) as stub:
        stub.add_client_error(
            "describe_execution",
            "ExecutionDoesNotExist",
            "Execution Does Not Exist",
            expected_params={"executionArn": execution_arn_of(STATE_MACHINE, NAME)},
        )
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:y", "startDate": later})
        assert launcher(aws, sfn).start(ALERTS, later, {}).streak == 1
        stub.assert_no_pending_responses()


def described_execution(execution_arn: str) -> dict:
    """DescribeExecution's answer for a retraining run that finished."""
    return {
        "executionArn": execution_arn,
        "stateMachineArn": STATE_MACHINE,
        "status": "SUCCEEDED",
        "startDate": WINDOW_END,
    }


def start_and_lose_its_record(aws: Aws, sfn: object) -> None:
    """The marker as a run leaves it that started retraining and timed out before it
    recorded the start, long ago."""
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        assert launcher(aws, sfn).start(ALERTS, WINDOW_END, {}).started
    lose_its_record(aws)


def lose_its_record(aws: Aws) -> None:
    aws.dynamodb.update_item(
        TableName=STATE_TABLE,
        Key={"pk": {"S": marker_key(ENDPOINT)}},
        UpdateExpression="REMOVE execution_arn, training_job SET started_at = :long_ago",
        ExpressionAttributeValues={":long_ago": {"S": "2026-11-25T13:00:05.000Z"}},
    )


def test_a_start_whose_record_was_lost_still_holds_its_cooldown(aws: Aws) -> None:
    """StartExecution answered, then the run timed out (or its record failed) before the
    marker named the execution: a later window asks Step Functions for the claim's
    execution, finds it, records it and keeps its cooldown, instead of starting again."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    start_and_lose_its_record(aws, sfn)
    later = WINDOW_END + timedelta(hours=2)
    execution = execution_arn_of(STATE_MACHINE, NAME)
    with Stubber(sfn) as stub:
        stub.add_response(
            "describe_execution",
            described_execution(execution),
            {"executionArn": execution},
        )
        held = launcher(aws, sfn).start(ALERTS, later, {})
        stub.assert_no_pending_responses()  # no second start
    assert (held.status, held.run_name, held.cooldown_until) == (COOLDOWN, NAME, WINDOW_END + DAY)
    assert marker(aws)["execution_arn"]["S"] == execution
    # Past the cooldown the alert's next start continues the streak.
    after = WINDOW_END + DAY + HOUR
    with Stubber(sfn) as stub:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:y", "startDate": after})
        assert launcher(aws, sfn).start(ALERTS, after, {}).streak == 2


def describe_training_job_response(name: str) -> dict:
    """DescribeTrainingJob's answer for a job the template's request made (every member
    its model requires)."""
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/models/{name}/model.tar.gz"},
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": JOB_TEMPLATE["AlgorithmSpecification"],
        "ResourceConfig": JOB_TEMPLATE["ResourceConfig"],
        "StoppingCondition": JOB_TEMPLATE["StoppingCondition"],
        "CreationTime": WINDOW_END,
    }


def test_a_training_job_whose_record_was_lost_still_holds_its_cooldown(aws: Aws) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key=JOB_CONFIG.key, Body=json.dumps(JOB_TEMPLATE))
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "create_training_job",
            {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{NAME}"},
        )
        assert (
            launcher(aws, sagemaker=sagemaker, state_machine=False, job=True)
            .start(ALERTS, WINDOW_END, {})
            .started
        )
    lose_its_record(aws)
    later = WINDOW_END + timedelta(hours=2)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "describe_training_job",
            describe_training_job_response(NAME),
            {"TrainingJobName": NAME},
        )
        held = launcher(aws, sagemaker=sagemaker, state_machine=False, job=True).start(
            ALERTS, later, {}
        )
        stub.assert_no_pending_responses()
    assert (held.status, held.cooldown_until) == (COOLDOWN, WINDOW_END + DAY)
    assert marker(aws)["training_job"]["S"] == NAME


def test_a_lost_start_found_by_one_service_holds_though_the_other_cannot_answer(
    aws: Aws,
) -> None:
    """With both targets, the execution found is enough: a throttled question about the
    training job does not set the claim aside."""
    aws.s3.put_object(Bucket=BUCKET, Key=JOB_CONFIG.key, Body=json.dumps(JOB_TEMPLATE))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sfn) as stub, Stubber(sagemaker) as jobs:
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        jobs.add_response(
            "create_training_job",
            {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{NAME}"},
        )
        assert launcher(aws, sfn, sagemaker, job=True).start(ALERTS, WINDOW_END, {}).started
    lose_its_record(aws)
    execution = execution_arn_of(STATE_MACHINE, NAME)
    with Stubber(sfn) as stub, Stubber(sagemaker) as jobs:
        stub.add_response(
            "describe_execution",
            described_execution(execution),
        )
        jobs.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
        held = launcher(aws, sfn, sagemaker, job=True).start(
            ALERTS, WINDOW_END + timedelta(hours=2), {}
        )
        stub.assert_no_pending_responses()
        jobs.assert_no_pending_responses()
    assert held.status == COOLDOWN
    assert marker(aws)["execution_arn"]["S"] == execution


def test_a_lost_start_that_cannot_be_asked_about_sets_the_claim_aside(aws: Aws) -> None:
    """A role without DescribeExecution (an older stack) cannot tell: the claim is set
    aside, as a claim that started nothing, rather than holding retraining back for ever."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    start_and_lose_its_record(aws, sfn)
    later = WINDOW_END + timedelta(hours=2)
    with Stubber(sfn) as stub:
        stub.add_client_error("describe_execution", "AccessDeniedException", "not authorized")
        nothing_running(stub)
        stub.add_response("start_execution", {"executionArn": "arn:y", "startDate": later})
        assert launcher(aws, sfn).start(ALERTS, later, {}).started
        stub.assert_no_pending_responses()


def test_no_second_run_starts_while_one_is_in_progress(aws: Aws) -> None:
    """A cooldown shorter than a run (training, gate, canary bake) must not start a second
    run gated against the production model the first may be replacing; the window stays
    open, so the next monitor run after it ends can start one if quality is still low."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    running = f"{ENDPOINT}-retrain-20261124-0000"
    with Stubber(sfn) as stub:
        stub.add_response(
            "list_executions",
            {
                "executions": [
                    {
                        "executionArn": f"{STATE_MACHINE}:{running}".replace(
                            ":stateMachine:", ":execution:"
                        ),
                        "stateMachineArn": STATE_MACHINE,
                        "name": running,
                        "status": "RUNNING",
                        "startDate": WINDOW_END - DAY,
                    }
                ]
            },
            {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING", "maxResults": 2},
        )
        outcome = launcher(aws, sfn).start(ALERTS, WINDOW_END, {})
        assert (outcome.status, outcome.run_name) == (ALREADY_RUNNING, running)
        assert marker(aws) is None
        # The check itself failing (an older stack's role) leaves the cooldown as the guard.
        stub.add_client_error("list_executions", "AccessDeniedException", "not allowed")
        stub.add_response("start_execution", {"executionArn": "arn:x", "startDate": WINDOW_END})
        assert launcher(aws, sfn).start(ALERTS, WINDOW_END, {}).started
        stub.assert_no_pending_responses()


def test_a_retried_run_that_finds_its_own_execution_running_goes_on(aws: Aws) -> None:
    """The window's own execution (started before a retried monitor run released the
    marker) is not "another run": the start goes on and finds it by name."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    own = NAME
    arn = f"{STATE_MACHINE.replace(':stateMachine:', ':execution:')}:{own}"
    with Stubber(sfn) as stub:
        stub.add_response(
            "list_executions",
            {
                "executions": [
                    {
                        "executionArn": arn,
                        "stateMachineArn": STATE_MACHINE,
                        "name": own,
                        "status": "RUNNING",
                        "startDate": WINDOW_END,
                    }
                ]
            },
            {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING", "maxResults": 2},
        )
        stub.add_client_error("start_execution", "ExecutionAlreadyExists", "exists")
        outcome = launcher(aws, sfn).start(ALERTS, WINDOW_END, {})
        stub.assert_no_pending_responses()
    assert outcome.started and outcome.execution_arn == arn
    assert marker(aws) is not None


def test_training_job_from_the_template(aws: Aws) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key=JOB_CONFIG.key, Body=json.dumps(JOB_TEMPLATE).encode())
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    expected = {**JOB_TEMPLATE, "TrainingJobName": NAME}
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "create_training_job",
            {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/x"},
            expected,
        )
        first = launcher(aws, sagemaker=sagemaker, state_machine=False, job=True).start(
            ALERTS, WINDOW_END, {}
        )
        second = launcher(aws, sagemaker=sagemaker, state_machine=False, job=True).start(
            ALERTS, WINDOW_END + timedelta(hours=1), {}
        )
        stub.assert_no_pending_responses()
    assert first.started and first.training_job_name == expected["TrainingJobName"]
    assert second.status == COOLDOWN
    item = marker(aws)
    assert item is not None and item["training_job"]["S"] == expected["TrainingJobName"]


def test_duplicate_training_job_name_counts_as_started(aws: Aws) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key=JOB_CONFIG.key, Body=json.dumps(JOB_TEMPLATE).encode())
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_client_error(
            "create_training_job",
            "ValidationException",
            "Training job names must be unique within an AWS account and region, "
            "and a training job with this name already exists",
        )
        outcome = launcher(aws, sagemaker=sagemaker, state_machine=False, job=True).start(
            ALERTS, WINDOW_END, {}
        )
        stub.assert_no_pending_responses()  # the "already exists" answer was the one read
    assert outcome.started and outcome.training_job_name
    item = marker(aws)
    assert item is not None and item["training_job"]["S"] == outcome.training_job_name


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "does not exist"),
        (b"{not json", "is not JSON"),
        (json.dumps(["not", "a", "request"]).encode(), "must be a CreateTrainingJob request"),
        (json.dumps({"RoleArn": "x"}).encode(), "template is invalid"),
        (json.dumps({"TrainingJobName": "x", "Bogus": 1}).encode(), "template is invalid"),
    ],
)
def test_bad_job_template_is_a_clear_error_and_claims_nothing(
    aws: Aws, body: bytes | None, problem: str
) -> None:
    if body is not None:
        aws.s3.put_object(Bucket=BUCKET, Key=JOB_CONFIG.key, Body=body)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with pytest.raises(RetrainingConfigError, match=problem):
        launcher(aws, sagemaker=sagemaker, state_machine=False, job=True).start(
            ALERTS, WINDOW_END, {}
        )
    assert marker(aws) is None


def test_no_target_configured_only_reports(aws: Aws) -> None:
    outcome = launcher(aws, state_machine=False).start(ALERTS, WINDOW_END, {})
    assert outcome.status == NOT_CONFIGURED
    assert marker(aws) is None

"""Model Monitor: executions through a stubbed SageMaker API, reports from S3 (moto)."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import pytest
from botocore.stub import Stubber
from scones_core.monitoring.locations import S3Location
from scones_core.monitoring.model_monitor import LISTING_MARGIN, collect_findings

from tests.monitoring.conftest import (
    BUCKET,
    ENDPOINT,
    REGION,
    REPORTS_PREFIX,
    WINDOW_END,
    WINDOW_START,
    Aws,
)

SCHEDULE = f"{ENDPOINT}-data-quality"
REPORTS = S3Location(BUCKET, REPORTS_PREFIX)
VIOLATIONS = {
    "violations": [
        {
            "feature_name": "probabilities_0",
            "constraint_check_type": "baseline_drift_check",
            "description": "Baseline drift distance 0.41 exceeds threshold 0.1",
        },
        {
            "feature_name": "probabilities_1",
            "constraint_check_type": "data_type_check",
            "description": "Data type mismatch",
        },
    ]
}

MISSING_REPORT = "no constraint_violations.json is where the monitor looks"


def report_folder(hour: int = 12) -> str:
    return f"{REPORTS_PREFIX}/{ENDPOINT}/{SCHEDULE}/2026/11/25/{hour:02d}"


def put_report(aws: Aws, hour: int = 12, violations: dict | None = None) -> None:
    folder = report_folder(hour)
    body = json.dumps(VIOLATIONS if violations is None else violations).encode()
    aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/constraint_violations.json", Body=body)
    aws.s3.put_object(
        Bucket=BUCKET,
        Key=f"{folder}/statistics.json",
        Body=json.dumps({"version": 0.0, "dataset": {"item_count": 57}}).encode(),
    )


def list_request(start=WINDOW_START, end=WINDOW_END) -> dict:
    """The request for the window [start, end), widened by the margin the code applies."""
    return {
        "MonitoringScheduleName": SCHEDULE,
        "ScheduledTimeAfter": start - LISTING_MARGIN,
        "ScheduledTimeBefore": end + LISTING_MARGIN,
        "SortBy": "ScheduledTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
    }


def execution(status: str) -> dict:
    return {
        "MonitoringScheduleName": SCHEDULE,
        "ScheduledTime": WINDOW_START,
        "CreationTime": WINDOW_START,
        "LastModifiedTime": WINDOW_START + timedelta(minutes=20),
        "MonitoringExecutionStatus": status,
        "ProcessingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:processing-job/mm-1",
    }


def schedule_description(
    status: str = "Scheduled", created=WINDOW_START, expression: str | None = None, **extra
) -> dict:
    """DescribeMonitoringSchedule's answer for the endpoint's data-quality schedule."""
    config: dict = {
        "MonitoringJobDefinition": {
            "MonitoringInputs": [
                {
                    "EndpointInput": {
                        "EndpointName": ENDPOINT,
                        "LocalPath": "/opt/ml/processing/input",
                    }
                }
            ],
            "MonitoringOutputConfig": {
                "MonitoringOutputs": [
                    {
                        "S3Output": {
                            "S3Uri": f"s3://{BUCKET}/{REPORTS_PREFIX}",
                            "LocalPath": "/opt/ml/processing/output",
                        }
                    }
                ]
            },
            "MonitoringResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                    "VolumeSizeInGB": 20,
                }
            },
            "MonitoringAppSpecification": {"ImageUri": "example/image:1"},
            "RoleArn": "arn:aws:iam::123456789012:role/monitor",
        }
    }
    if expression is not None:
        config["ScheduleConfig"] = {"ScheduleExpression": expression}
    return {
        "MonitoringScheduleArn": (
            f"arn:aws:sagemaker:{REGION}:123456789012:monitoring-schedule/{SCHEDULE}"
        ),
        "MonitoringScheduleName": SCHEDULE,
        "MonitoringScheduleStatus": status,
        "CreationTime": created,
        "LastModifiedTime": created,
        "MonitoringScheduleConfig": config,
        **extra,
    }


def collect(aws: Aws, sagemaker=None, schedule=None, reports=REPORTS):
    return collect_findings(
        aws.s3,
        sagemaker,
        endpoint=ENDPOINT,
        schedule_name=schedule,
        reports=reports,
        start=WINDOW_START,
        end=WINDOW_END,
    )


def test_completed_with_violations_is_an_alert_with_its_report(aws: Aws) -> None:
    put_report(aws, hour=11)  # an older report, outside the window
    put_report(aws, hour=12)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("CompletedWithViolations")]},
            list_request(),
        )
        findings = collect(aws, sagemaker, SCHEDULE)
        stub.assert_no_pending_responses()
    assert findings is not None
    assert findings.alert
    assert [e.status for e in findings.executions] == ["CompletedWithViolations"]
    assert findings.violations_count == 2
    assert findings.violations[0].constraint_check_type == "baseline_drift_check"
    assert findings.drift_item_count == 57
    assert findings.report_uris == (
        f"s3://{BUCKET}/{report_folder(12)}/constraint_violations.json",
    )
    assert findings.failed_executions == ()
    assert findings.unreadable_reports == ()


def test_report_is_found_by_prefix_without_any_schedule(aws: Aws) -> None:
    put_report(aws, hour=12, violations={"violations": []})
    findings = collect(aws)
    assert findings is not None
    assert findings.violations_count == 0
    assert not findings.alert
    put_report(aws, hour=12)
    assert collect(aws).alert


def test_missing_report_is_not_an_error(aws: Aws) -> None:
    put_report(aws, hour=10)
    findings = collect(aws)
    assert findings is not None
    assert findings.violations is None
    assert findings.violations_count is None
    assert not findings.alert


def test_nothing_configured_means_no_findings(aws: Aws) -> None:
    assert collect(aws, reports=None) is None


def test_report_location_comes_from_the_schedule_when_not_configured(aws: Aws) -> None:
    put_report(aws, hour=12)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("Completed")]},
            list_request(),
        )
        stub.add_response(
            "describe_monitoring_schedule",
            schedule_description(),
            {"MonitoringScheduleName": SCHEDULE},
        )
        findings = collect(aws, sagemaker, SCHEDULE, reports=None)
        stub.assert_no_pending_responses()
    assert findings is not None
    assert findings.violations_count == 2
    assert findings.alert  # the report lists violations even though the status is Completed


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (b'{\n  "violations": [\n    {"feature_name": "x",\n', 4, "not JSON"),
        (b'{"violations": "\xc3("}', None, "not UTF-8"),
        (b'{"violations": 3}', None, 'expected {"violations": [...]}'),
        (b"{}", None, 'expected {"violations": [...]}'),
        (b'{"violations": [1]}', None, "violations[0] is not an object"),
        # Not Model Monitor's, but JSON a reader must survive: an integer past the
        # interpreter's digit limit, nesting past its recursion limit.
        (b'{"violations": [], "n": ' + b"9" * 5000 + b"}", None, "not readable JSON: an integer"),
        (b"[" * 50_000 + b"]" * 50_000, None, "not readable JSON: nested deeper"),
    ],
)
def test_unreadable_report_is_a_named_warning_not_a_missing_report(
    aws: Aws, body: bytes, line: int | None, reason: str, caplog
) -> None:
    key = f"{report_folder(12)}/constraint_violations.json"
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    findings = collect(aws)
    assert findings is not None
    assert findings.violations is None
    assert findings.report_uris == ()
    (warning,) = findings.unreadable_reports
    assert (warning.code, warning.source, warning.line) == (
        "UNREADABLE_MODEL_MONITOR_REPORT",
        f"s3://{BUCKET}/{key}",
        line,
    )
    assert warning.reason.startswith(reason)
    (logged,) = [
        r for r in caplog.records if r.getMessage() == "Model Monitor report is unreadable"
    ]
    assert (logged.source, logged.line, logged.reason) == (
        warning.source,
        warning.line,
        warning.reason,
    )


def test_every_report_in_the_window_is_read_and_merged(aws: Aws) -> None:
    second = {"violations": [VIOLATIONS["violations"][0]]}
    put_report(aws, hour=8)  # before the window
    put_report(aws, hour=9, violations={"violations": []})
    put_report(aws, hour=10)
    put_report(aws, hour=11, violations=second)
    aws.s3.put_object(  # no statistics.json beside this one
        Bucket=BUCKET,
        Key=f"{report_folder(12)}/constraint_violations.json",
        Body=json.dumps(second).encode(),
    )
    put_report(aws, hour=13)  # the next window
    findings = collect_findings(
        aws.s3,
        None,
        endpoint=ENDPOINT,
        schedule_name=None,
        reports=REPORTS,
        start=WINDOW_START - timedelta(hours=3),
        end=WINDOW_END,
    )
    assert findings is not None
    uri = f"s3://{BUCKET}/{{}}/constraint_violations.json".format
    assert findings.report_uris == tuple(uri(report_folder(h)) for h in (9, 10, 11, 12))
    assert [(v.feature_name, v.report_uri) for v in findings.violations or ()] == [
        ("probabilities_0", uri(report_folder(10))),
        ("probabilities_1", uri(report_folder(10))),
        ("probabilities_0", uri(report_folder(11))),
        ("probabilities_0", uri(report_folder(12))),
    ]
    # Hour 12 found a drift and has no statistics: how many records it checked is unknown.
    assert findings.drift_item_count is None
    assert findings.alert
    assert findings.unreadable_reports == ()


def test_an_unreadable_report_does_not_hide_the_readable_ones(aws: Aws) -> None:
    put_report(aws, hour=11)
    broken = f"{report_folder(12)}/constraint_violations.json"
    aws.s3.put_object(Bucket=BUCKET, Key=broken, Body=b'{"violations": [')
    findings = collect_findings(
        aws.s3,
        None,
        endpoint=ENDPOINT,
        schedule_name=None,
        reports=REPORTS,
        start=WINDOW_START - timedelta(hours=1),
        end=WINDOW_END,
    )
    assert findings is not None
    assert findings.violations_count == 2
    assert [w.source for w in findings.unreadable_reports] == [f"s3://{BUCKET}/{broken}"]


# SageMaker's FailureReason for an hour without captured requests, and a real fault's.
NO_DATA = "Job inputs had no data"
ALGORITHM_ERROR = "AlgorithmError: See job logs for more information"


def test_failed_and_stopped_executions_are_faults_but_an_idle_hour_is_not(aws: Aws, caplog) -> None:
    failed = execution("Failed") | {"FailureReason": ALGORITHM_ERROR}
    stopped = execution("Stopped") | {"ScheduledTime": WINDOW_START + timedelta(minutes=30)}
    idle = execution("Failed") | {
        "ScheduledTime": WINDOW_START + timedelta(minutes=15),
        "FailureReason": NO_DATA,
    }
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [stopped, idle, failed, execution("Completed")]},
            list_request(),
        )
        findings = collect(aws, sagemaker, SCHEDULE)
        stub.assert_no_pending_responses()
    assert findings is not None
    assert findings.violations is None  # no report: still not an error
    assert not findings.alert
    assert [(e.status, e.failure_reason) for e in findings.failed_executions] == [
        ("Stopped", None),
        ("Failed", ALGORITHM_ERROR),
    ]
    assert [(e.scheduled_time, e.failure_reason) for e in findings.no_data_executions] == [
        (WINDOW_START + timedelta(minutes=15), NO_DATA)
    ]
    logged = [
        (r.levelname, r.status, r.failure_reason)
        for r in caplog.records
        if r.getMessage()
        in {
            "Model Monitor execution did not complete",
            "Model Monitor execution had no data to check",
        }
    ]
    assert logged == [
        ("WARNING", "Stopped", None),
        ("INFO", "Failed", NO_DATA),
        ("WARNING", "Failed", ALGORITHM_ERROR),
    ]


def _listed_prefixes(s3) -> list[str]:
    """The ``Prefix`` of every ``ListObjectsV2`` call ``s3`` makes from now on."""
    prefixes: list[str] = []
    s3.meta.events.register(
        "provide-client-params.s3.ListObjectsV2",
        lambda params, **_: prefixes.append(params["Prefix"]),
    )
    return prefixes


def test_only_this_schedules_hour_folders_in_the_window_are_listed(aws: Aws) -> None:
    """Another endpoint's schedule, or another schedule of this endpoint, writing under
    the same reports prefix must not start this endpoint's retraining; and a run lists
    its window's hours, not the whole history."""
    put_report(aws, hour=12, violations={"violations": []})
    for hour in range(12):  # the day's history
        put_report(aws, hour=hour, violations={"violations": []})
    for other in ("scones-old-endpoint/scones-old-endpoint-data-quality", f"{ENDPOINT}/mq"):
        aws.s3.put_object(
            Bucket=BUCKET,
            Key=f"{REPORTS_PREFIX}/{other}/2026/11/25/12/constraint_violations.json",
            Body=json.dumps(VIOLATIONS).encode(),
        )
    listed = _listed_prefixes(aws.s3)
    findings = collect(aws, schedule=SCHEDULE)  # no SageMaker client: reports only
    assert findings is not None
    assert findings.report_uris == (
        f"s3://{BUCKET}/{report_folder(12)}/constraint_violations.json",
    )
    assert findings.violations_count == 0
    assert not findings.alert
    assert listed == [f"{report_folder(12)}/"]


def test_without_a_schedule_name_reports_are_scoped_to_the_endpoint(aws: Aws) -> None:
    put_report(aws, hour=12, violations={"violations": []})
    aws.s3.put_object(
        Bucket=BUCKET,
        Key=f"{REPORTS_PREFIX}/other-endpoint/other-endpoint-data-quality/2026/11/25/12/"
        "constraint_violations.json",
        Body=json.dumps(VIOLATIONS).encode(),
    )
    listed = _listed_prefixes(aws.s3)
    findings = collect(aws)
    assert findings is not None
    assert findings.violations_count == 0
    assert not findings.alert
    assert listed == [f"{REPORTS_PREFIX}/{ENDPOINT}/"]


def test_a_model_quality_violation_is_named_by_its_metric() -> None:
    from scones_core.monitoring.model_monitor import parse_violations

    body = json.dumps(
        {
            "violations": [
                {
                    "constraint_check_type": "LessThanThreshold",
                    "description": "Metric accuracy with 0.81 was LessThanThreshold 0.9",
                    "metric_name": "accuracy",
                }
            ]
        }
    ).encode()
    (violation,) = parse_violations(body)
    assert (violation.feature_name, violation.constraint_check_type) == (
        "accuracy",
        "LessThanThreshold",
    )


def test_executions_are_kept_to_the_window_whatever_the_listing_includes(aws: Aws) -> None:
    """Executions are scheduled on the hour, often a window's bound, and the API does not
    say whether its filters include their bounds: the window is applied here, so the
    execution at the end belongs to the next window only."""
    at_start = execution("Failed") | {"FailureReason": ALGORITHM_ERROR}
    at_end = execution("Failed") | {"ScheduledTime": WINDOW_END, "FailureReason": "later"}
    before = execution("Stopped") | {"ScheduledTime": WINDOW_START - timedelta(seconds=30)}
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [at_end, at_start, before]},
            list_request(),
        )
        findings = collect(aws, sagemaker, SCHEDULE)
        stub.assert_no_pending_responses()
    assert findings is not None
    assert [(e.scheduled_time, e.failure_reason) for e in findings.failed_executions] == [
        (WINDOW_START, ALGORITHM_ERROR)
    ]


@pytest.mark.parametrize("status", ["Pending", "InProgress", "Stopping"])
def test_an_execution_still_running_when_read_is_a_fault_not_silence(
    aws: Aws, status: str, caplog
) -> None:
    """Each window is read once: a verdict that comes later is never seen."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution(status)]},
            list_request(),
        )
        findings = collect(aws, sagemaker, SCHEDULE)
    assert findings is not None
    assert [e.status for e in findings.failed_executions] == [status]
    (logged,) = [r for r in caplog.records if "had not ended" in r.getMessage()]
    assert (logged.levelname, logged.status) == ("WARNING", status)
    assert "ModelMonitorLagMinutes" in logged.getMessage()


def test_a_completed_execution_without_its_report_is_warned_of(aws: Aws, caplog) -> None:
    """A completed execution always writes a report: not finding it means the monitor
    looks in the wrong place, which must not pass as "no report"."""
    put_report(aws, hour=12)
    elsewhere = S3Location(BUCKET, "somewhere-else")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        for _ in range(2):
            stub.add_response(
                "list_monitoring_executions",
                {"MonitoringExecutionSummaries": [execution("Completed")]},
                list_request(),
            )
        found = collect(aws, sagemaker, SCHEDULE)
        assert not [r for r in caplog.records if MISSING_REPORT in r.getMessage()]
        missed = collect(aws, sagemaker, SCHEDULE, reports=elsewhere)
    assert found is not None and found.report_uris
    assert missed is not None and missed.violations is None
    (logged,) = [r for r in caplog.records if MISSING_REPORT in r.getMessage()]
    assert logged.levelname == "WARNING"
    assert logged.looked_in == f"s3://{BUCKET}/somewhere-else/{ENDPOINT}/{SCHEDULE}/2026/11/25/12/"


HOURLY = "cron(0 * ? * * *)"


@pytest.mark.parametrize(
    ("status", "created", "expression", "missing"),
    [
        # The template's hourly schedule, stopped: 12:00 passed with no execution.
        ("Stopped", WINDOW_START - timedelta(days=3), HOURLY, True),
        ("Failed", WINDOW_START - timedelta(days=3), HOURLY, True),
        ("Scheduled", WINDOW_START - timedelta(days=3), "cron(0 */6 ? * * *)", True),
        # Created after the window's hour: its first execution is still to come.
        ("Scheduled", WINDOW_START + timedelta(minutes=5), HOURLY, False),
        # Runs at other hours than the window's.
        ("Scheduled", WINDOW_START - timedelta(days=3), "cron(0 5 ? * * *)", False),
        # An expression this does not read is not second-guessed.
        ("Scheduled", WINDOW_START - timedelta(days=3), "NOW", False),
    ],
)
def test_a_scheduled_hour_without_an_execution_is_a_fault_not_silence(
    aws: Aws, status: str, created, expression: str, missing: bool
) -> None:
    """A schedule that stopped (or failed, or lost its executions) writes no report and
    no failed execution: without this, Model Monitor checks nothing and reads as fine."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    extra = {"FailureReason": "role cannot be assumed"} if status == "Failed" else {}
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions", {"MonitoringExecutionSummaries": []}, list_request()
        )
        stub.add_response(
            "describe_monitoring_schedule",
            schedule_description(status, created, expression, **extra),
            {"MonitoringScheduleName": SCHEDULE},
        )
        findings = collect(aws, sagemaker, SCHEDULE)
        stub.assert_no_pending_responses()
    assert findings is not None
    if not missing:
        assert findings.failed_executions == ()
        return
    [gap] = findings.failed_executions
    assert (gap.scheduled_time, gap.status) == (WINDOW_START, "Missing")
    assert f"no execution was scheduled; the schedule is {status}" in (gap.failure_reason or "")
    if extra:
        assert "role cannot be assumed" in (gap.failure_reason or "")


@pytest.mark.parametrize("listing_refused", [False, True])
def test_a_deleted_schedule_is_a_fault_and_the_window_is_still_read(
    aws: Aws, listing_refused: bool
) -> None:
    """DescribeMonitoringSchedule answers ResourceNotFound for a deleted schedule (and the
    listing may too): every hour of the window is a Missing execution naming why, and the
    reports that are there are still read; the monitor's run does not fail."""
    put_report(aws, hour=12)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    not_found = {
        "service_error_code": "ResourceNotFound",
        "service_message": f"Monitoring Schedule {SCHEDULE} does not exist",
        "http_status_code": 400,
    }
    with Stubber(sagemaker) as stub:
        if listing_refused:
            stub.add_client_error(
                "list_monitoring_executions", **not_found, expected_params=list_request()
            )
        else:
            stub.add_response(
                "list_monitoring_executions", {"MonitoringExecutionSummaries": []}, list_request()
            )
        stub.add_client_error(
            "describe_monitoring_schedule",
            **not_found,
            expected_params={"MonitoringScheduleName": SCHEDULE},
        )
        findings = collect(aws, sagemaker, SCHEDULE)
        stub.assert_no_pending_responses()
    assert findings is not None
    [gap] = findings.failed_executions
    assert (gap.scheduled_time, gap.status) == (WINDOW_START, "Missing")
    assert f"the monitoring schedule {SCHEDULE} does not exist" in (gap.failure_reason or "")
    assert findings.violations_count == 2 and findings.alert


def test_the_schedule_is_described_only_when_an_hour_lacks_its_execution(aws: Aws) -> None:
    """One execution for the window's one hour: no DescribeMonitoringSchedule call (the
    Stubber raises on any call it was not given)."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("Completed")]},
            list_request(),
        )
        findings = collect(aws, sagemaker, SCHEDULE)
        stub.assert_no_pending_responses()
    assert findings is not None and findings.failed_executions == ()


@pytest.mark.parametrize(
    ("expression", "hours"),
    [
        ("cron(0 * ? * * *)", list(range(24))),
        ("cron(0 */6 ? * * *)", [0, 6, 12, 18]),
        ("cron(0 3/8 ? * * *)", [3, 11, 19]),
        ("cron(0 0,12 ? * * *)", [0, 12]),
        ("cron(0 7 ? * * *)", [7]),
        ("cron(30 * ? * * *)", None),  # not on the hour
        ("cron(0 25 ? * * *)", None),
        ("cron(0 */0 ? * * *)", None),
        ("rate(1 hour)", None),
        ("NOW", None),
    ],
)
def test_scheduled_hours_reads_on_the_hour_cron_expressions(
    expression: str, hours: list[int] | None
) -> None:
    from scones_core.monitoring.model_monitor import scheduled_hours

    day = WINDOW_START.replace(hour=0)
    found = scheduled_hours(expression, day, day + timedelta(days=1))
    assert (None if found is None else [h.hour for h in found]) == hours

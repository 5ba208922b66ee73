"""One window measured end to end against moto: capture + results table + baseline."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from datetime import timedelta
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from scones_core.monitoring.metrics import LabelMetricPoint, label_metrics, window_metrics
from scones_core.monitoring.service import MonitorClients, measure_window, respond
from scones_core.monitoring.settings import MonitorSettings
from scones_core.monitoring.window_report import (
    CAPTURE_MISSING,
    CAPTURE_UNUSABLE,
    LABEL_DRIFT,
    LOW_CONFIDENCE,
    MODEL_MONITOR_EXECUTION_FAILED,
    MODEL_MONITOR_REPORT_UNREADABLE,
    MODEL_MONITOR_VIOLATIONS,
    SUMMARY_WARNING_LIMIT,
    Alert,
    WindowReport,
)

from tests.monitoring.conftest import (
    BUCKET,
    LABELS,
    REGION,
    WINDOW_END,
    WINDOW_START,
    Aws,
    CaptureWriterHelper,
    Prediction,
    capture_key,
    capture_line,
    monitor_env,
)
from tests.monitoring.test_monitor_model_monitor import (
    ALGORITHM_ERROR,
    NO_DATA,
    SCHEDULE,
    execution,
    list_request,
    put_report,
    report_folder,
    schedule_description,
)

# The deployed setting: threshold metrics need this many requests in a window.
MIN_REQUESTS = MonitorSettings.from_env(monitor_env()).min_requests
SIGNIFICANCE = MonitorSettings.from_env(monitor_env()).drift_alert_significance


def metric_points(report: WindowReport, alerts: list[Alert]) -> dict[str, float]:
    """The window's metrics as the handler publishes them, by name."""
    return {
        p.name: p.value
        for p in window_metrics(
            report,
            alert_count=len(alerts),
            min_requests=MIN_REQUESTS,
            drift_significance=SIGNIFICANCE,
        )
    }


def settings(**overrides: str) -> MonitorSettings:
    return MonitorSettings.from_env(monitor_env(**overrides))


def write_traffic(captures: CaptureWriterHelper, rows: list[Prediction]) -> None:
    lines = [
        capture_line(row.probabilities, WINDOW_START + timedelta(seconds=50 * i))
        for i, row in enumerate(rows)
    ]
    half = len(lines) // 2
    captures.put(WINDOW_START, "first", lines[:half])
    captures.put(WINDOW_START, "second", [*lines[half:-3], "not json"])
    captures.put(WINDOW_END, "late", lines[-3:])


def test_report_matches_an_independent_computation(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    rows = predictions["bicycle"][:25] + predictions["motorcycle"][:15]
    write_traffic(captures, rows)
    baseline = aws.put_baseline()
    for i, status in enumerate(
        ["ACCEPTED"] * 6 + ["NEEDS_REVIEW"] * 3 + ["REJECTED"] * 2 + ["FAILED"]
    ):
        aws.put_result(status, WINDOW_START + timedelta(minutes=i), i)
    aws.put_result("REJECTED", WINDOW_END, 100)  # the next window
    aws.put_result("FAILED", WINDOW_START - timedelta(milliseconds=1), 101)  # the previous one

    config = settings(LOW_CONFIDENCE_ALERT_SHARE="1", DRIFT_ALERT_THRESHOLD="1")
    report, alerts = measure_window(config, MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)

    assert report.confidence is not None and report.drift is not None
    probabilities = np.array([row.probabilities for row in rows])
    confidence = probabilities.max(axis=1)
    predicted = [LABELS[i] for i in probabilities.argmax(axis=1)]
    assert report.request_count == 40
    assert report.capture_files == 3
    assert report.malformed_lines == 1
    assert report.confidence.mean == pytest.approx(confidence.mean())
    for q in (10, 50, 90):
        assert getattr(report.confidence, f"p{q}") == pytest.approx(np.percentile(confidence, q))
    assert report.confidence.low_confidence_share == pytest.approx(
        float(np.mean(confidence < config.confidence_threshold))
    )
    bike_share = predicted.count("bicycle") / 40
    assert report.label_mix == pytest.approx({"bicycle": bike_share, "motorcycle": 1 - bike_share})
    assert report.drift.label_distance == pytest.approx(
        abs(bike_share - baseline["label_mix"]["bicycle"])
    )
    # Pearson's chi-square with one degree of freedom, computed here on its own.
    expected = 40 * np.array(
        [baseline["label_mix"]["bicycle"], baseline["label_mix"]["motorcycle"]]
    )
    observed = np.array([predicted.count("bicycle"), predicted.count("motorcycle")])
    statistic = float(((observed - expected) ** 2 / expected).sum())
    assert report.drift.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    assert report.drift.mean_confidence_shift == pytest.approx(
        confidence.mean() - baseline["mean_confidence"]
    )
    assert report.results.counts == {
        "ACCEPTED": 6,
        "NEEDS_REVIEW": 3,
        "REJECTED": 2,
        "FAILED": 1,
        "REVIEWED": 0,
    }
    assert report.rejected_rate == pytest.approx(2 / 12)
    assert report.failed_rate == pytest.approx(1 / 12)
    assert report.model_monitor is not None and report.model_monitor.violations is None
    assert alerts == []

    points = {
        p.name: (p.unit, p.value)
        for p in window_metrics(
            report, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }
    assert points["CapturedRequests"] == ("Count", 40)
    assert points["LowConfidenceShare"] == ("None", report.confidence.low_confidence_share)
    assert points["RejectedRate"] == ("None", pytest.approx(2 / 12))
    # Published only for a mix beyond chance (DriftAlertSignificance), as the alert is raised.
    if report.drift.p_value < SIGNIFICANCE:
        assert points["LabelDrift"] == ("None", report.drift.label_distance)
    else:
        assert "LabelDrift" not in points
    assert "ModelMonitorViolations" not in points
    assert {(p.label, p.value) for p in label_metrics(report)} == set(report.label_mix.items())
    json.dumps(report.to_json())  # the summary is JSON-safe


def test_a_value_that_is_not_finite_is_never_published(
    aws: Aws,
    captures: CaptureWriterHelper,
    predictions: dict[str, list[Prediction]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """JSON has no NaN or Infinity: one such value made the window's whole metric document
    unreadable, and CloudWatch took none of its metrics. It is left out and logged."""
    write_traffic(captures, predictions["bicycle"][:20] + predictions["motorcycle"][:20])
    aws.put_baseline()
    measured, _ = measure_window(settings(), MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    assert measured.drift is not None
    report = dataclasses.replace(
        measured,
        drift=dataclasses.replace(measured.drift, mean_confidence_shift=math.nan),
        label_mix=measured.label_mix | {"bicycle": math.inf},
    )
    with caplog.at_level(logging.ERROR, logger="scones_core"):
        points = window_metrics(
            report, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
        shares = label_metrics(report)
    names = {p.name for p in points}
    assert "MeanConfidenceShift" not in names
    assert {"CapturedRequests", "MeanConfidence", "LowConfidenceShare"} <= names
    assert all(math.isfinite(p.value) for p in points)
    assert [(p.label, p.value) for p in shares] == [
        ("motorcycle", measured.label_mix["motorcycle"])
    ]
    dropped = [
        (r.__dict__["metric"], r.__dict__.get("label"))
        for r in caplog.records
        if r.levelno == logging.ERROR
    ]
    assert dropped == [("MeanConfidenceShift", None), ("LabelShare", "bicycle")]


def test_thresholds_raise_alerts_only_with_enough_requests(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    motorcycles = [p for p in predictions["motorcycle"] if p.probabilities[1] > 0.5]
    write_traffic(captures, motorcycles[:12])
    baseline = aws.put_baseline()
    clients = MonitorClients(aws.s3, aws.dynamodb)
    strict = settings(LOW_CONFIDENCE_ALERT_SHARE="0", DRIFT_ALERT_THRESHOLD="0.3")
    report, alerts = measure_window(strict, clients, WINDOW_END)
    assert report.confidence is not None and report.drift is not None
    # Only motorcycles: the distance is the baseline's bicycle share.
    bicycle_share = baseline["label_mix"]["bicycle"]
    assert bicycle_share > 0.3  # the drift threshold below
    assert report.drift.label_distance == pytest.approx(bicycle_share)
    expected = [LABEL_DRIFT]
    if report.confidence.low_confidence_share > 0:
        expected.insert(0, LOW_CONFIDENCE)
    assert [a.code for a in alerts] == expected
    # The same window with a higher minimum of requests raises nothing.
    _, quiet = measure_window(
        settings(LOW_CONFIDENCE_ALERT_SHARE="0", MONITOR_MIN_REQUESTS="13"), clients, WINDOW_END
    )
    assert quiet == []
    # Nor does it publish the two metrics that LowConfidenceAlarm and LabelDriftAlarm compare
    # with the same thresholds: a quiet hour pages nobody through them either.
    alarmed = {"LowConfidenceShare", "LabelDrift"}
    enough = {
        p.name
        for p in window_metrics(
            report, alert_count=len(alerts), min_requests=12, drift_significance=SIGNIFICANCE
        )
    }
    too_few = {
        p.name
        for p in window_metrics(
            report, alert_count=0, min_requests=13, drift_significance=SIGNIFICANCE
        )
    }
    assert alarmed <= enough and not alarmed & too_few
    assert {"CapturedRequests", "MeanConfidence"} <= too_few  # the rest still published
    # No retraining target is configured, so responding only reports.
    outcome = respond(strict, clients, report, alerts)
    assert outcome is not None and outcome.status == "NOT_CONFIGURED"


def test_empty_window_without_baseline(aws: Aws, caplog) -> None:
    report, alerts = measure_window(settings(), MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    assert report.request_count == 0
    assert report.confidence is None
    assert report.label_mix == {}
    assert report.drift is None
    assert report.results.total == 0
    assert report.rejected_rate is None
    assert alerts == []
    assert "baseline not found; label drift is not computed" in caplog.text
    names = {
        p.name
        for p in window_metrics(
            report, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }
    assert names == {
        "CapturedRequests",
        "CaptureFilesRead",
        "MalformedCaptureLines",
        "DuplicateCaptureRecords",
        "ResultsRecorded",
        "AcceptedCorrectCount",
        "QualityAlerts",
        # Zero reviews were made: counted, but no accuracy is published.
        "ReviewedCount",
        "AcceptedReviewedCount",
        # A reports location is configured, so the Model Monitor faults read 0.
        "ModelMonitorFailedExecutions",
        "ModelMonitorNoDataExecutions",
        "ModelMonitorUnreadableReports",
    }


def test_unusable_baseline_is_logged_not_raised(aws: Aws, caplog) -> None:
    aws.s3.put_object(
        Bucket=BUCKET, Key="models/bicycle-motorcycle/baseline.json", Body=b'{"labels": []}'
    )
    report, _ = measure_window(settings(), MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    assert report.drift is None
    assert "baseline is unusable" in caplog.text


# ---- monitoring faults ----------------------------------------------------------

STATE_MACHINE = f"arn:aws:states:{REGION}:123456789012:stateMachine:scones-retrain"


def stubbed_clients(aws: Aws) -> MonitorClients:
    return MonitorClients(
        aws.s3,
        aws.dynamodb,
        sagemaker=boto3.client("sagemaker", region_name=REGION),
        stepfunctions=boto3.client("stepfunctions", region_name=REGION),
    )


def test_model_monitor_faults_alert_and_publish_but_do_not_retrain(aws: Aws) -> None:
    broken = f"{report_folder(12)}/constraint_violations.json"
    aws.s3.put_object(Bucket=BUCKET, Key=broken, Body=b"<html>Access Denied</html>")
    config = settings(MONITORING_SCHEDULE_NAME=SCHEDULE, RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE)
    clients = stubbed_clients(aws)
    failed = execution("Failed") | {"FailureReason": "AlgorithmError: out of memory"}
    with Stubber(clients.sagemaker) as sagemaker, Stubber(clients.stepfunctions) as sfn:
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [failed]},
            list_request(),
        )
        report, alerts = measure_window(config, clients, WINDOW_END)
        # No responses are queued for Step Functions: any call would raise here.
        assert respond(config, clients, report, alerts) is None
        sagemaker.assert_no_pending_responses()
        sfn.assert_no_pending_responses()

    assert [a.code for a in alerts] == [
        MODEL_MONITOR_EXECUTION_FAILED,
        MODEL_MONITOR_REPORT_UNREADABLE,
    ]
    assert not any(a.starts_retraining for a in alerts)
    assert "Failed" in alerts[0].message and "AlgorithmError: out of memory" in alerts[0].message
    assert f"s3://{BUCKET}/{broken} line 1: not JSON" in alerts[1].message
    points = metric_points(report, alerts)
    assert points["ModelMonitorFailedExecutions"] == 1
    assert points["ModelMonitorUnreadableReports"] == 1
    assert points["QualityAlerts"] == 2
    assert "ModelMonitorViolations" not in points  # unreadable is not "0 violations"
    summary = report.to_json()
    assert summary["warnings"] == [
        {
            "code": "UNREADABLE_MODEL_MONITOR_REPORT",
            "source": f"s3://{BUCKET}/{broken}",
            "line": 1,
            "reason": summary["warnings"][0]["reason"],
        }
    ]
    assert summary["warnings"][0]["reason"].startswith("not JSON")
    assert (summary["model_monitor_failed_executions"], summary["model_monitor_violations"]) == (
        1,
        None,
    )


def test_a_stopped_schedule_alerts_and_counts_as_a_failed_execution(aws: Aws) -> None:
    """Model Monitor stopped: no execution, no report. The window says so, the alarm on
    ModelMonitorFailedExecutions sees it, and nothing retrains on it."""
    config = settings(MONITORING_SCHEDULE_NAME=SCHEDULE, RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE)
    clients = stubbed_clients(aws)
    stopped = schedule_description("Stopped", WINDOW_START - timedelta(days=2), "cron(0 * ? * * *)")
    with Stubber(clients.sagemaker) as sagemaker, Stubber(clients.stepfunctions) as sfn:
        sagemaker.add_response(
            "list_monitoring_executions", {"MonitoringExecutionSummaries": []}, list_request()
        )
        sagemaker.add_response(
            "describe_monitoring_schedule", stopped, {"MonitoringScheduleName": SCHEDULE}
        )
        report, alerts = measure_window(config, clients, WINDOW_END)
        assert respond(config, clients, report, alerts) is None  # no retraining call
        sagemaker.assert_no_pending_responses()
        sfn.assert_no_pending_responses()
    [alert] = alerts
    assert alert.code == MODEL_MONITOR_EXECUTION_FAILED and not alert.starts_retraining
    assert "Missing: no execution was scheduled; the schedule is Stopped" in alert.message
    points = metric_points(report, alerts)
    assert points["ModelMonitorFailedExecutions"] == 1


def test_an_idle_hours_no_data_execution_is_counted_apart_and_raises_nothing(aws: Aws) -> None:
    """An hour without traffic ends its execution Failed / "Job inputs had no data":
    no report, which is not an error, so neither an alert nor the fault metric."""
    config = settings(MONITORING_SCHEDULE_NAME=SCHEDULE, RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE)
    clients = stubbed_clients(aws)
    idle = execution("Failed") | {"FailureReason": NO_DATA}
    fault = execution("Failed") | {
        "ScheduledTime": WINDOW_START + timedelta(minutes=30),
        "FailureReason": ALGORITHM_ERROR,
    }
    with Stubber(clients.sagemaker) as sagemaker:
        sagemaker.add_response(
            "list_monitoring_executions", {"MonitoringExecutionSummaries": [idle]}, list_request()
        )
        report, alerts = measure_window(config, clients, WINDOW_END)
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [fault, idle]},
            list_request(),
        )
        _, both = measure_window(config, clients, WINDOW_END)
        sagemaker.assert_no_pending_responses()

    assert alerts == []
    points = metric_points(report, alerts)
    assert points["ModelMonitorNoDataExecutions"] == 1
    assert points["ModelMonitorFailedExecutions"] == 0
    assert points["QualityAlerts"] == 0
    summary = report.to_json()
    assert summary["model_monitor_no_data_executions"] == 1
    assert summary["model_monitor_failed_executions"] == 0
    # A real fault in the same window still alerts, naming only itself.
    (alert,) = both
    assert alert.code == MODEL_MONITOR_EXECUTION_FAILED
    assert ALGORITHM_ERROR in alert.message and NO_DATA not in alert.message


# An hourly execution scheduled at H analyses the capture of [H - 1 h, H): its job downloads
# that hour's capture folder. With the deployed lag (80 minutes) the window [12:00, 13:00)
# reads the executions scheduled in [10:40, 11:40): the 11:00 one, which analysed the
# capture folder of 10:00, long before the window's own capture.
DEPLOYED_LAG = timedelta(minutes=80)
ELEVEN = WINDOW_START - timedelta(hours=1)
TEN = WINDOW_START - timedelta(hours=2)
JOB_ARN = f"arn:aws:sagemaker:{REGION}:123456789012:processing-job/mm-11"


def measure_no_data_at_eleven(aws: Aws) -> tuple[WindowReport, list[Alert]]:
    """The deployed settings' window [12:00, 13:00) with Model Monitor's 11:00 execution
    ended "no data"; no retraining call is made whatever the alerts."""
    config = settings(
        MONITORING_SCHEDULE_NAME=SCHEDULE,
        RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE,
        MODEL_MONITOR_LAG_MINUTES=str(DEPLOYED_LAG.seconds // 60),
    )
    no_data = execution("Failed") | {
        "ScheduledTime": ELEVEN,
        "FailureReason": NO_DATA,
        "ProcessingJobArn": JOB_ARN,
    }
    clients = stubbed_clients(aws)
    with Stubber(clients.sagemaker) as sagemaker, Stubber(clients.stepfunctions) as sfn:
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [no_data]},
            list_request(WINDOW_START - DEPLOYED_LAG, WINDOW_END - DEPLOYED_LAG),
        )
        report, alerts = measure_window(config, clients, WINDOW_END)
        # No responses are queued for Step Functions: any call would raise here.
        assert respond(config, clients, report, alerts) is None
        sagemaker.assert_no_pending_responses()
        sfn.assert_no_pending_responses()
    return report, alerts


def test_no_data_for_an_hour_whose_capture_folder_holds_files_is_a_monitoring_fault(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """Model Monitor said "no data" for [10:00, 11:00), yet that hour's capture folder holds
    a capture file (one request: with sampling, even one means its job had data): it does
    not see the endpoint's capture. An alert naming the execution and the folder, which
    does not retrain; not an idle hour."""
    captures.put(TEN, "one", [capture_line([0.97, 0.03], TEN + timedelta(minutes=5))])
    report, alerts = measure_no_data_at_eleven(aws)

    (alert,) = alerts
    assert alert.code == MODEL_MONITOR_EXECUTION_FAILED and not alert.starts_retraining
    assert alert.message.startswith("1 Model Monitor execution(s)")
    assert f"2026-11-25T11:00:00Z Failed ({JOB_ARN}): {NO_DATA}" in alert.message
    folder = f"s3://{BUCKET}/{capture_key(TEN, 'x').rsplit('/', 1)[0]}/"
    assert f"capture folder of the hour it analysed ({folder}) holds 1 capture file(s)" in (
        alert.message
    )
    assert "EndpointInput" in alert.message and "KMS" in alert.message
    points = metric_points(report, alerts)
    assert points["ModelMonitorFailedExecutions"] == 1
    assert points["ModelMonitorNoDataExecutions"] == 0
    assert points["QualityAlerts"] == 1
    summary = report.to_json()
    assert summary["model_monitor_failed_executions"] == 1
    assert summary["model_monitor_no_data_executions"] == 0


def test_no_data_for_an_hour_whose_capture_folder_holds_no_capture_stays_an_idle_hour(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """The 11:00 execution's hour is 10:00: capture in the folders of 9:00 and 11:00, an
    empty capture file and a folder marker in 10:00's are no data for it, as it said."""
    captures.put(TEN - timedelta(hours=1), "before", [capture_line([0.97, 0.03], TEN)])
    captures.put(ELEVEN, "after", [capture_line([0.97, 0.03], ELEVEN)])
    empty = capture_key(TEN, "empty")
    aws.s3.put_object(Bucket=BUCKET, Key=empty, Body=b"")
    aws.s3.put_object(Bucket=BUCKET, Key=empty.rsplit("/", 1)[0] + "/", Body=b"")
    report, alerts = measure_no_data_at_eleven(aws)

    assert alerts == []
    assert report.model_monitor is not None
    (idle,) = report.model_monitor.executions
    assert (idle.capture_files, idle.idle) == (0, True)
    points = metric_points(report, alerts)
    assert points["ModelMonitorNoDataExecutions"] == 1
    assert points["ModelMonitorFailedExecutions"] == 0


def test_an_execution_still_running_alerts_with_the_setting_to_change(aws: Aws) -> None:
    config = settings(MONITORING_SCHEDULE_NAME=SCHEDULE, RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE)
    clients = stubbed_clients(aws)
    with Stubber(clients.sagemaker) as sagemaker:
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("InProgress")]},
            list_request(),
        )
        report, alerts = measure_window(config, clients, WINDOW_END)
    (alert,) = alerts
    assert alert.code == MODEL_MONITOR_EXECUTION_FAILED and not alert.starts_retraining
    assert "InProgress" in alert.message and "raise ModelMonitorLagMinutes" in alert.message
    points = metric_points(report, alerts)
    assert points["ModelMonitorFailedExecutions"] == 1


def _input_only_line(at) -> str:
    """A record as SageMaker writes it with ``CaptureOptions: [{CaptureMode: Input}]``."""
    document = json.loads(capture_line([0.9, 0.1], at))
    del document["captureData"]["endpointOutput"]
    return json.dumps(document)


def test_a_window_whose_capture_lines_are_all_unusable_raises_an_alert_naming_why(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    lines = [_input_only_line(WINDOW_START + timedelta(minutes=i)) for i in range(30)]
    captures.put(WINDOW_START, "input-only", [*lines, "{truncated"])
    config = settings(RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE)
    clients = stubbed_clients(aws)
    with Stubber(clients.stepfunctions) as sfn:
        report, alerts = measure_window(config, clients, WINDOW_END)
        assert respond(config, clients, report, alerts) is None  # retraining fixes nothing here
        sfn.assert_no_pending_responses()

    assert (report.request_count, report.malformed_lines) == (0, 31)
    (alert,) = alerts
    assert alert.code == CAPTURE_UNUSABLE
    assert not alert.starts_retraining
    assert alert.message.startswith(
        "none of the 31 captured line(s) read for the window could be used: "
    )
    assert "output not captured (CaptureMode Input only) (30 line(s))" in alert.message
    assert "not JSON" in alert.message
    points = metric_points(report, alerts)
    assert points["QualityAlerts"] == 1

    # One usable record makes it a (small) window of traffic again, not a broken one.
    good = predictions["bicycle"][0].probabilities
    captures.put(WINDOW_START, "usable", [capture_line(good, WINDOW_START)])
    report, alerts = measure_window(config, clients, WINDOW_END)
    assert report.request_count == 1
    assert CAPTURE_UNUSABLE not in [a.code for a in alerts]


def test_windows_that_read_unusable_lines_they_do_not_own_name_why_not_missing_capture(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """Quarter-hour windows, capture of Input only for the first 25 minutes, then none:
    only the last quarter owns the hour's folder and counts its lines, so the others read
    0 requests and 0 malformed lines. A quarter whose time those lines state names why
    they are unusable (it said capture was missing, and pointed at DataCaptureConfig's
    destination and variant, though the lines were found); a quarter they do not cover
    has no capture at all, and says so."""
    for i in range(60):  # the endpoint answers all hour
        aws.put_result("ACCEPTED", WINDOW_START + timedelta(minutes=i, seconds=30), i)
    times = [WINDOW_START + timedelta(minutes=1 + i) for i in range(25)]  # :01 to :25
    captures.put(WINDOW_START, "input-only", [_input_only_line(at) for at in times])
    config = settings(MONITOR_WINDOW_MINUTES="15")
    expected = {1: (CAPTURE_UNUSABLE, 14), 2: (CAPTURE_UNUSABLE, 11), 3: (CAPTURE_MISSING, 0)}
    for quarter, (code, lines) in expected.items():
        end = WINDOW_START + timedelta(minutes=15 * quarter)
        report, alerts = measure_window(config, stubbed_clients(aws), end)
        assert (report.request_count, report.malformed_lines) == (0, 0)
        (alert,) = alerts
        assert alert.code == code, alert
        if code == CAPTURE_UNUSABLE:
            assert f"output not captured (CaptureMode Input only) ({lines} line(s))" in (
                alert.message
            )
            assert "DataCaptureConfig" not in alert.message
        else:
            assert "DataCaptureConfig" in alert.message
    # The owner counts and names every line of its folder, once.
    report, alerts = measure_window(config, stubbed_clients(aws), WINDOW_END)
    assert (report.request_count, report.malformed_lines) == (0, 25)
    (alert,) = alerts
    assert alert.code == CAPTURE_UNUSABLE and "(25 line(s))" in alert.message


def test_a_quiet_window_is_not_broken_capture_because_of_a_bad_line_next_door(
    aws: Aws, captures: CaptureWriterHelper
) -> None:
    """The hour after is read for late files; its bad line cannot be timed, so it is the
    next window's (the owner of that hour's folder) to count, and is counted there once."""
    good = [capture_line([0.9, 0.1], WINDOW_END + timedelta(minutes=i)) for i in range(20)]
    captures.put(WINDOW_END, "next-hour", [*good, "{truncated"])
    config = settings()
    report, alerts = measure_window(config, stubbed_clients(aws), WINDOW_END)
    assert (report.request_count, report.outside_window, report.malformed_lines) == (0, 20, 0)
    assert report.warnings == () and alerts == []
    following, alerts = measure_window(
        config, stubbed_clients(aws), WINDOW_END + timedelta(hours=1)
    )
    assert (following.request_count, following.malformed_lines) == (20, 1)
    assert CAPTURE_UNUSABLE not in [a.code for a in alerts]


def test_violations_still_retrain_when_an_execution_also_failed(aws: Aws) -> None:
    put_report(aws, hour=12)
    config = settings(MONITORING_SCHEDULE_NAME=SCHEDULE, RETRAINING_STATE_MACHINE_ARN=STATE_MACHINE)
    clients = stubbed_clients(aws)
    sent: list[dict] = []
    clients.stepfunctions.meta.events.register(
        "provide-client-params.states.StartExecution", lambda params, **_: sent.append(params)
    )
    with Stubber(clients.sagemaker) as sagemaker, Stubber(clients.stepfunctions) as sfn:
        sagemaker.add_response(
            "list_monitoring_executions",
            {
                "MonitoringExecutionSummaries": [
                    execution("CompletedWithViolations"),
                    execution("Stopped") | {"ScheduledTime": WINDOW_START + timedelta(minutes=30)},
                ]
            },
            list_request(),
        )
        sfn.add_response(
            "list_executions",
            {"executions": []},
            {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING", "maxResults": 2},
        )
        sfn.add_response(
            "start_execution",
            {"executionArn": f"{STATE_MACHINE}:run", "startDate": WINDOW_END},
            {"stateMachineArn": STATE_MACHINE, "name": ANY, "input": ANY},
        )
        report, alerts = measure_window(config, clients, WINDOW_END)
        outcome = respond(config, clients, report, alerts, clock=lambda: WINDOW_END)  # on time
        sfn.assert_no_pending_responses()

    assert [a.code for a in alerts] == [MODEL_MONITOR_VIOLATIONS, MODEL_MONITOR_EXECUTION_FAILED]
    assert outcome is not None and outcome.started
    (request,) = sent
    reasons = [reason["code"] for reason in json.loads(request["input"])["reasons"]]
    assert reasons == [MODEL_MONITOR_VIOLATIONS]


def test_the_summary_lists_the_first_warnings_and_counts_the_rest(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    good = [
        capture_line(p.probabilities, WINDOW_START + timedelta(minutes=i), event_id=f"g{i}")
        for i, p in enumerate(predictions["bicycle"][:12])
    ]
    key = captures.put(WINDOW_START, "noisy", [*good, *["{"] * 40, *good])
    report, _ = measure_window(settings(), MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    assert (report.request_count, report.malformed_lines, report.duplicate_records) == (12, 40, 12)
    assert len(report.warnings) == 52
    assert [w.line for w in report.warnings] == list(range(13, 65))
    assert {w.source for w in report.warnings} == {f"s3://{BUCKET}/{key}"}
    summary = report.to_json()
    assert summary["warnings"] == [w.to_json() for w in report.warnings[:SUMMARY_WARNING_LIMIT]]
    assert summary["warnings_omitted"] == 52 - SUMMARY_WARNING_LIMIT
    assert summary["duplicate_records"] == 12
    points = {
        p.name: p.value
        for p in window_metrics(
            report, alert_count=0, min_requests=MIN_REQUESTS, drift_significance=SIGNIFICANCE
        )
    }
    assert (points["MalformedCaptureLines"], points["DuplicateCaptureRecords"]) == (40, 12)


def test_model_monitor_is_read_for_executions_that_have_ended(aws: Aws) -> None:
    """An hourly execution starts up to 20 minutes after the hour and runs up to an hour:
    with ModelMonitorLagMinutes=80 the window [12:00, 13:00) reads the executions
    scheduled in [10:40, 11:40), which have ended, and leaves the 12:00 one to the next
    run. Each execution is read by exactly one run."""
    put_report(aws, hour=11)
    put_report(aws, hour=12, violations={"violations": []})
    lag = timedelta(minutes=80)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    finished = execution("CompletedWithViolations") | {"ScheduledTime": WINDOW_START - lag}
    config = settings(MONITORING_SCHEDULE_NAME=SCHEDULE, MODEL_MONITOR_LAG_MINUTES="80")
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [finished]},
            list_request(WINDOW_START - lag, WINDOW_END - lag),
        )
        report, alerts = measure_window(
            config, MonitorClients(aws.s3, aws.dynamodb, sagemaker=sagemaker), WINDOW_END
        )
        stub.assert_no_pending_responses()
    summary = report.to_json()
    assert summary["window_start"] == "2026-11-25T12:00:00Z"
    assert summary["model_monitor_scheduled"] == ["2026-11-25T10:40:00Z", "2026-11-25T11:40:00Z"]
    assert summary["model_monitor_reports"] == [
        f"s3://{BUCKET}/{report_folder(11)}/constraint_violations.json"
    ]
    assert summary["model_monitor_violations"] == 2
    assert MODEL_MONITOR_VIOLATIONS in [alert.code for alert in alerts]


def _violation(feature: str, check: str, description: str = "") -> dict:
    return {"feature_name": feature, "constraint_check_type": check, "description": description}


def _monitor_alert(aws: Aws, violations: list[dict], checked: int | None) -> tuple[Alert, dict]:
    """The window's one Model Monitor alert, from a report of ``violations`` whose
    statistics checked ``checked`` records (None: no statistics.json)."""
    folder = report_folder(12)
    body = json.dumps({"violations": violations}).encode()
    aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/constraint_violations.json", Body=body)
    if checked is not None:
        statistics = {"version": 0.0, "dataset": {"item_count": checked}}
        aws.s3.put_object(
            Bucket=BUCKET, Key=f"{folder}/statistics.json", Body=json.dumps(statistics).encode()
        )
    report, alerts = measure_window(settings(), MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    (alert,) = [a for a in alerts if a.code == MODEL_MONITOR_VIOLATIONS]
    return alert, report.to_json()


@pytest.mark.parametrize(
    ("violations", "checked", "retrains", "why"),
    [
        ([_violation("confidence", "baseline_drift_check", "distance 0.4 > 0.1")], 500, True, ""),
        ([_violation("", "LessThanThreshold", "accuracy 0.81 < 0.9")], None, True, ""),
        ([_violation("label", "categorical_values_check")], MIN_REQUESTS, True, ""),
        (
            [_violation("label", "data_type_check"), _violation("_c2", "extra_column_check")],
            500,
            False,
            "none is a drift or model-quality check",
        ),
        ([_violation("x", "bias_drift_check")], 500, False, "none is a drift or model-quality"),
        (
            [_violation("confidence", "baseline_drift_check")],
            MIN_REQUESTS - 1,
            False,
            f"the reports that found the drift checked {MIN_REQUESTS - 1} record(s), fewer "
            f"than the {MIN_REQUESTS}",
        ),
    ],
)
def test_only_drift_found_in_enough_records_retrains_and_every_alert_names_its_violations(
    aws: Aws, violations: list[dict], checked: int | None, retrains: bool, why: str
) -> None:
    """A schema violation (the records lack the baseline's columns or types) is a capture
    or preprocessor fault that new weights cannot mend, a check type this code does not
    know is for a person, and a drift seen in fewer records than MonitorMinRequests is
    judged as the monitor's own alerts are. Each alert names what was violated."""
    alert, summary = _monitor_alert(aws, violations, checked)
    assert alert.starts_retraining is retrains, alert.message
    if retrains:
        assert "not retraining" not in alert.message
    else:
        assert f"; not retraining: {why}" in alert.message
    for item in violations:
        assert (
            f"{item['feature_name'] or '(no feature named)'} {item['constraint_check_type']}"
            in (alert.message)
        )
    assert [v["constraint_check_type"] for v in summary["model_monitor_violation_details"]] == [
        v["constraint_check_type"] for v in violations
    ]


@pytest.mark.parametrize(
    ("hours", "retrains"),
    [
        # A drift in a quiet hour; the busy hours around it found none.
        pytest.param([(10, True, 3), (11, False, 500), (12, False, 500)], False, id="quiet-hour"),
        # Two hours that found it, in enough records between them.
        pytest.param(
            [(10, True, MIN_REQUESTS // 2), (11, True, MIN_REQUESTS - MIN_REQUESTS // 2)],
            True,
            id="enough-between-them",
        ),
    ],
)
def test_only_the_reports_that_found_a_drift_count_its_records(
    aws: Aws, hours: list[tuple[int, bool, int]], retrains: bool
) -> None:
    """A window longer than an hour reads several hourly reports: the records of the
    clean ones are no evidence of a drift another report found in a handful."""
    for hour, drifted, checked in hours:
        found = [_violation("confidence", "baseline_drift_check", "distance 0.6 > 0.1")]
        folder = report_folder(hour)
        body = json.dumps({"violations": found if drifted else []}).encode()
        aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/constraint_violations.json", Body=body)
        statistics = json.dumps({"version": 0.0, "dataset": {"item_count": checked}}).encode()
        aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/statistics.json", Body=statistics)
    config = settings(MONITOR_WINDOW_MINUTES="180")
    report, alerts = measure_window(config, MonitorClients(aws.s3, aws.dynamodb), WINDOW_END)
    assert len(report.to_json()["model_monitor_reports"]) == len(hours)
    (alert,) = [a for a in alerts if a.code == MODEL_MONITOR_VIOLATIONS]
    assert alert.starts_retraining is retrains, alert.message
    drifted = sum(checked for _, drift, checked in hours if drift)
    assert (f"found the drift checked {drifted} record(s)" in alert.message) is not retrains


def test_a_long_report_is_named_by_its_first_violations_with_the_rest_counted(aws: Aws) -> None:
    many = [
        _violation(f"feature{i}", "baseline_drift_check", "d" * 500)
        | ({"description": None} if i == 1 else {})
        for i in range(70)
    ]
    alert, summary = _monitor_alert(aws, many, 500)
    assert alert.starts_retraining
    assert "feature0 baseline_drift_check: " + "d" * 199 + "…; feature1 baseline_drift_check; " in (
        alert.message
    )
    assert "feature3" not in alert.message and alert.message.endswith("; and 67 more")
    details = summary["model_monitor_violation_details"]
    assert len(details) == SUMMARY_WARNING_LIMIT and details[1]["description"] == ""


def test_statistics_the_monitor_cannot_read_leave_the_count_unknown_not_the_run_failed(
    aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the number of records checked comes from statistics.json."""

    class RefusesStatistics:
        def __init__(self, s3: Any) -> None:
            self._s3 = s3

        def __getattr__(self, name: str) -> Any:
            return getattr(self._s3, name)

        def get_object(self, **request: Any) -> Any:
            if request["Key"].endswith("/statistics.json"):
                error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
                raise ClientError(error, "GetObject")
            return self._s3.get_object(**request)

    folder = report_folder(12)
    body = json.dumps({"violations": [_violation("c", "baseline_drift_check")]}).encode()
    aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/constraint_violations.json", Body=body)
    aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}/statistics.json", Body=b"{}")
    with caplog.at_level(logging.WARNING):
        report, alerts = measure_window(
            settings(), MonitorClients(RefusesStatistics(aws.s3), aws.dynamodb), WINDOW_END
        )
    assert report.model_monitor is not None
    assert report.model_monitor.drift_item_count is None
    assert [a.code for a in alerts if a.starts_retraining] == [MODEL_MONITOR_VIOLATIONS]
    assert "statistics.json" in caplog.text and "AccessDenied" in caplog.text


def test_a_label_that_is_not_ascii_is_published_under_an_ascii_dimension() -> None:
    """CloudWatch drops a metric whose dimension value is not ASCII (or is over 1,024
    characters), and the template lets a team name its labels in any language."""

    def dimension(label: str) -> str:
        return LabelMetricPoint("LabelShare", label, "None", 0.5).dimension

    assert dimension("bicycle") == "bicycle"
    assert dimension("road bike, 50%") == "road bike, 50%25"
    assert dimension("vélo") == "v%C3%A9lo"
    assert dimension("自転車") == "%E8%87%AA%E8%BB%A2%E8%BB%8A"
    long = dimension("é" * 400)
    assert long.isascii() and len(long) <= 1024 and long.endswith("%C3%A9")

"""The monitor Lambda handler, invoked with events/monitor.json as Lambda would."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from scones_core.errors import EventError, SettingsError
from scones_core.json_text import load_json

from scones.template_params import PROJECT_ROOT
from tests.monitoring.conftest import (
    BASELINE_KEY,
    BUCKET,
    ENDPOINT,
    MODEL_DIR,
    REGION,
    STATE_TABLE,
    WINDOW_END,
    WINDOW_START,
    Aws,
    CaptureWriterHelper,
    Prediction,
    capture_line,
)
from tests.monitoring.test_monitor_model_monitor import (
    SCHEDULE,
    execution,
    list_request,
    put_report,
    report_folder,
)

HANDLER = PROJECT_ROOT / "functions" / "monitor" / "app.py"
EVENT = json.loads((PROJECT_ROOT / "events" / "monitor.json").read_text())
STATE_MACHINE = f"arn:aws:states:{REGION}:123456789012:stateMachine:scones-retrain"


@dataclass
class LambdaContext:
    function_name: str = "MonitorFunction"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:MonitorFunction"
    aws_request_id: str = "11111111-2222-3333-4444-555555555555"


def drifting_window(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    """A window of 30 bicycles and the baseline: LABEL_DRIFT asks for retraining."""
    lines = [
        capture_line(r.probabilities, WINDOW_START + timedelta(seconds=90 * i))
        for i, r in enumerate(predictions["bicycle"][:30])
    ]
    captures.put(WINDOW_START, "a", lines)
    aws.put_baseline()


def load_handler() -> ModuleType:
    """A fresh import of app.py: a cold start, with the environment as it is now."""
    spec = importlib.util.spec_from_file_location(f"monitor_app_{uuid.uuid4().hex}", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Powertools reuses the first Logger's handler for the service, bound to the
    # stdout of whichever test imported first (closed by now); point it at this
    # test's stdout. Assigned, not ``setStream``, which would flush the closed one.
    module.logger.registered_handler.stream = sys.stdout
    return module


def emf(stdout: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in stdout.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]


def metric_table(documents: list[dict[str, Any]]) -> dict[tuple[str, tuple[str, ...]], tuple]:
    """``{(metric, dimension values): (unit, value)}`` from EMF documents."""
    table = {}
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "SconesUnlimited"
            (dimensions,) = directive["Dimensions"]
            key = tuple(document[d] for d in dimensions)
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                if isinstance(value, list):  # Powertools writes one value as a list of one
                    (value,) = value
                table[(metric["Name"], key)] = (metric["Unit"], value)
    return table


RUNNING_REQUEST = {"stateMachineArn": STATE_MACHINE, "statusFilter": "RUNNING", "maxResults": 2}


def expect_retraining_start(sfn: Stubber, run_name: str) -> None:
    """The launcher's two calls: no retraining is running, then the start."""
    sfn.add_response("list_executions", {"executions": []}, RUNNING_REQUEST)
    sfn.add_response(
        "start_execution",
        {
            "executionArn": f"arn:aws:states:{REGION}:123456789012:execution:r:{run_name}",
            "startDate": WINDOW_END,
        },
        {"stateMachineArn": STATE_MACHINE, "name": run_name, "input": ANY},
    )


def runs_at(app: ModuleType, monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    """The handler's clock reads ``now`` (the example event's window is long past)."""
    monkeypatch.setattr(app, "clock", lambda: now)


def test_event_file_is_what_the_scheduler_sends() -> None:
    assert EVENT["scheduledTime"] == "2026-11-25T13:00:00Z"
    assert EVENT["scheduleArn"].startswith("arn:aws:scheduler:")


def test_monitor_run_publishes_metrics_and_starts_retraining_once(
    aws: Aws,
    captures: CaptureWriterHelper,
    predictions: dict[str, list[Prediction]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITORING_SCHEDULE_NAME", SCHEDULE)
    monkeypatch.setenv("RETRAINING_STATE_MACHINE_ARN", STATE_MACHINE)
    rows = predictions["motorcycle"][:30] + predictions["bicycle"][:10]
    lines = [
        capture_line(r.probabilities, WINDOW_START + timedelta(seconds=80 * i))
        for i, r in enumerate(rows)
    ]
    captures.put(WINDOW_START, "a", lines[:25])
    captures.put(WINDOW_START, "b", [*lines[25:], "{broken"])
    aws.put_baseline()
    put_report(aws, hour=12)
    for i in range(8):
        aws.put_result("ACCEPTED" if i < 6 else "REJECTED", WINDOW_START + timedelta(minutes=i), i)

    app = load_handler()
    runs_at(app, monkeypatch, WINDOW_END + timedelta(seconds=40))  # on time (settle 0)
    clients = app.clients()
    run_name = f"{ENDPOINT}-retrain-20261125-1300"  # the window's end
    with Stubber(clients.sagemaker) as sagemaker, Stubber(clients.stepfunctions) as sfn:
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("CompletedWithViolations")]},
            list_request(),
        )
        expect_retraining_start(sfn, run_name)
        result = app.lambda_handler(EVENT, LambdaContext())
        sagemaker.assert_no_pending_responses()
        sfn.assert_no_pending_responses()

        # The scheduler retries, or the next hourly run comes: no second start.
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("CompletedWithViolations")]},
            list_request(),
        )
        again = app.lambda_handler(EVENT, LambdaContext())
        sfn.assert_no_pending_responses()

    assert result["window_start"] == "2026-11-25T12:00:00Z"
    assert result["window_end"] == "2026-11-25T13:00:00Z"
    assert result["request_count"] == 40
    assert result["malformed_lines"] == 1
    assert "MODEL_MONITOR_VIOLATIONS" in result["alerts"]
    assert result["retraining"]["status"] == "STARTED"
    assert result["retraining"]["run_name"] == run_name
    assert again["retraining"]["status"] == "COOLDOWN"

    stdout = capsys.readouterr().out
    documents = emf(stdout)
    # The second run publishes only its own outcome: the window was published once.
    *first_documents, second_run = documents
    assert metric_table([second_run]) == {
        ("RetrainingStarted", (ENDPOINT, "scones-classifier")): ("Count", 0.0)
    }
    first_run = metric_table(first_documents)
    dims = (ENDPOINT, "scones-classifier")
    assert first_run[("CapturedRequests", dims)] == ("Count", 40.0)
    assert first_run[("MalformedCaptureLines", dims)] == ("Count", 1.0)
    assert first_run[("ModelMonitorViolations", dims)] == ("Count", 2.0)
    assert first_run[("ResultsRecorded", dims)] == ("Count", 8.0)
    assert first_run[("RejectedRate", dims)] == ("None", 0.25)
    assert first_run[("RetrainingStarted", dims)] == ("Count", 1.0)
    assert first_run[("QualityAlerts", dims)][1] == len(result["alerts"])
    confidences = sorted(max(r.probabilities) for r in rows)
    assert first_run[("MeanConfidence", dims)][1] == pytest.approx(sum(confidences) / 40)
    predicted_bikes = sum(1 for r in rows if r.probabilities[0] > r.probabilities[1])
    assert first_run[("LabelShare", (*dims, "bicycle"))] == (
        "None",
        pytest.approx(predicted_bikes / 40),
    )
    assert '"quality alert"' in stdout


def published(documents: list[dict[str, Any]], name: str) -> int:
    """How many data points of ``name`` (any dimensions) the documents carry."""
    return sum(
        1
        for document in documents
        for directive in document["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
        if metric["Name"] == name
    )


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_a_retried_run_publishes_its_window_once(
    aws: Aws,
    captures: CaptureWriterHelper,
    predictions: dict[str, list[Prediction]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Starting retraining fails after the window was measured and published; the
    scheduler's retry measures the same window, starts retraining, and publishes no
    second copy of the window's counts (CloudWatch would add both to the day's sums)."""
    monkeypatch.setenv("RETRAINING_STATE_MACHINE_ARN", STATE_MACHINE)
    drifting_window(aws, captures, predictions)
    for i in range(5):
        aws.put_result("ACCEPTED", WINDOW_START + timedelta(minutes=i), i)

    app = load_handler()
    runs_at(app, monkeypatch, WINDOW_END + timedelta(minutes=3))
    run_name = f"{ENDPOINT}-retrain-20261125-1300"  # the window's end
    with Stubber(app.clients().stepfunctions) as sfn:
        sfn.add_response("list_executions", {"executions": []}, RUNNING_REQUEST)
        sfn.add_client_error("start_execution", "ServiceUnavailable", http_status_code=503)
        with pytest.raises(ClientError, match="ServiceUnavailable"):
            app.lambda_handler(EVENT, LambdaContext())
        failed_attempt = emf(capsys.readouterr().out)

        expect_retraining_start(sfn, run_name)
        retried = app.lambda_handler(EVENT, LambdaContext())
        sfn.assert_no_pending_responses()
        retry = emf(capsys.readouterr().out)

    assert "LABEL_DRIFT" in retried["alerts"]
    assert retried["retraining"]["status"] == "STARTED"
    dims = (ENDPOINT, "scones-classifier")
    assert metric_table(failed_attempt)[("CapturedRequests", dims)] == ("Count", 30.0)
    assert metric_table(failed_attempt)[("ResultsRecorded", dims)] == ("Count", 5.0)
    for name in ("CapturedRequests", "ResultsRecorded", "QualityAlerts", "LabelShare"):
        assert published(failed_attempt, name) >= 1
        assert published(retry, name) == 0, name
    assert metric_table(retry) == {("RetrainingStarted", dims): ("Count", 1.0)}
    # Another window is published as usual.
    later = app.lambda_handler({"scheduledTime": "2026-11-25T14:00:00Z"}, LambdaContext())
    assert later["window_end"] == "2026-11-25T14:00:00Z"
    assert published(emf(capsys.readouterr().out), "CapturedRequests") == 1


@pytest.mark.parametrize(("late", "status"), [(59, "STARTED"), (61, "SUPERSEDED")])
def test_a_late_run_counts_its_cooldown_from_its_start_and_none_starts_once_superseded(
    aws: Aws,
    captures: CaptureWriterHelper,
    predictions: dict[str, list[Prediction]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    late: int,
    status: str,
) -> None:
    """A run that comes ``late`` minutes after it was due (a retry, a redriven dead
    letter), its window alerting: before the next window's run is due (hourly) it starts
    retraining, the cooldown counted from now, not from the window; after it, it starts
    nothing (the newer window decides) but still publishes its window."""
    monkeypatch.setenv("RETRAINING_STATE_MACHINE_ARN", STATE_MACHINE)
    drifting_window(aws, captures, predictions)
    app = load_handler()
    now = WINDOW_END + timedelta(minutes=late)
    runs_at(app, monkeypatch, now)
    with Stubber(app.clients().stepfunctions) as sfn:
        if status == "STARTED":
            expect_retraining_start(sfn, f"{ENDPOINT}-retrain-20261125-1300")
        result = app.lambda_handler(EVENT, LambdaContext())
        sfn.assert_no_pending_responses()  # superseded: no call at all

    assert "LABEL_DRIFT" in result["alerts"]
    assert result["retraining"]["status"] == status
    if status == "STARTED":
        assert result["retraining"]["cooldown_until"] == "2026-11-26T13:59:00Z"  # now + 24 h
    documents = emf(capsys.readouterr().out)
    dims = (ENDPOINT, "scones-classifier")
    assert metric_table(documents)[("CapturedRequests", dims)] == ("Count", 30.0)
    assert metric_table(documents)[("RetrainingStarted", dims)] == (
        "Count",
        1.0 if status == "STARTED" else 0.0,
    )


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_a_run_that_cannot_mark_its_window_publishes_nothing(
    aws: Aws, captures: CaptureWriterHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state table unreachable: the run fails before publishing, so its retry can."""
    aws.dynamodb.delete_table(TableName=STATE_TABLE)
    app = load_handler()
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        app.lambda_handler(EVENT, LambdaContext())
    assert published(emf(capsys.readouterr().out), "CapturedRequests") == 0


def test_empty_window_publishes_counts_only(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    app = load_handler()
    result = app.lambda_handler(EVENT, LambdaContext())
    assert result == {
        "window_start": "2026-11-25T12:00:00Z",
        "window_end": "2026-11-25T13:00:00Z",
        "request_count": 0,
        "malformed_lines": 0,
        "duplicate_records": 0,
        "label_drift": None,
        "label_drift_p_value": None,
        "alerts": [],
        "retraining": None,
        "warnings": [],
        "warnings_omitted": 0,
    }
    table = metric_table(emf(capsys.readouterr().out))
    dims = (ENDPOINT, "scones-classifier")
    assert table[("CapturedRequests", dims)] == ("Count", 0.0)
    assert table[("RetrainingStarted", dims)] == ("Count", 0.0)
    assert not any(name in {"MeanConfidence", "LabelShare", "LabelDrift"} for name, _ in table)


def test_a_label_that_is_not_ascii_is_published_under_its_ascii_dimension(
    aws: Aws,
    captures: CaptureWriterHelper,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CloudWatch drops a metric whose dimension value is not ASCII: a team's "vélo" is
    published as "v%C3%A9lo" (``LabelMetricPoint.dimension``), in the document as sent,
    from the window's captured answers."""
    monkeypatch.setenv("LABELS", "vélo,motorcycle")
    lines = [capture_line((0.9, 0.1), WINDOW_START + timedelta(seconds=60 * i)) for i in range(3)]
    lines.append(capture_line((0.2, 0.8), WINDOW_START + timedelta(seconds=300)))
    captures.put(WINDOW_START, "a", lines)
    app = load_handler()
    runs_at(app, monkeypatch, WINDOW_END + timedelta(seconds=40))
    app.lambda_handler(EVENT, LambdaContext())
    table = metric_table(emf(capsys.readouterr().out))
    dims = (ENDPOINT, "scones-classifier")
    assert table[("LabelShare", (*dims, "v%C3%A9lo"))] == ("None", 0.75)
    assert table[("LabelShare", (*dims, "motorcycle"))] == ("None", 0.25)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        # Another model's baseline, well formed: its whole mix on a label this one lacks.
        (
            {
                "labels": ["bicycle", "motorcycle", "cat"],
                "label_mix": {"bicycle": 0.0, "motorcycle": 0.0, "cat": 1.0},
            },
            "label_mix gives the model's labels ['bicycle', 'motorcycle'] no share",
        ),
        # float() takes the string; the metric document then held NaN, which is not JSON.
        ({"mean_confidence": "NaN"}, "mean_confidence is not a JSON number: 'NaN'"),
        # float() raised OverflowError, which nothing caught.
        ({"mean_confidence": 10**400}, "mean_confidence is not in [0, 1]"),
    ],
)
def test_a_baseline_the_monitor_cannot_compare_with_is_logged_and_the_window_published(
    aws: Aws,
    captures: CaptureWriterHelper,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, Any],
    problem: str,
) -> None:
    """Drift is an extra signal: a baseline it cannot use costs the label drift, never the
    run (which failed on every retry) or the window's other metrics (which CloudWatch
    dropped with a NaN in their document)."""
    document = json.loads((MODEL_DIR / "baseline.json").read_text()) | changes
    aws.s3.put_object(Bucket=BUCKET, Key=BASELINE_KEY, Body=json.dumps(document).encode())
    lines = [capture_line((0.9, 0.1), WINDOW_START + timedelta(seconds=60 * i)) for i in range(20)]
    captures.put(WINDOW_START, "a", lines)
    app = load_handler()
    runs_at(app, monkeypatch, WINDOW_END + timedelta(seconds=40))

    result = app.lambda_handler(EVENT, LambdaContext())

    stdout = capsys.readouterr().out
    documents = [
        load_json(line)  # strict JSON (RFC 8259): no NaN or Infinity, as CloudWatch reads it
        for line in stdout.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    table = metric_table(documents)
    dims = (ENDPOINT, "scones-classifier")
    assert table[("CapturedRequests", dims)] == ("Count", 20.0)
    assert table[("MeanConfidence", dims)] == ("None", pytest.approx(0.9))
    assert table[("LabelShare", (*dims, "bicycle"))] == ("None", 1.0)
    assert not any(name in {"LabelDrift", "MeanConfidenceShift"} for name, _ in table)
    assert (result["request_count"], result["label_drift"]) == (20, None)
    logs = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"level"')]
    (error,) = [entry for entry in logs if entry["level"] == "ERROR"]
    assert "label drift is not computed" in error["message"]
    assert problem in error["problem"]


def test_eventbridge_rule_event_and_empty_event_are_accepted(aws: Aws) -> None:
    app = load_handler()
    rule_event = {
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": "2026-11-25T13:00:00Z",
        "detail": {},
    }
    assert app.lambda_handler(rule_event, LambdaContext())["window_end"] == "2026-11-25T13:00:00Z"
    assert app.lambda_handler({}, LambdaContext())["request_count"] == 0


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_bad_event_is_a_clear_error(aws: Aws) -> None:
    app = load_handler()
    with pytest.raises(EventError, match="scheduledTime"):
        app.lambda_handler({"scheduledTime": "soon"}, LambdaContext())
    # The earliest time there is: the settle before it is no time at all.
    with pytest.raises(EventError, match="scheduledTime"):
        app.lambda_handler({"scheduledTime": "0001-01-01T00:00:00Z"}, LambdaContext())
    # The latest: not a window's arithmetic overflowing near year 9999.
    for far in ("9999-12-31T23:59:59Z", "2999-01-01T00:00:00Z"):
        with pytest.raises(EventError, match=r"is more than 1 day after now"):
            app.lambda_handler({"scheduledTime": far}, LambdaContext())


def test_bad_environment_fails_the_cold_start_naming_the_variables(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENDPOINT_NAME")
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "1.5")
    with pytest.raises(SettingsError, match="ENDPOINT_NAME is missing") as caught:
        load_handler()
    assert "CONFIDENCE_THRESHOLD='1.5'" in str(caught.value)


def test_import_needs_no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.monitoring.conftest import monitor_env

    for name, value in monitor_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    app = load_handler()
    assert app.SETTINGS.data_capture.bucket == BUCKET


def test_faults_reach_the_logs_the_response_and_the_metrics(
    aws: Aws,
    captures: CaptureWriterHelper,
    predictions: dict[str, list[Prediction]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONITORING_SCHEDULE_NAME", SCHEDULE)
    monkeypatch.setenv("RETRAINING_STATE_MACHINE_ARN", STATE_MACHINE)
    lines = [
        capture_line(r.probabilities, WINDOW_START + timedelta(minutes=i), event_id=f"e{i}")
        for i, r in enumerate(predictions["bicycle"][:4])
    ]
    original = captures.put(WINDOW_START, "a", lines)
    copy = captures.put(WINDOW_START, "b", [lines[2], "not json"])
    report_key = f"{report_folder(12)}/constraint_violations.json"
    aws.s3.put_object(Bucket=BUCKET, Key=report_key, Body=b'{"violations": {}}')

    app = load_handler()
    clients = app.clients()
    with Stubber(clients.sagemaker) as sagemaker, Stubber(clients.stepfunctions) as sfn:
        sagemaker.add_response(
            "list_monitoring_executions",
            {"MonitoringExecutionSummaries": [execution("Stopped")]},
            list_request(),
        )
        result = app.lambda_handler(EVENT, LambdaContext())
        sagemaker.assert_no_pending_responses()
        sfn.assert_no_pending_responses()  # faults alone never start retraining

    expected = [
        {
            "code": "DUPLICATE_CAPTURE_RECORD",
            "source": f"s3://{BUCKET}/{copy}",
            "line": 1,
            "reason": f"eventId 'e2' was already read at s3://{BUCKET}/{original} line 3",
        },
        {
            "code": "MALFORMED_CAPTURE_LINE",
            "source": f"s3://{BUCKET}/{copy}",
            "line": 2,
            "reason": "not JSON: Expecting value: line 1 column 1 (char 0)",
        },
        {
            "code": "UNREADABLE_MODEL_MONITOR_REPORT",
            "source": f"s3://{BUCKET}/{report_key}",
            "line": None,
            "reason": 'expected {"violations": [...]}',
        },
    ]
    assert sorted(result["warnings"], key=lambda w: w["code"]) == expected
    assert result["warnings_omitted"] == 0
    assert (result["request_count"], result["duplicate_records"]) == (4, 1)
    assert result["malformed_lines"] == 1
    assert result["alerts"] == ["MODEL_MONITOR_EXECUTION_FAILED", "MODEL_MONITOR_REPORT_UNREADABLE"]
    assert result["retraining"] is None

    stdout = capsys.readouterr().out
    logs = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"level"')]
    logged = sorted(
        (
            # Powertools leaves out None values: a whole-file problem has no line.
            {k: entry.get(k) for k in ("code", "source", "line", "reason")}
            for entry in logs
            if entry["level"] == "WARN" and "reason" in entry
        ),
        key=lambda w: w["code"],
    )
    assert logged == expected
    alerts = [e["code"] for e in logs if e["message"] == "quality alert"]
    assert alerts == result["alerts"]
    table = metric_table(emf(stdout))
    dims = (ENDPOINT, "scones-classifier")
    assert table[("ModelMonitorFailedExecutions", dims)] == ("Count", 1.0)
    assert table[("ModelMonitorUnreadableReports", dims)] == ("Count", 1.0)
    assert table[("DuplicateCaptureRecords", dims)] == ("Count", 1.0)
    assert table[("QualityAlerts", dims)] == ("Count", 2.0)
    assert table[("RetrainingStarted", dims)] == ("Count", 0.0)


def test_a_scheduled_run_measures_the_window_that_ended_a_settle_before_it(
    aws: Aws, captures: CaptureWriterHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SageMaker delivers capture files minutes late: requests of 12:57-12:59 are in the
    12 o'clock folder only after 13:00. With MonitorSettleMinutes=10 the run scheduled
    for 13:10 measures [12:00, 13:00) and counts them; the run of 14:10 starts at 13:00."""
    monkeypatch.setenv("MONITOR_SETTLE_MINUTES", "10")
    app = load_handler()
    late = [
        capture_line([0.9, 0.1], WINDOW_END - timedelta(minutes=3 - i), event_id=f"late-{i}")
        for i in range(3)
    ]
    captures.put(WINDOW_START, "delivered-after-the-hour", late)

    first = app.lambda_handler({"scheduledTime": "2026-11-25T13:10:00Z"}, LambdaContext())
    second = app.lambda_handler({"scheduledTime": "2026-11-25T14:10:00Z"}, LambdaContext())

    assert (first["window_start"], first["window_end"]) == (
        "2026-11-25T12:00:00Z",
        "2026-11-25T13:00:00Z",
    )
    assert first["request_count"] == 3
    assert (second["window_start"], second["request_count"]) == ("2026-11-25T13:00:00Z", 0)


def test_a_run_by_hand_waits_the_same_settle_and_names_the_keys_it_ignores(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand run's last minutes would have results-table items but not yet their
    capture files, and its metrics share the scheduled runs' series."""
    app = load_handler()
    settle = timedelta(minutes=10)
    now = WINDOW_END + settle
    scheduler = {"scheduledTime": "2026-11-25T13:10:00Z", "scheduleArn": EVENT["scheduleArn"]}
    rule = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-25T13:10:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:123456789012:rule/monitor"],
        "detail": {},
    }
    for scheduled in (scheduler, rule):
        assert app.window_end_from_event(scheduled, now, settle) == WINDOW_END
    assert "unknown keys" not in capsys.readouterr().out  # their keys are AWS's own

    for manual in (None, {}):
        assert app.window_end_from_event(manual, now, settle) == WINDOW_END
    misspelt = {"window_end": "2026-11-20T10:00:00Z", "key1": "value1"}  # and the console's
    assert app.window_end_from_event(misspelt, now, settle) == WINDOW_END
    (warning,) = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith('{"level"') and "unknown keys" in line
    ]
    assert warning["level"] == "WARN"
    assert warning["unknown_keys"] == ["key1", "window_end"]
    assert "key1, window_end" in warning["message"]


@pytest.mark.parametrize("hours_ago", [3 * 24, 20 * 24, -20])
def test_a_late_run_stamps_its_data_points_at_the_time_it_was_scheduled_for(
    aws: Aws, capsys: pytest.CaptureFixture[str], hours_ago: int
) -> None:
    """A run days late (``scones redrive`` of a dead-lettered run) counts in the period it
    was due in, not the day it ran; a time CloudWatch would not take (past its 14 days,
    or ahead of now) is stamped now, not lost."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    scheduled = now - timedelta(hours=hours_ago)
    app = load_handler()
    app.lambda_handler({"scheduledTime": scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")}, LambdaContext())
    documents = emf(capsys.readouterr().out)
    names = {
        m["Name"] for d in documents for c in d["_aws"]["CloudWatchMetrics"] for m in c["Metrics"]
    }
    assert {"CapturedRequests", "RetrainingStarted"} <= names
    stamps = {d["_aws"]["Timestamp"] for d in documents}
    if 0 < hours_ago < 14 * 24:
        assert stamps == {int(scheduled.timestamp() * 1000)}
    else:
        assert all(abs(stamp / 1000 - now.timestamp()) < 300 for stamp in stamps), stamps
    # The next run (a window of its own) is stamped at its own time, not this one's.
    later = now - timedelta(hours=1)
    app.lambda_handler({"scheduledTime": later.strftime("%Y-%m-%dT%H:%M:%SZ")}, LambdaContext())
    assert {d["_aws"]["Timestamp"] for d in emf(capsys.readouterr().out)} == {
        int(later.timestamp() * 1000)
    }

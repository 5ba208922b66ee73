"""Every alarm on the monitor's namespace watches a metric the monitor really publishes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from scones_core.ingest import retry_delay_seconds
from scones_core.monitoring.metrics import retraining_metric, window_metrics
from scones_core.monitoring.service import MonitorClients, measure_window
from scones_core.monitoring.settings import MonitorSettings

from scones.template_params import load_template, service_name
from tests.monitoring.conftest import (
    WINDOW_END,
    WINDOW_START,
    Aws,
    CaptureWriterHelper,
    Prediction,
    capture_line,
    monitor_env,
)
from tests.monitoring.test_monitor_model_monitor import put_report


def _metric_namespace(template: dict) -> str:
    return str(
        template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    )


def _alarm_metrics(template: dict) -> Iterator[tuple[str, dict, dict]]:
    """Every metric an alarm reads: (its name, or name.query id, the metric, the alarm)."""
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        yield name, props, props
        for query in props.get("Metrics", []):
            yield f"{name}.{query['Id']}", query.get("MetricStat", {}).get("Metric", {}), props


def monitor_alarms() -> dict[str, dict]:
    template = load_template()
    namespace = _metric_namespace(template)
    alarms: dict[str, dict] = {}
    for name, metric, props in _alarm_metrics(template):
        if metric.get("Namespace") == namespace:
            alarms[name] = (
                metric if metric is props else metric | {"AlarmActions": props["AlarmActions"]}
            )
    return alarms


def test_every_alarm_on_a_metric_of_ours_reads_the_functions_namespace() -> None:
    """The namespace is spelled in Globals (Powertools publishes there) and in each alarm:
    one misspelt alarm would watch a metric nobody publishes and never fire."""
    template = load_template()
    spelled = {
        name: metric["Namespace"]
        for name, metric, _ in _alarm_metrics(template)
        if "Namespace" in metric and not str(metric["Namespace"]).startswith("AWS/")
    }
    assert spelled and set(spelled.values()) == {_metric_namespace(template)}, spelled


def test_monitor_alarms_watch_published_metrics_with_the_published_dimensions(
    aws: Aws, captures: CaptureWriterHelper, predictions: dict[str, list[Prediction]]
) -> None:
    # A window that publishes everything: traffic (bicycles only, beyond chance of the
    # baseline's mix), a baseline and a Model Monitor report.
    rows = predictions["bicycle"][:20]
    captures.put(
        WINDOW_START,
        "a",
        [
            capture_line(r.probabilities, WINDOW_START + timedelta(minutes=i))
            for i, r in enumerate(rows)
        ],
    )
    aws.put_baseline()
    put_report(aws, hour=12)
    aws.put_review(
        1,
        recorded_at=WINDOW_START,
        reviewed_at=WINDOW_START + timedelta(minutes=5),
        classified_status="ACCEPTED",
        answer="bicycle",
    )
    report, alerts = measure_window(
        MonitorSettings.from_env(monitor_env()), MonitorClients(aws.s3, aws.dynamodb), WINDOW_END
    )
    settings = MonitorSettings.from_env(monitor_env())
    published = {
        p.name
        for p in window_metrics(
            report,
            alert_count=len(alerts),
            min_requests=settings.min_requests,
            drift_significance=settings.drift_alert_significance,
        )
    }
    published.add(retraining_metric(False).name)

    alarms = monitor_alarms()
    watched = {props["MetricName"]: name for name, props in alarms.items()}
    assert {
        "ModelMonitorFailedExecutions",
        "ModelMonitorUnreadableReports",
        "AcceptedCorrectCount",
        "AcceptedReviewedCount",
    } <= watched.keys()
    assert watched.keys() <= published, (
        f"alarms on metrics never published: {watched.keys() - published}"
    )
    service = load_template()["Globals"]["Function"]["Environment"]["Variables"][
        "POWERTOOLS_SERVICE_NAME"
    ]
    for name, props in alarms.items():
        dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}
        assert dimensions == {"EndpointName": {"Ref": "EndpointName"}, "service": service}, name
        assert props["AlarmActions"] == [{"Ref": "AlertTopic"}], name


def test_the_accepted_accuracy_alarm_does_not_judge_a_day_of_a_handful_of_reviews() -> None:
    template = load_template()
    query = next(
        q
        for q in template["Resources"]["AcceptedAccuracyAlarm"]["Properties"]["Metrics"]
        if "Expression" in q
    )
    # IF without a false value drops the day's data point, and a missing point is not breaching.
    assert query["Expression"] == {
        "Fn::Sub": "IF(reviewed >= ${AcceptedAccuracyAlarmMinReviews}, correct / reviewed)"
    }
    assert template["Resources"]["AcceptedAccuracyAlarm"]["Properties"]["TreatMissingData"] == (
        "notBreaching"
    )
    # By default one wrong answer in the smallest day judged is not below the threshold.
    parameters = template["Parameters"]
    fewest = int(parameters["AcceptedAccuracyAlarmMinReviews"]["Default"])
    threshold = float(parameters["AcceptedAccuracyAlarmThreshold"]["Default"])
    assert (fewest - 1) / fewest >= threshold


def test_an_ingest_queue_nobody_reads_pages_before_sqs_deletes_its_events() -> None:
    """Events that fail reach the dead-letter queue; events nobody receives (the trigger
    disabled) only expire. The backlog alarm watches the ingest queue's oldest message and
    fires well inside the queue's retention, whatever the parameter is set to."""
    template = load_template()
    alarm = template["Resources"]["IngestBacklogAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["IngestQueue", "QueueName"]}}
    ]
    assert alarm["Threshold"] == {"Ref": "IngestQueueAlarmAgeSeconds"}
    parameter = template["Parameters"]["IngestQueueAlarmAgeSeconds"]
    retention = template["Resources"]["IngestQueue"]["Properties"]["MessageRetentionPeriod"]
    assert int(parameter["MaxValue"]) * 2 <= int(retention)
    # A message that keeps failing is received maxReceiveCount times before it moves to the
    # dead-letter queue: each receive can take the longest batching window and the start
    # function's longest timeout (a run waited on under EXPRESS), and each send-back hides it
    # for its retry delay. The default does not page for those.
    queue = template["Resources"]["IngestQueue"]["Properties"]
    receives = int(queue["RedrivePolicy"]["maxReceiveCount"])
    windows = template["Parameters"]["IngestBatchingWindowSeconds"]["AllowedValues"]
    timeout = template["Resources"]["StartWorkflowFunction"]["Properties"]["Timeout"]
    longest_timeout = max(int(t) for t in timeout["Fn::If"][1:])
    first = int(template["Parameters"]["IngestRetrySeconds"]["Default"])
    delays = sum(retry_delay_seconds(n, first) for n in range(1, receives))
    longest = receives * (max(int(w) for w in windows) + longest_timeout) + delays
    assert int(parameter["Default"]) > longest


@pytest.mark.parametrize("stack", ["scones", "prod", "core", "monitoring"])
def test_the_service_is_the_stacks_and_never_silences_a_projects_logger(stack: str) -> None:
    """Two stacks in one account publish under services of their own, so neither's alarms
    see the other's data points. Powertools filters the root logger's handlers with a
    substring test (a record whose logger name contains the service is dropped): the
    stack name alone as the service ("scones") silenced every scones_core logger."""
    from aws_lambda_powertools.logging.filters import SuppressFilter

    service = service_name(stack)
    assert service != service_name(f"{stack}-staging")
    for name in ("scones_core", "scones_core.monitoring.service", "app", "root"):
        record = logging.LogRecord(name, logging.INFO, __file__, 1, "line", None, None)
        assert SuppressFilter(service).filter(record), (service, name)

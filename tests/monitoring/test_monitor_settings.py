"""The monitor's environment: validated at once, every problem named."""

from __future__ import annotations

from datetime import timedelta

import pytest
from scones_core.errors import SettingsError
from scones_core.monitoring.locations import S3Location
from scones_core.monitoring.settings import (
    ENVIRONMENT_VARIABLES,
    MAX_COOLDOWN_HOURS,
    MonitorSettings,
)

from scones.template_params import load_template
from tests.monitoring.conftest import BUCKET, LABELS, monitor_env


def test_template_environment_is_valid() -> None:
    settings = MonitorSettings.from_env(monitor_env())
    assert settings.labels == LABELS
    assert settings.window == timedelta(minutes=60)
    assert settings.data_capture == S3Location(BUCKET, "datacapture")
    assert settings.monitoring_schedule_name is None
    assert settings.retraining_state_machine_arn is None
    assert not settings.retraining_configured
    assert settings.retraining_cooldown == timedelta(hours=24)


def test_every_problem_is_reported_by_name() -> None:
    env = monitor_env(
        CONFIDENCE_THRESHOLD="high",
        LABELS="bicycle",
        MONITOR_WINDOW_MINUTES="0",
        DRIFT_ALERT_THRESHOLD="1.5",
        DRIFT_ALERT_SIGNIFICANCE="-0.1",
        DATA_CAPTURE_S3_URI="bucket/prefix",
        RETRAINING_STATE_MACHINE_ARN="my-state-machine",
        RETRAINING_JOB_CONFIG_S3_URI=f"s3://{BUCKET}/configs/",
        RETRAINING_COOLDOWN_HOURS="nan",
        MONITOR_SETTLE_MINUTES="-5",
        MODEL_MONITOR_LAG_MINUTES="an hour",
        DATA_CAPTURE_SAMPLING_PERCENTAGE="150",
    )
    del env["RESULTS_TABLE_NAME"]
    with pytest.raises(SettingsError) as caught:
        MonitorSettings.from_env(env)
    message = str(caught.value)
    for name in (
        "RESULTS_TABLE_NAME is missing",
        "CONFIDENCE_THRESHOLD='high'",
        "LABELS='bicycle'",
        "MONITOR_WINDOW_MINUTES='0'",
        "DRIFT_ALERT_THRESHOLD='1.5'",
        "DRIFT_ALERT_SIGNIFICANCE='-0.1'",
        "DATA_CAPTURE_S3_URI='bucket/prefix'",
        "RETRAINING_STATE_MACHINE_ARN='my-state-machine'",
        "RETRAINING_JOB_CONFIG_S3_URI=",
        "RETRAINING_COOLDOWN_HOURS='nan'",
        "MONITOR_SETTLE_MINUTES='-5'",
        "MODEL_MONITOR_LAG_MINUTES='an hour'",
        "DATA_CAPTURE_SAMPLING_PERCENTAGE='150'",
    ):
        assert name in message


@pytest.mark.parametrize("hours", ["1e12", "8761"])
def test_a_cooldown_past_a_year_is_named_not_an_overflow(hours: str) -> None:
    """timedelta overflows past about 2.7e9 years; the bound comes first, as in the template."""
    with pytest.raises(SettingsError, match=f"RETRAINING_COOLDOWN_HOURS='{hours}' is invalid"):
        MonitorSettings.from_env(monitor_env(RETRAINING_COOLDOWN_HOURS=hours))
    parameter = load_template()["Parameters"]["RetrainingCooldownHours"]
    assert parameter["MaxValue"] == MAX_COOLDOWN_HOURS


def test_optional_targets_are_parsed() -> None:
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:retrain"
    settings = MonitorSettings.from_env(
        monitor_env(
            RETRAINING_STATE_MACHINE_ARN=arn,
            RETRAINING_JOB_CONFIG_S3_URI=f"s3://{BUCKET}/configs/train.json",
            MONITORING_SCHEDULE_NAME="scones-data-quality",
        )
    )
    assert settings.retraining_state_machine_arn == arn
    assert settings.retraining_job_config == S3Location(BUCKET, "configs/train.json")
    assert settings.monitoring_schedule_name == "scones-data-quality"
    assert settings.retraining_configured


class _RecordingEnv(dict):
    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_the_declared_variables_are_the_ones_read() -> None:
    env = _RecordingEnv(monitor_env())
    MonitorSettings.from_env(env)
    assert env.read == set(ENVIRONMENT_VARIABLES)


def test_template_sets_every_variable_the_monitor_reads() -> None:
    template = load_template()
    function = template["Resources"]["MonitorFunction"]["Properties"]
    variables = set(function["Environment"]["Variables"])
    variables |= set(template["Globals"]["Function"]["Environment"]["Variables"])
    missing = sorted(set(ENVIRONMENT_VARIABLES) - variables)
    assert not missing, f"template.yaml's MonitorFunction does not set {missing}"
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"} <= variables


def test_model_monitor_is_read_only_after_its_executions_can_have_ended() -> None:
    """The default lag covers Model Monitor's start buffer (up to 20 minutes after the
    hour) and the template's own job's MaxRuntimeInSeconds."""
    template = load_template()
    job = template["Resources"]["DataQualityJobDefinition"]["Properties"]
    runtime_minutes = int(job["StoppingCondition"]["MaxRuntimeInSeconds"]) / 60
    lag = int(template["Parameters"]["ModelMonitorLagMinutes"]["Default"])
    assert lag >= 20 + runtime_minutes
    settle = int(template["Parameters"]["MonitorSettleMinutes"]["Default"])
    assert settle >= 5  # SageMaker's capture delivery "can require a couple of minutes"

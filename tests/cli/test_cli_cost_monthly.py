"""`scones cost` prints what the stack costs each month whatever the volume: the alarms and
the KMS key it creates, the custom metrics it publishes and the scheduled monitor."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from scones.costs.fixed import alarm_metrics, custom_metrics, fixed_monthly
from scones.costs.prices import price
from scones.offline.stack import StackOptions
from scones.template_params import (
    PROJECT_ROOT,
    load_template,
    parameter_defaults,
    service_name,
)

# The offline stack's functions' Powertools service, in its stack.
SERVICE = service_name(StackOptions().stack_name)

MEASURED = json.loads((PROJECT_ROOT / "docs" / "cost-measurements.json").read_text())


def lines(measured: dict, **overrides: str) -> dict[str, tuple[float, str]]:
    est = fixed_monthly(measured, overrides)
    return {entry.item: (entry.usd, entry.basis) for entry in est.lines}


def test_every_alarm_of_the_template_is_priced_per_metric_it_reads() -> None:
    template = load_template()
    alarms = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    counted = alarm_metrics(template, parameter_defaults())
    assert counted.keys() == alarms.keys()
    # AcceptedAccuracyAlarm divides two sums: CloudWatch bills both metrics it reads.
    assert counted["AcceptedAccuracyAlarm"] == 2
    assert counted["DeadLetterAlarm"] == 1
    usd, basis = lines(MEASURED)["CloudWatch alarms"]
    assert usd == pytest.approx(sum(counted.values()) * 0.10)
    assert basis == f"{len(alarms)} alarms reading {sum(counted.values())} metrics"


def test_an_alarm_whose_condition_is_false_is_not_priced() -> None:
    template = copy.deepcopy(load_template())
    template["Resources"]["DeadLetterAlarm"]["Condition"] = "ShouldCreateEndpoint"
    defaults = parameter_defaults()
    assert "DeadLetterAlarm" not in alarm_metrics(template, defaults)
    assert "DeadLetterAlarm" in alarm_metrics(template, defaults | {"CreateEndpoint": "true"})


def test_custom_metrics_are_the_ones_measured_and_the_monitor_runs_once_per_window() -> None:
    published = MEASURED["custom_metrics"]
    monitor, workflow = published["MonitorFunction"], published["StartWorkflowFunction"]
    # The monitor publishes LabelShare once per label of the stack's ModelLabels.
    assert sum("Label=" in m for m in monitor) == 2
    assert custom_metrics(monitor, "bicycle,motorcycle") == len(monitor)
    assert custom_metrics(monitor, "bicycle,motorcycle,scooter,car") == len(monitor) + 2
    assert f"SconesUnlimited/ImagesStarted{{service={SERVICE}}}" in workflow
    assert any(
        m.startswith("SconesUnlimited/LabelShare{") and "Label=motorcycle" in m for m in monitor
    )
    every = len(monitor) + len(workflow)
    hourly = lines(MEASURED)
    assert hourly["CloudWatch custom metrics"][0] == pytest.approx(every * 0.30)
    # CloudWatch pro-rates a metric by the hours it is sent in: a daily monitor sends its
    # metrics in 30 of the month's 730 hours; the workflow's are sent in every hour.
    daily = lines(MEASURED, MonitorWindowMinutes="1440")["CloudWatch custom metrics"]
    assert daily[0] == pytest.approx((len(monitor) * 30.4167 / 730 + len(workflow)) * 0.30, 1e-4)
    assert daily[1].startswith(f"the monitor's {len(monitor)} sent in 30 of 730 hours")
    assert hourly["KMS keys"] == (
        1.0,
        "AlertTopicKey (rotated yearly: each of the first two rotations adds $1 a month)",
    )

    every_minute = lines(MEASURED, MonitorWindowMinutes="1")
    usd, basis = every_minute["Monitor runs (Scheduler + Lambda + logs)"]
    assert basis.startswith("43,800 runs of ")
    assert usd == pytest.approx(60 * hourly["Monitor runs (Scheduler + Lambda + logs)"][0])
    assert usd > 43_800 * price("lambda_request")


def test_the_report_prints_the_monthly_lines_apart_and_json_has_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scones.cli.main import main

    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    monthly = fixed_monthly(MEASURED)
    assert "Each month, whatever the volume (USD a month, before the free tier" in out
    assert f"{'total':<42}{monthly.total:>8.2f}" in out
    assert main(["cost", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    printed = report["fixed-monthly"]
    assert printed["total"] == pytest.approx(monthly.total)
    assert printed["unit"] == "USD a month, whatever the volume"
    assert report["express"]["unit"] == "USD per million images"
    assert not any(line["counts_toward_target"] for line in printed["lines"])
    assert {line["item"] for line in printed["lines"]} == {
        "CloudWatch alarms",
        "CloudWatch custom metrics",
        "KMS keys",
        "Monitor runs (Scheduler + Lambda + logs)",
    }


def test_model_monitor_is_named_as_not_priced_when_the_stack_runs_it() -> None:
    """Its hourly processing jobs are billed by the second they run, which nothing here
    measures: the line says so rather than adding nothing unnamed."""
    with_monitor = {
        "CreateEndpoint": "true",
        "EnableModelMonitor": "true",
        "ModelDataUrl": "s3://artifacts/model.tar.gz",
        "ModelImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
        "ModelMonitorImageUri": "156813124566.dkr.ecr.us-east-1.amazonaws.com/analyzer",
    }
    item = "Model Monitor (EnableModelMonitor): NOT PRICED"
    assert item not in lines(MEASURED)
    usd, basis = lines(MEASURED, **with_monitor)[item]
    assert usd == 0 and basis.startswith("730 hourly data-quality jobs on ml.m5.large,")
    _, basis = lines(MEASURED, **with_monitor, ModelMonitorInstanceType="ml.c5.xlarge")[item]
    assert basis.startswith("730 hourly data-quality jobs on ml.c5.xlarge,")


def test_measurements_without_the_monitor_or_the_metrics_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scones.cli.main import main

    older = {k: v for k, v in MEASURED.items() if k not in ("monitor", "custom_metrics")}
    path = tmp_path / "older.json"
    path.write_text(json.dumps(older))
    assert main(["cost", "--measurements", str(path)]) == 2
    error = capsys.readouterr().err
    assert "custom_metrics is None, not each function's list of metrics published" in error
    assert "monitor is missing (the monitor's measured run)" in error

    broken = copy.deepcopy(MEASURED)
    broken["monitor"]["log_bytes"] = -1
    path.write_text(json.dumps(broken))
    assert main(["cost", "--measurements", str(path)]) == 2
    assert "monitor.log_bytes is -1; a measurement is a number from 0 to" in capsys.readouterr().err

"""What the stack costs each month whatever the volume: alarms, custom metrics, the KMS
key and the scheduled monitor.

At a few thousand images a month these outweigh the per-image lines, so ``scones cost``
prints them apart. Alarms and keys are counted in the template under its conditions for
the parameters given; the custom metrics and the monitor's run are what ``scones bench
handlers`` measured (its ``custom_metrics`` and ``monitor``).
"""

from __future__ import annotations

from typing import Any

from scones.costs.measure import MONITOR_FUNCTION
from scones.costs.model import HOURS_PER_MONTH, Estimate, Settings, lambda_gb_second
from scones.costs.prices import price
from scones.template_params import condition_value, load_template, parameter_defaults


def _present(template: dict[str, Any], resource: dict[str, Any], params: dict[str, str]) -> bool:
    condition = resource.get("Condition")
    return condition is None or condition_value(template, condition, params)


def alarm_metrics(template: dict[str, Any], params: dict[str, str]) -> dict[str, int]:
    """Each alarm the stack creates with these parameters, and how many metrics it watches
    (CloudWatch bills an alarm per metric it evaluates; a metric-math alarm per metric)."""
    counted: dict[str, int] = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm" or not _present(template, resource, params):
            continue
        queries = resource["Properties"].get("Metrics")
        counted[name] = sum(1 for q in queries if "MetricStat" in q) if queries else 1
    return counted


def fixed_monthly(measured: dict[str, Any], overrides: dict[str, str] | None = None) -> Estimate:
    """The monthly lines (USD a month, not per million images)."""
    template = load_template()
    params = {**parameter_defaults(), **(overrides or {})}
    settings = Settings.from_template(overrides)
    est = Estimate("Each month, whatever the volume")

    alarms = alarm_metrics(template, params)
    est.add(
        "CloudWatch alarms",
        sum(alarms.values()) * price("cloudwatch_alarm_metric_month"),
        f"{len(alarms)} alarms reading {sum(alarms.values())} metrics",
    )
    metrics = measured.get("custom_metrics") or []
    est.add(
        "CloudWatch custom metrics",
        len(metrics) * price("cloudwatch_custom_metric_month"),
        f"{len(metrics)} published in a measured hour (more in hours with rejections, "
        "reviews or drift; billed per hour sent)",
    )
    keys = [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::KMS::Key" and _present(template, resource, params)
    ]
    est.add("KMS keys", len(keys) * price("kms_key_month"), ", ".join(keys) or "none")

    monitor = measured.get("monitor")
    window = int(params["MonitorWindowMinutes"])
    runs = HOURS_PER_MONTH * 60 / window
    if isinstance(monitor, dict):
        memory = settings.memory_mb[MONITOR_FUNCTION]
        ms = float(monitor["wall_ms"]["mean"])
        gb_s = ms / 1000 * memory / 1024
        logs_gb = float(monitor["log_bytes"]) / 1e9
        usd = runs * (
            price("lambda_request")
            + gb_s * lambda_gb_second(settings.architectures[MONITOR_FUNCTION])
            + logs_gb * price("logs_ingest_gb")
        )
        est.add(
            "Monitor runs (Scheduler + Lambda + logs)",
            usd,
            f"{runs:,.0f} runs of {ms:.0f} ms x {memory} MB (measured offline); the "
            "Scheduler's first 14 million invocations a month are free",
        )
    return est

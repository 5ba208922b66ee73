"""What the stack costs each month whatever the volume: alarms, custom metrics, the KMS
key and the scheduled monitor.

At a few thousand images a month these outweigh the per-image lines, so ``scones cost``
prints them apart. Alarms and keys are counted in the template under its conditions for
the parameters given; the custom metrics and the monitor's run are what ``scones bench
handlers`` measured (its ``custom_metrics`` and ``monitor``).
"""

from __future__ import annotations

from typing import Any

from scones_core.settings import parse_labels

from scones.costs.measure import MONITOR_FUNCTION
from scones.costs.model import HOURS_PER_MONTH, Estimate, Settings, lambda_gb_second
from scones.costs.prices import PRICES, price
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
        target=False,
    )
    window = int(params["MonitorWindowMinutes"])
    runs = HOURS_PER_MONTH * 60 / window
    # CloudWatch pro-rates a metric by the hours it is sent in: the monitor's once a run,
    # the workflow's in every hour with uploads (every hour at a million a month).
    monitor_hours = min(float(HOURS_PER_MONTH), runs)
    published = measured.get("custom_metrics") or {}
    monitor = custom_metrics(published.get(MONITOR_FUNCTION, []), params["ModelLabels"])
    workflow = sum(
        custom_metrics(found, params["ModelLabels"])
        for name, found in published.items()
        if name != MONITOR_FUNCTION
    )
    est.add(
        "CloudWatch custom metrics",
        (monitor * monitor_hours / HOURS_PER_MONTH + workflow)
        * price("cloudwatch_custom_metric_month"),
        f"the monitor's {monitor} sent in {monitor_hours:,.0f} of {HOURS_PER_MONTH} hours, the "
        f"workflow's {workflow} in every hour with uploads (measured; one per label where a "
        "metric has a Label; more in hours with rejections, reviews or drift)",
        target=False,
    )
    keys = [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::KMS::Key" and _present(template, resource, params)
    ]
    est.add(
        "KMS keys",
        len(keys) * price("kms_key_month"),
        (", ".join(keys) or "none")
        + " (rotated yearly: each of the first two rotations adds $1 a month)",
        target=False,
    )

    run = measured.get("monitor")
    if isinstance(run, dict):
        memory = settings.memory_mb[MONITOR_FUNCTION]
        ms = float(run["wall_ms"]["mean"])
        gb_s = ms / 1000 * memory / 1024
        logs_gb = float(run["log_bytes"]) / 1e9
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
            target=False,
        )
    if condition_value(template, "ShouldCreateModelMonitor", params):
        est.add(
            "Model Monitor (EnableModelMonitor): NOT PRICED",
            0.0,
            f"{HOURS_PER_MONTH} hourly data-quality jobs on {params['ModelMonitorInstanceType']}, "
            "each billed per "
            "second it runs (not measured here: see the Processing table of "
            f"{PRICES['sagemaker_ml_m5_large_hour'].source})",
            target=False,
        )
    return est


def custom_metrics(measured: list[str], model_labels: str) -> int:
    """How many custom metrics a month's hours publish: those measured (each named with its
    dimensions' values, as CloudWatch counts them), with a metric that has a ``Label``
    dimension counted once per label of ``model_labels`` (the monitor's ``LabelShare``),
    whatever labels the measured stack had."""
    labels = parse_labels(model_labels)
    per_label: set[str] = set()
    plain = 0
    for metric in measured:
        name, _, dimensions = metric.partition("{")
        every = dimensions.rstrip("}").split(",")
        kept = [d for d in every if not d.startswith("Label=")]
        if len(kept) < len(every):
            per_label.add(f"{name}{{{','.join(kept)}}}")
        else:
            plain += 1
    return plain + len(per_label) * len(labels)

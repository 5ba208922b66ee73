"""``scones cost``: what a million images cost on AWS, line by line.

Reads the template's settings (WorkflowType, each function's MemorySize and architecture,
TracingMode, LogLevel, UploadRetentionDays, DataCaptureSamplingPercentage), walks the real
ASL for the states one image goes through, and takes each function's duration, log bytes and
the record's size from ``scones bench handlers`` (its JSON; one measured run is shipped in
docs/cost-measurements.json). Prices: ``scones.costs.prices`` (us-east-1, dated, with sources).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from scones_core.json_text import NotJSON, load_json

from scones.cli.arguments import file_or_folder, positive_int
from scones.cli.errors import CommandError
from scones.costs.measure import FUNCTIONS
from scones.costs.prices import REALTIME_INSTANCE_PRICES
from scones.template_params import PROJECT_ROOT

DEFAULT_MEASUREMENTS = PROJECT_ROOT / "docs" / "cost-measurements.json"
MEMORY_SIZES = (128, 256, 512, 1024, 1769, 3008)
PER_MILLION = "USD per million images"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cost", help="cost per million images on AWS, per line item", description=__doc__
    )
    parser.add_argument(
        "--measurements",
        type=file_or_folder,
        default=DEFAULT_MEASUREMENTS,
        help="handler numbers measured by `scones bench handlers`",
    )
    parser.add_argument(
        "--kind",
        choices=("photo", "small"),
        default="photo",
        help="uploads: 4000x3000 camera JPEGs (default) or 32x32 PNGs",
    )
    parser.add_argument(
        "--images-per-month",
        type=positive_int,
        default=1_000_000,
        help="spreads the real-time endpoint's monthly instance cost (default 1,000,000)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter, or <Function>.MemorySize=MB",
    )
    parser.add_argument(
        "--sweep-memory", action="store_true", help="Lambda memory sweep (a table: not with --json)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_run)


# Lambda's own bounds for MemorySize.
LAMBDA_MEMORY_MB = (128, 10240)


def _measurements(path: Path, kind: str) -> dict[str, Any]:
    """``scones bench handlers``' file, with the numbers for ``kind`` uploads."""
    try:
        measured = load_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise CommandError(f"{exc}; run `scones bench handlers` first") from exc
    except OSError as exc:
        raise CommandError(f"--measurements {path}: cannot be read: {exc}") from exc
    except NotJSON as exc:
        raise CommandError(f"{path} is {exc}") from exc
    kinds = measured.get("kinds") if isinstance(measured, dict) else None
    if not isinstance(kinds, dict) or not isinstance(kinds.get(kind), dict):
        raise CommandError(
            f"{path} has no measurements of {kind} uploads; run `scones bench handlers` to "
            "write them"
        )
    problems = _measurement_problems(kinds[kind]) + _monthly_problems(measured)
    measured_on = measured.get("measured_on")
    if not isinstance(measured_on, str) or not measured_on.strip():
        problems.insert(0, f"measured_on is {measured_on!r}, not the date it was measured")
    if problems:
        raise CommandError(
            f"{path}'s {kind} measurements are not what `scones bench handlers` writes: "
            + "; ".join(problems)
        )
    return dict(measured)


# What the cost model reads of each function's measurements (and of one function's only).
_FUNCTION_FIELDS = ("invocations", "cpu_ms_mean", "peak_rss_mb", "log_bytes")
_ONE_FUNCTIONS_FIELDS = {"ClassifyImageFunction": ("request_bytes_max",)}
# No measurement of a request comes near it (a terabyte, or 30 years in milliseconds); a
# larger number is a typing error that would overflow the arithmetic it goes through.
_LARGEST_MEASUREMENT = 1e12


def _not_a_measurement(where: str, value: Any) -> list[str]:
    """A number a measurement cannot be (not a number, negative, NaN, infinite, or past
    ``_LARGEST_MEASUREMENT``), named."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{where} is {value!r}, not a number"]
    if not math.isfinite(value) or not 0 <= value <= _LARGEST_MEASUREMENT:
        return [
            f"{where} is {value!r}; a measurement is a number from 0 to {_LARGEST_MEASUREMENT:g}"
        ]
    return []


def _measurement_problems(data: dict[str, Any]) -> list[str]:
    """Missing fields, and numbers a measurement cannot be (negative, NaN, infinite)."""
    problems: list[str] = []

    def number(where: str, value: Any) -> None:
        problems.extend(_not_a_measurement(where, value))

    number("upload_bytes_mean", data.get("upload_bytes_mean"))
    item = data.get("record_item_bytes")
    if not isinstance(item, dict):
        problems.append("record_item_bytes is missing")
    elif "max" in item:
        number("record_item_bytes.max", item["max"])
    functions = data.get("functions")
    if not isinstance(functions, dict):
        return [*problems, "functions is missing"]
    # The functions every estimate needs; any other one in the file is checked too (the
    # memory sweep prints every function measured).
    for name in dict.fromkeys([*FUNCTIONS, *functions]):
        fn = functions.get(name)
        if not isinstance(fn, dict):
            problems.append(
                f"functions.{name} is missing"
                if fn is None
                else f"functions.{name} is {fn!r}, not a function's measurements"
            )
            continue
        for field in (*_FUNCTION_FIELDS, *_ONE_FUNCTIONS_FIELDS.get(name, ())):
            number(f"functions.{name}.{field}", fn.get(field))
        if fn.get("invocations") == 0:
            problems.append(f"functions.{name}.invocations is 0: nothing was measured")
        wall = fn.get("wall_ms")
        if not isinstance(wall, dict):
            problems.append(f"functions.{name}.wall_ms is {wall!r}, not a summary of timings")
        else:
            number(f"functions.{name}.wall_ms.mean", wall.get("mean"))
        if fn.get("messages_per_invocation") is not None:  # None: one message each
            number(f"functions.{name}.messages_per_invocation", fn["messages_per_invocation"])
    return problems


def _monthly_problems(measured: dict[str, Any]) -> list[str]:
    """What the monthly lines read: the custom metrics published and the monitor's run."""
    problems: list[str] = []
    metrics = measured.get("custom_metrics")
    if not isinstance(metrics, dict) or not all(
        isinstance(found, list) and all(isinstance(m, str) for m in found)
        for found in metrics.values()
    ):
        problems.append(
            f"custom_metrics is {metrics!r}, not each function's list of metrics published"
        )
    monitor = measured.get("monitor")
    wall = monitor.get("wall_ms") if isinstance(monitor, dict) else None
    if not isinstance(monitor, dict) or not isinstance(wall, dict):
        problems.append("monitor is missing (the monitor's measured run)")
    else:
        problems += _not_a_measurement("monitor.wall_ms.mean", wall.get("mean"))
        problems += _not_a_measurement("monitor.log_bytes", monitor.get("log_bytes"))
    return problems


def _overrides(pairs: list[str]) -> dict[str, str]:
    """``--param`` values: template parameters (on top of the template's defaults) checked
    by ``stack_state.parse_params``, and ``<Function>.MemorySize=MB`` for a function of the
    template, within Lambda's bounds."""
    from scones.cli.stack_state import parse_params
    from scones.template_params import template_functions

    functions = set(template_functions())
    memory: dict[str, str] = {}
    problems: list[str] = []
    parameters: list[str] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not (sep and name.endswith(".MemorySize")):
            parameters.append(pair)
            continue
        function = name.removesuffix(".MemorySize")
        low, high = LAMBDA_MEMORY_MB
        if function not in functions:
            problems.append(f"{name}: {function!r} is not a function of the template")
        elif not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            problems.append(f"{name}={value!r}: Lambda's MemorySize is {low} to {high} MB")
        else:
            memory[name] = value
    overrides = parse_params(parameters, defaults={}, problems=problems) | memory
    instance = overrides.get("EndpointInstanceType")
    if instance is not None and instance not in REALTIME_INSTANCE_PRICES:
        raise CommandError(
            f"--param EndpointInstanceType={instance}: no price for it in scones.costs.prices "
            f"(priced: {', '.join(REALTIME_INSTANCE_PRICES)}); add its list price there"
        )
    return overrides


def _run(args: argparse.Namespace) -> int:
    if args.json and args.sweep_memory:  # the JSON document would leave the sweep out
        raise CommandError("--sweep-memory prints a table, which --json has no place for: drop one")
    from scones.costs import prices
    from scones.costs.fixed import fixed_monthly
    from scones.costs.model import Settings, estimate, original_project
    from scones.costs.workflow import (
        EXPRESS_LIMIT_SECONDS,
        backfill_batch_seconds,
        load_workflow,
        worst_case_seconds,
    )

    measured = _measurements(args.measurements, args.kind)
    overrides = _overrides(args.param)
    common: dict[str, Any] = {
        "kind": args.kind,
        "overrides": overrides,
        "images_per_month": args.images_per_month,
    }
    columns = {
        "original": original_project(measured, args.kind),
        "standard": estimate(measured, workflow_type="STANDARD", **common),
        "express": estimate(measured, workflow_type="EXPRESS", **common),
    }
    endpoints = {
        (wf, ep): estimate(measured, workflow_type=wf, endpoint=ep, **common)
        for wf in ("STANDARD", "EXPRESS")
        for ep in ("realtime", "serverless")
    }
    monthly = fixed_monthly(measured, overrides)
    worst, path = worst_case_seconds(load_workflow(overrides))
    settings = Settings.from_template(overrides)
    if args.json:
        print(
            json.dumps(
                {
                    name: {
                        "unit": unit,
                        "lines": [vars(line) for line in est.lines],
                        "total": est.total,
                    }
                    for name, (est, unit) in {
                        **{k: (v, PER_MILLION) for k, v in columns.items()},
                        **{f"{w}-{e}": (v, PER_MILLION) for (w, e), v in endpoints.items()},
                        "fixed-monthly": (monthly, "USD a month, whatever the volume"),
                    }.items()
                },
                indent=2,
            )
        )
        return 0
    print(
        f"Cost per million images, us-east-1 list prices read {prices.READ_ON} "
        f"(scones.costs.prices); {args.kind} uploads;"
    )
    print(
        f"measured {measured['measured_on']} with `scones bench handlers` "
        f"({args.measurements.name})."
    )
    print()
    _print_columns(columns)
    print()
    print("With an endpoint (not in the $3 target):")
    header = f"{'':<36}{'Standard':>12}{'Express':>12}"
    print(header)
    for ep, label in (
        ("realtime", f"real-time {settings.instance_type}, {settings.instance_count} instance(s)"),
        # Not this stack as it stands: Serverless Inference has no data capture (the
        # monitor reads none) and no second variant (no retraining canary).
        ("serverless", "serverless 1 GB, no capture/canary"),
    ):
        std, exp = endpoints[("STANDARD", ep)], endpoints[("EXPRESS", ep)]
        print(f"{label:<36}{std.total:>12.2f}{exp.total:>12.2f}")
    print()
    _print_monthly(monthly)
    print()
    print(
        f"Slowest path that still records: {worst:.0f} s "
        f"(Express limit {EXPRESS_LIMIT_SECONDS} s): " + " > ".join(path)
    )
    batch = backfill_batch_seconds(overrides)
    print(
        f"Slowest backfill batch (a child of the stack's WorkflowType): {batch:.0f} s, every "
        "retry of the backfill function to its timeout"
    )
    if args.sweep_memory:
        print()
        _print_sweep(measured, args.kind, overrides)
    return 0


def _print_columns(columns: dict[str, Any]) -> None:
    items: list[str] = []
    for est in columns.values():
        for line in est.lines:
            if line.item not in items:
                items.append(line.item)
    width = max(len(i) for i in items) + 2
    names = {"original": "original", "standard": "Standard", "express": "Express"}
    print(
        f"{'line item':<{width}}"
        + "".join(f"{names[n]:>11}" for n in columns)
        + "   basis (Express)"
    )
    express = {line.item: line for line in columns["express"].lines}
    for item in items:
        row = f"{item:<{width}}"
        for est in columns.values():
            value = next((line.usd for line in est.lines if line.item == item), None)
            row += f"{'-':>11}" if value is None else f"{value:>11.2f}"
        line = express.get(item)
        star = " *" if line and not line.counts_toward_target else ""
        print(row + f"   {line.basis if line else ''}{star}")
    print(f"{'total':<{width}}" + "".join(f"{est.total:>11.2f}" for est in columns.values()))
    print(
        f"{'total without * ($3 target)':<{width}}"
        + "".join(f"{est.target_total:>11.2f}" for est in columns.values())
    )
    print(
        "* not in the $3 target: the uploader's PUT, and storage, which is per month kept "
        "(UploadRetentionDays, how long records are kept), not per image processed"
    )


def _print_monthly(monthly: Any) -> None:
    """The lines that do not grow with the images: what a quiet month still costs."""
    print(f"{monthly.title} (USD a month, before the free tier; not in the table above):")
    width = max(len(line.item) for line in monthly.lines) + 2
    for line in monthly.lines:
        print(f"{line.item:<{width}}{line.usd:>8.2f}   {line.basis}")
    unpriced = any("NOT PRICED" in line.item for line in monthly.lines)
    total = "total, without what is not priced" if unpriced else "total"
    print(f"{total:<{width}}{monthly.total:>8.2f}")


def _print_sweep(measured: dict[str, Any], kind: str, overrides: dict[str, str]) -> None:
    from scones.costs.model import (
        aws_wait_ms,
        lambda_gb_second,
        modelled_duration_ms,
        start_function_run_wait_ms,
    )
    from scones.costs.prices import price

    print(
        "Lambda memory sweep (modelled: CPU time scales with the CPU share, one vCPU at "
        "1,769 MB; the rest does not). USD per million invocations, arm64:"
    )
    print(f"{'function':<24}{'peak RSS':>9}" + "".join(f"{m:>10}" for m in MEMORY_SIZES))
    upload = float(measured["kinds"][kind]["upload_bytes_mean"])
    # Under Express the start function waits for each batch's execution.
    run_ms = start_function_run_wait_ms(measured, kind, overrides)
    for name, fn in measured["kinds"][kind]["functions"].items():
        cells = ""
        for memory in MEMORY_SIZES:
            ms = modelled_duration_ms(fn, memory, aws_wait_ms(name, upload, run_ms))
            usd = 1e6 * (
                price("lambda_request") + ms / 1000 * memory / 1024 * lambda_gb_second("arm64")
            )
            fits = memory >= fn["peak_rss_mb"] * 1.25
            cells += f"{usd:>6.2f}/{ms:<3.0f}" if fits else f"{'(OOM)':>10}"
        print(f"{name.removesuffix('Function'):<24}{fn['peak_rss_mb']:>8.0f}M{cells}")
    print("each cell: $/M invocations / ms; (OOM): below 1.25 x the measured peak RSS")
    _print_decode_limits(overrides)


def _print_decode_limits(overrides: dict[str, str]) -> None:
    """What SerializeImage's memory decides besides its price: the largest upload it
    decodes (larger ones are REJECTED before decoding, ``image_rules.decode_bytes``), up to
    the MaxImagePixels of ``overrides`` or the template's."""
    from scones_core.heif_structure import HeifLayout, decode_work
    from scones_core.image_rules import (
        FUNCTION_RESERVE_MB,
        decode_bytes,
        heic_coded_pixel_limit,
    )

    from scones.template_params import parameter_default

    limit = int(overrides.get("MaxImagePixels") or parameter_default("MaxImagePixels"))
    print(
        "SerializeImage: the largest image each size decodes, in megapixels (larger ones are "
        f"REJECTED before decoding; MaxImagePixels is {limit / 1e6:g} MP):"
    )
    print(f"{'image':<24}{'':>9}" + "".join(f"{m:>10}" for m in MEMORY_SIZES))
    million = (1000, 1000)

    def phone_heic(ten_bit: bool) -> HeifLayout:
        """A megapixel of a phone's HEIC (4:2:0 tiles; the last tiles' margin left out)."""
        per_pixel = 3.0 if ten_bit else 1.5
        planes, work = int(per_pixel * 10**6), int(decode_work(10**6, per_pixel, ten_bit))
        return HeifLayout(
            *million,
            tiles=1,
            coded_pixels=10**6,
            plane_bytes=planes,
            decode_work=work,
            high_bit_depth=ten_bit,
        )

    eight, ten = phone_heic(False), phone_heic(True)
    # (label, bytes a megapixel's decode takes, how long a coded pixel takes to decode in
    # a phone's 8-bit 4:2:0 pixels: a HEIC's largest is also capped by its decode time).
    rows: tuple[tuple[str, int, float | None], ...] = (
        ("WebP", decode_bytes("WEBP", "RGBA", million), None),
        (
            "HEIC (a phone's, 8-bit)",
            decode_bytes("HEIC", "RGB", million, heif=eight),
            eight.decode_work / eight.coded_pixels,
        ),
        (
            "HEIC (10-bit, HDR)",
            decode_bytes("HEIC", "RGB", million, heif=ten),
            ten.decode_work / ten.coded_pixels,
        ),
        # Its draft decodes an eighth, but libjpeg keeps every full-size DCT coefficient.
        ("JPEG (progressive)", decode_bytes("JPEG", "RGB", (125, 125), million), None),
        ("PNG, TIFF, BMP (RGBA)", decode_bytes("PNG", "RGBA", million), None),
    )
    for label, per_million, work in rows:
        cells = ""
        for memory in MEMORY_SIZES:
            largest = (memory - FUNCTION_RESERVE_MB) * 2**20 * 10**6 // per_million
            if work is not None:
                largest = min(largest, int(heic_coded_pixel_limit(memory) / work))
            cells += f"{'all':>10}" if largest >= limit else f"{largest / 1e6:>10.1f}"
        print(f"{label:<24}{'':>9}{cells}")

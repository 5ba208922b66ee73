"""Measure what the cost model needs, on the offline stack (``scones bench handlers``).

Images go through the real template, ASL and handlers (``scones.offline``). For every
function this records each invocation's wall time (the Invoke call, as Lambda would bill
it, plus a pipe round trip of well under a millisecond), the CPU time its worker spent
(``/proc/<pid>/stat``), its peak resident memory (``VmHWM``) and the bytes it logged.
The stack runs one worker per function so that every number belongs to one warm
environment; a warm-up pass is not counted. Records give the DynamoDB item sizes.
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scones.template_params import PROJECT_ROOT, parameter_defaults, template_functions

DEFAULT_IMAGES = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
FUNCTIONS = ("StartWorkflowFunction", "SerializeImageFunction", "ClassifyImageFunction")
MONITOR_FUNCTION = "MonitorFunction"
_TICKS = os.sysconf("SC_CLK_TCK")


def photo_jpeg(seed: int, size: tuple[int, int] = (4000, 3000), quality: int = 90) -> bytes:
    """A camera-sized JPEG: smooth shapes plus sensor-like noise (a few MB, like a phone's)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    small = Image.new("RGB", (size[0] // 8, size[1] // 8), (rng.randrange(256), 90, 140))
    draw = ImageDraw.Draw(small)
    for _ in range(40):
        x, y = rng.randrange(small.width), rng.randrange(small.height)
        r = rng.randrange(10, 120)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = small.resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise(size, 24).convert("RGB")
    image = Image.blend(image, noise, 0.12)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@dataclass
class _Calls:
    wall_ms: list[float] = field(default_factory=list)
    request_bytes: list[int] = field(default_factory=list)
    response_bytes: list[int] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)


def _workers() -> dict[str, list[int]]:
    """Lambda worker processes of this process, by function name."""
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != me:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
                found.setdefault(item.split(b"=", 1)[1].decode(), []).append(int(entry.name))
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings in UTF-8, numbers about
    one byte per two digits plus one, maps 3 bytes plus their elements)."""

    def size(value: dict[str, Any]) -> int:
        (kind, inner), *_ = value.items()
        if kind == "S":
            return len(str(inner).encode())
        if kind == "N":
            digits = len(str(inner).replace("-", "").replace(".", "").lstrip("0")) or 1
            return (digits + 1) // 2 + 1
        if kind == "M":
            return 3 + sum(len(k.encode()) + 1 + size(v) for k, v in inner.items())
        if kind in {"BOOL", "NULL"}:
            return 1
        return len(json.dumps(inner))

    return sum(len(name.encode()) + size(value) for name, value in item.items())


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "mean": round(statistics.fmean(values), 3),
        "p50": round(ordered[len(ordered) // 2], 3),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "max": round(ordered[-1], 3),
    }


def run_measurement(  # noqa: PLR0915 (one pass per kind of upload)
    small: int = 40, photos: int = 24, overrides: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``small`` CIFAR PNGs and ``photos`` 4000x3000 JPEGs, one kind after the other."""
    from scones.offline import lambda_runtime
    from scones.offline.stack import OfflineStack, StackOptions

    images = sorted(DEFAULT_IMAGES.glob("*/*.png"))
    if len(images) < small + 4:
        raise FileNotFoundError(f"need {small + 4} PNGs under {DEFAULT_IMAGES}")
    calls: dict[str, _Calls] = {}
    original = lambda_runtime.LambdaRuntime.invoke

    def timed(self: Any, function: Any, event: Any) -> tuple[str, bool, str]:
        started = time.perf_counter()
        result = original(self, function, event)
        elapsed = (time.perf_counter() - started) * 1000
        record = calls.setdefault(function.function_name, _Calls())
        record.wall_ms.append(elapsed)
        record.request_bytes.append(len(json.dumps(event)))
        record.response_bytes.append(len(result[0]))
        if isinstance(event, dict) and isinstance(event.get("Records"), list):
            record.batch_sizes.append(len(event["Records"]))
        return result

    params = {**parameter_defaults(), **(overrides or {})}
    # Logs that never rotate: a function's bytes are its log file's growth over a pass, and
    # its metrics are read from that file (a rotation would leave out what it moved away).
    options = StackOptions(
        workers_per_function=1,
        overrides=dict(overrides or {}),
        function_log_max_bytes=sys.maxsize,
    )
    lambda_runtime.LambdaRuntime.invoke = timed  # type: ignore[method-assign]
    try:
        with OfflineStack(options) as stack:
            names = {stack.function_name(f): f for f in FUNCTIONS}
            api = stack.api()
            warm = api.upload_files(images[:4], key_prefix="warmup/")
            api.wait_for_records(warm, timeout=120)
            photo_data = [photo_jpeg(seed) for seed in range(photos)]
            kinds: dict[str, Any] = {}
            for kind, count in (("small", small), ("photo", photos)):
                calls.clear()
                logs = {n: _log_size(stack.work_dir, n) for n in names}
                cpu = {n: sum(_cpu_seconds(p) for p in ps) for n, ps in _workers().items()}
                if kind == "small":
                    uploads = api.upload_files(images[4 : 4 + count], key_prefix=f"{kind}/")
                    upload_sizes = [p.stat().st_size for p in images[4 : 4 + count]]
                else:
                    uploads = [
                        api.upload_bytes(f"{kind}/camera-{i}.jpg", data, "image/jpeg")
                        for i, data in enumerate(photo_data)
                    ]
                    upload_sizes = [len(d) for d in photo_data]
                records = api.wait_for_records(uploads, timeout=600)
                workers = _workers()
                functions = {
                    logical_id: _function_numbers(
                        calls.get(name, _Calls()),
                        workers.get(name, []),
                        cpu.get(name, 0.0),
                        _log_size(stack.work_dir, name) - logs[name],
                    )
                    for name, logical_id in names.items()
                }
                table = stack.client("dynamodb").scan(TableName=stack.table_name)["Items"]
                ids = {r["pk"] for r in records.values()}
                sizes = [item_bytes(i) for i in table if i["pk"]["S"] in ids]
                kinds[kind] = {
                    "images": count,
                    "upload_bytes_mean": round(statistics.fmean(upload_sizes)),
                    "statuses": sorted({r["status"] for r in records.values()}),
                    "record_item_bytes": _summary([float(s) for s in sizes]),
                    "functions": functions,
                }
            # One scheduled monitor run over the window the uploads fell in: its duration
            # prices the schedule, and its metrics join the workflow's in the count of
            # custom metrics (both are fixed monthly costs, ``scones.costs.fixed``).
            monitor_name = stack.function_name(MONITOR_FUNCTION)
            calls.clear()
            before = _log_size(stack.work_dir, monitor_name)
            cpu_before = sum(_cpu_seconds(p) for p in _workers().get(monitor_name, []))
            api.invoke_monitor()
            monitor = _function_numbers(
                calls.get(monitor_name, _Calls()),
                _workers().get(monitor_name, []),
                cpu_before,
                _log_size(stack.work_dir, monitor_name) - before,
            )
            # Each function's metrics: the monitor's are sent once a run, the others while
            # images arrive (``scones.costs.fixed`` pro-rates them apart).
            paths = {
                f: _log_path(stack.work_dir, stack.function_name(f)) for f in template_functions()
            }
            metrics = {
                logical_id: sorted(found)
                for logical_id, path in paths.items()
                if (found := emf_metrics(path))
            }
    finally:
        lambda_runtime.LambdaRuntime.invoke = original  # type: ignore[method-assign]
    return {
        "measured_on": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "how": (
            "offline stack, one warm worker per function; wall_ms is each Invoke as Lambda "
            "bills it; cpu_ms_mean is the worker's user+system CPU per invocation; log_bytes "
            "is everything the function wrote (Powertools JSON logs, EMF metrics, START/END)"
        ),
        "log_level": params["LogLevel"],
        "kinds": kinds,
        "monitor": {"window_minutes": int(params["MonitorWindowMinutes"]), **monitor},
        "custom_metrics": metrics,
    }


def _function_numbers(
    record: _Calls, pids: list[int], cpu_before: float, log_bytes: int
) -> dict[str, Any]:
    """One function's numbers for a pass: its invocations, CPU, peak memory and logs."""
    from scones.offline import lambda_runtime

    spent = sum(_cpu_seconds(p) for p in pids) - cpu_before
    invocations = max(1, len(record.wall_ms))
    peak = max((lambda_runtime.peak_rss_mb(p) for p in pids), default=0)
    return {
        "invocations": len(record.wall_ms),
        "wall_ms": _summary(record.wall_ms),
        "cpu_ms_mean": round(spent * 1000 / invocations, 3),
        "peak_rss_mb": round(peak, 1),
        "log_bytes": log_bytes,
        "request_bytes_max": max(record.request_bytes, default=0),
        "response_bytes_max": max(record.response_bytes, default=0),
        "messages_per_invocation": (
            round(statistics.fmean(record.batch_sizes), 3) if record.batch_sizes else None
        ),
    }


def emf_metrics(log: Path) -> set[str]:
    """The CloudWatch metrics a function's log published through the embedded metric
    format, one string per metric as CloudWatch counts (and bills) them: namespace, name
    and every dimension's value, e.g. ``SconesUnlimited/LabelShare{Label=bicycle,...}``."""
    found: set[str] = set()
    if not log.exists():
        return found
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"_aws"' not in line or not line.lstrip().startswith("{"):
                continue
            try:
                document = json.loads(line)
                directives = document["_aws"]["CloudWatchMetrics"]
            except (ValueError, KeyError, TypeError):
                continue
            for directive in directives:
                for dimension_set in directive.get("Dimensions", []):
                    dims = ",".join(f"{d}={document.get(d)}" for d in sorted(dimension_set))
                    for metric in directive.get("Metrics", []):
                        found.add(f"{directive.get('Namespace')}/{metric['Name']}{{{dims}}}")
    return found


def _log_path(work_dir: Path, function_name: str) -> Path:
    return work_dir / "logs" / f"{function_name}.log"


def _log_size(work_dir: Path, function_name: str) -> int:
    path = _log_path(work_dir, function_name)
    return path.stat().st_size if path.exists() else 0

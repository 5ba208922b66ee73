"""``scones bench handlers``: each function's duration, CPU, memory and log bytes per image
on the offline stack; writes the JSON that ``scones cost`` reads."""

from __future__ import annotations

import argparse
from typing import Any

from scones.cli.arguments import check_writable_file, output_file, positive_int
from scones.cli.errors import CommandFailed
from scones.safe_files import write_json_file
from scones.template_params import PROJECT_ROOT

DEFAULT_OUT = PROJECT_ROOT / "docs" / "cost-measurements.json"


def register(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "handlers",
        help="per-function duration, CPU, memory and log bytes per image (for `scones cost`)",
        description=__doc__,
    )
    parser.add_argument("--small", type=positive_int, default=40, help="CIFAR PNGs (32x32) to send")
    parser.add_argument("--photos", type=positive_int, default=24, help="4000x3000 JPEGs to send")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=output_file, default=DEFAULT_OUT, help="where to write")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from scones.cli.stack_state import parse_params

    # Checked as `sam deploy` would check them; the measured stack's own defaults apply.
    overrides = parse_params(args.param, defaults={})
    check_writable_file(args.json)
    from scones.costs.measure import run_measurement
    from scones.offline.deploy import DeployError
    from scones.offline.stack import StackError

    try:
        result = run_measurement(args.small, args.photos, overrides)
    except (StackError, DeployError) as exc:
        raise CommandFailed(str(exc)) from exc
    for kind, data in result["kinds"].items():
        print(f"{kind}: {data['images']} images, {data['upload_bytes_mean']} B each on average")
        for name, fn in data["functions"].items():
            wall = fn["wall_ms"]
            print(
                f"  {name:<24} n={fn['invocations']:<3} wall p50 {wall.get('p50', 0):8.1f} ms"
                f"  mean {wall.get('mean', 0):8.1f} ms  cpu {fn['cpu_ms_mean']:7.1f} ms"
                f"  peak RSS {fn['peak_rss_mb']:6.1f} MB  log {fn['log_bytes']} B"
            )
        print(f"  record item bytes: {data['record_item_bytes']}")
    monitor = result["monitor"]
    print(
        f"monitor: one run, wall {monitor['wall_ms'].get('mean', 0):.1f} ms, cpu "
        f"{monitor['cpu_ms_mean']:.1f} ms, peak RSS {monitor['peak_rss_mb']:.1f} MB, "
        f"log {monitor['log_bytes']} B; custom metrics published: "
        + ", ".join(f"{name} {len(found)}" for name, found in result["custom_metrics"].items())
    )
    write_json_file(args.json, result)
    print(f"wrote {args.json}")
    return 0

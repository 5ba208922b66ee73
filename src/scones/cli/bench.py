"""``scones bench``: benchmarks that print numbers.

``scones bench <name>`` runs one benchmark; ``scones bench`` alone runs them all
with their defaults. ``server`` is defined here. Any module
``scones.cli.bench_<name>`` that defines ``register(subparsers)`` (adding a
parser and ``set_defaults(handler=fn)``, like a top-level command) becomes
``scones bench <name>``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import scones.cli
from scones.cli.arguments import check_writable_file, file_or_folder, output_file, positive_int
from scones.cli.errors import CommandError
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR
from scones.safe_files import write_json_file

DEFAULT_IMAGES = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train"
PLUGIN_PREFIX = "bench_"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run benchmarks (all of them, or one by name)",
        description=(
            "Run one benchmark by name, or every benchmark with its defaults when no name is "
            "given. Each prints its numbers; docs/benchmarks.md records the results."
        ),
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    _register_server(benchmarks)
    for module_name in _plugin_modules():
        importlib.import_module(f"scones.cli.{module_name}").register(benchmarks)
    parser.set_defaults(handler=_run_all, bench_parsers=benchmarks.choices)


def _plugin_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(scones.cli.__path__)
        if info.name.startswith(PLUGIN_PREFIX)
    )


def _run_all(args: argparse.Namespace) -> int:
    status = 0
    for name, parser in args.bench_parsers.items():
        print(f"== scones bench {name}", flush=True)
        sub_args = parser.parse_args([])
        status = max(status, int(sub_args.handler(sub_args) or 0))
    return status


def _register_server(benchmarks: Any) -> None:
    parser = benchmarks.add_parser(
        "server",
        help="model server latency and throughput against bare onnxruntime",
        description=(
            "Start the model server as a separate process on a free loopback port and send the "
            "bundled PNGs through HTTP (httpx) and boto3's sagemaker-runtime client; "
            "classify the same images with onnxruntime in-process as the baseline."
        ),
    )
    parser.add_argument(
        "--requests", type=positive_int, default=400, help="requests per measured row"
    )
    parser.add_argument("--concurrency", type=positive_int, default=4, help="client threads")
    parser.add_argument(
        "--model", type=file_or_folder, default=SHIPPED_MODEL_DIR, help="artifact folder"
    )
    parser.add_argument(
        "--images",
        type=file_or_folder,
        default=DEFAULT_IMAGES,
        help="folder of <label>/*.png images",
    )
    parser.add_argument("--json", type=output_file, help="also write the results as JSON here")
    parser.set_defaults(handler=_run_server)


def _run_server(args: argparse.Namespace) -> int:
    from scones_core.errors import ImageRejected

    from scones.model.artifact import ModelArtifactError
    from scones.serving.bench import format_report, run_benchmark

    if args.requests < 1:
        raise CommandError(f"--requests must be at least 1, got {args.requests}")
    if not 1 <= args.concurrency <= 256:
        raise CommandError(f"--concurrency must be between 1 and 256, got {args.concurrency}")
    if args.json:
        check_writable_file(args.json)
    try:
        result = run_benchmark(args.model, args.images, args.requests, args.concurrency)
    except (ModelArtifactError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    except ImageRejected as exc:
        raise CommandError(f"--images {args.images}: {_unreadable(args.images, exc)}") from exc
    print(format_report(result), flush=True)
    if args.json:
        write_json_file(args.json, result)
    return 0


def _unreadable(images: Path, error: Exception) -> str:
    """Which of the benchmark's images the model could not read (``error`` does not say:
    the benchmark holds their bytes only), found by decoding them again one by one."""
    from scones_core.errors import ImageRejected

    from scones.model.artifact import decode_image

    for path in sorted(images.glob("*/*.png")):
        try:
            decode_image(path.read_bytes())
        except ImageRejected as exc:
            return f"{path} is not an image the model can read ({exc.code}: {exc})"
    return f"an image there is not one the model can read ({error})"

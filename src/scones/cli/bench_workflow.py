"""``scones bench workflow``: uploads through the whole offline stack, profiled.

Runs N uploads through a fresh offline stack for each ``--images`` size, profiles
it (py-spy when installed, else a sampler of the stack's threads; the report says
which), and prints images/s, the peak memory of the stack (RSS of all its
processes), where the time went, and bare onnxruntime throughput of the shipped
model on the same images, measured in the same run.
"""

from __future__ import annotations

import argparse
from typing import Any

from scones.cli.arguments import (
    check_writable_file,
    check_writable_folder,
    file_or_folder,
    non_negative_int,
    output_file,
    positive_int,
    seconds,
)
from scones.cli.errors import CommandError, CommandFailed
from scones.safe_files import write_json_file

DEFAULT_SIZES = [200]


def register(benchmarks: Any) -> None:
    from scones.cli.bench import DEFAULT_IMAGES
    from scones.paths import SHIPPED_MODEL_DIR

    parser = benchmarks.add_parser(
        "workflow",
        help="uploads through the whole offline stack against bare onnxruntime, profiled",
        description=__doc__,
    )
    parser.add_argument(
        "--images",
        type=positive_int,
        nargs="+",
        default=DEFAULT_SIZES,
        metavar="N",
        help="uploads per run; several sizes run one after another, each on a fresh stack "
        f"(default: {' '.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--model", type=file_or_folder, default=SHIPPED_MODEL_DIR, help="artifact folder"
    )
    parser.add_argument(
        "--data", type=file_or_folder, default=DEFAULT_IMAGES, help="folder of <label>/*.png images"
    )
    parser.add_argument(
        "--profiler",
        choices=["auto", "py-spy", "sampler", "none"],
        default="auto",
        help="auto: py-spy when installed, else a sampler of the stack's threads",
    )
    parser.add_argument(
        "--bare-images",
        type=positive_int,
        default=400,
        help="images for the bare onnxruntime baseline (the first of the same sequence), at "
        "most the largest --images",
    )
    parser.add_argument(
        "--without-moto-speedups",
        action="store_true",
        help="run raw moto (no interpreter caches, no SQS fixes), to compare",
    )
    parser.add_argument(
        "--profile-dir",
        type=file_or_folder,
        help="keep py-spy's collapsed stacks here (py-spy-<N>.txt, for a flame graph)",
    )
    parser.add_argument(
        "--max-running-executions",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="executions evaluating at once (default: the stack's; 0: all at once, raw moto)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=16,
        help="uploads before the measured burst, not counted (Lambda cold starts)",
    )
    parser.add_argument("--timeout", type=seconds, default=1800, help="seconds per run")
    parser.add_argument("--json", type=output_file, help="also write the results as JSON here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from scones.offline.workflow_bench import format_report, py_spy_path, run_benchmark

    if args.profiler == "py-spy" and not py_spy_path():
        raise CommandError("py-spy is not installed; use --profiler auto or sampler")
    if args.json:
        check_writable_file(args.json)
    if args.profile_dir:
        check_writable_folder(args.profile_dir, "--profile-dir", create=False)
    from scones.model.artifact import ModelArtifactError
    from scones.offline.deploy import DeployError
    from scones.offline.stack import StackError

    try:
        result = run_benchmark(
            args.images,
            model_dir=args.model,
            data_dir=args.data,
            profiler=args.profiler,
            bare_images=args.bare_images,
            timeout_s=args.timeout,
            moto_speedups=not args.without_moto_speedups,
            log=lambda line: print(line, flush=True),
            profile_dir=args.profile_dir,
            max_running_executions=args.max_running_executions,
            warmup=args.warmup,
        )
    except (ModelArtifactError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    except (StackError, DeployError, TimeoutError) as exc:
        raise CommandFailed(str(exc)) from exc
    print(format_report(result), flush=True)
    if args.json:
        write_json_file(args.json, result.to_json())
    return 0

"""``scones bench model``: today's model and the reference side by side, in one run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scones.cli.arguments import (
    check_writable_file,
    file_or_folder,
    non_negative_int,
    output_file,
    positive_int,
)
from scones.cli.errors import CommandError
from scones.cli.evaluate import add_split_option
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR
from scones.safe_files import write_json_file

DEFAULT_DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"
# The reference (today's ensemble, kept beside the shipped model) and the shipped model.
DEFAULT_MODELS = (SHIPPED_MODEL_DIR.parent / "reference" / "ensemble-v1", SHIPPED_MODEL_DIR)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "model",
        help="model artifacts side by side: ms/image, size, accuracy, coverage, calibration",
        description=(
            "Load each model artifact with bare onnxruntime (batch 1, one thread), time it "
            "on its validation images interleaved with the others, and score it on that "
            "split at the confidence threshold: ms/image (p50, p95), images/s, file size, "
            "accuracy, coverage, accepted accuracy and expected calibration error. The "
            "first model is the reference for the time ratio."
        ),
    )
    parser.add_argument(
        "--model",
        dest="models",
        type=file_or_folder,
        action="append",
        help="artifact folder; repeat to compare several (default: "
        "models/reference/ensemble-v1 and models/bicycle-motorcycle)",
    )
    parser.add_argument(
        "--data",
        type=file_or_folder,
        default=DEFAULT_DATA,
        help="labelled image folder (default: %(default)s)",
    )
    parser.add_argument("--images", type=positive_int, default=200, help="timed images per model")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=10, help="untimed images per model first"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="confidence threshold (default: ConfidenceThreshold in template.yaml)",
    )
    add_split_option(parser)
    parser.add_argument("--json", type=output_file, help="also write the results as JSON here")
    parser.set_defaults(handler=run)


def _label(path: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(SHIPPED_MODEL_DIR.parent).as_posix()
    except ValueError:
        return resolved.name


def run(args: argparse.Namespace) -> int:
    if args.json:
        check_writable_file(args.json)
    from scones.cli.torch_free import import_without_training
    from scones.model.artifact import ModelArtifactError

    # Runs in .venv: the benchmark needs onnxruntime only, not torch or onnx.
    bench = import_without_training("scones.model.bench")
    format_model_bench, run_model_bench = bench.format_model_bench, bench.run_model_bench
    from scones.model.evaluate import check_threshold, default_threshold
    from scones.model.folders import DataError

    models = list(args.models or DEFAULT_MODELS)
    try:
        threshold = (
            default_threshold() if args.threshold is None else check_threshold(args.threshold)
        )
        rows = run_model_bench(
            [(_label(path), path) for path in models],
            args.data,
            threshold,
            timed_images=args.images,
            warmup=args.warmup,
            whole=args.split == "all",
        )
    except (ModelArtifactError, DataError, ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    print(format_model_bench(rows, threshold), flush=True)
    if args.json:
        payload = {"threshold": threshold, "models": [row.to_json() for row in rows]}
        write_json_file(args.json, payload)
    return 0

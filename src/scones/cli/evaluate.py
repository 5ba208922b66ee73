"""``scones evaluate``: score a model artifact on labelled images; print the numbers, and with
``--out`` write the JSON + PNG reports."""

from __future__ import annotations

import argparse
from typing import Any

from scones.cli.arguments import check_writable_folder, file_or_folder, output_folder
from scones.cli.errors import CommandError
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR

DEFAULT_DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model artifact (through onnxruntime); --out writes evaluation.json/.png",
        description=(
            "Score labelled images with the exported model exactly as it is served, and "
            "report accuracy, the confusion matrix, and coverage/accuracy at the confidence "
            "threshold and across thresholds. By default the images are the validation "
            "split recorded in the model's model.json."
        ),
    )
    parser.add_argument(
        "--model",
        type=file_or_folder,
        default=SHIPPED_MODEL_DIR,
        help="artifact folder (default: %(default)s)",
    )
    parser.add_argument(
        "--data",
        type=file_or_folder,
        default=DEFAULT_DATA,
        help="labelled image folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        help="folder for evaluation.json and evaluation.png (default: only print the numbers)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="confidence threshold (default: ConfidenceThreshold in template.yaml)",
    )
    add_split_option(parser)
    parser.set_defaults(handler=run)


def add_split_option(parser: argparse.ArgumentParser) -> None:
    """``--split``: which images of ``--data`` score a model (``scones evaluate`` and
    ``scones bench model``); an error about the recorded split names it as the remedy."""
    parser.add_argument(
        "--split",
        choices=("validation", "all"),
        default="validation",
        help="'validation': the held-out split recreated from model.json; "
        "'all': every image in --data (for a separate test set)",
    )


def run(args: argparse.Namespace) -> int:
    from scones.cli.torch_free import import_without_training
    from scones.model.artifact import ModelArtifactError

    evaluate_directory = import_without_training("scones.model.build").evaluate_directory
    from scones.model.evaluate import check_threshold, default_threshold, write_report
    from scones.model.folders import DataError

    if args.out is not None:
        # Before the evaluation, not after it; made only once there is a report to write.
        check_writable_folder(args.out, create=False)
    try:
        threshold = (
            default_threshold() if args.threshold is None else check_threshold(args.threshold)
        )
        report, _ = evaluate_directory(args.model, args.data, threshold, whole=args.split == "all")
    except (ModelArtifactError, DataError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    at = report["at_threshold"]
    accepted = at["accepted_accuracy"]
    print(
        f"{report['images']} images: accuracy {report['accuracy']:.4f}; at threshold "
        f"{threshold:g}: coverage {at['coverage']:.4f}, accepted accuracy "
        + (f"{accepted:.4f}" if isinstance(accepted, int | float) else str(accepted))
    )
    print_mistakes(report["mistakes"])
    if args.out is not None:
        json_path, png_path = write_report(args.out, report)
        print(f"wrote {json_path} and {png_path}")
    return 0


SHOWN_MISTAKES = 20


def print_mistakes(mistakes: list[dict[str, Any]]) -> None:
    """The accepted mistakes by name (no person sees them), the rest as a count."""
    accepted = [m for m in mistakes if m["accepted"]]
    print(
        f"{len(mistakes)} wrong: {len(accepted)} accepted at the threshold, "
        f"{len(mistakes) - len(accepted)} sent to review"
    )
    for mistake in accepted[:SHOWN_MISTAKES]:
        print(
            f"  accepted and wrong: {mistake['image']} is {mistake['label']}, "
            f"answered {mistake['predicted']} at {mistake['confidence']:.3f}"
        )
    if len(accepted) > SHOWN_MISTAKES:
        print(f"  ... and {len(accepted) - SHOWN_MISTAKES} more (evaluation.json lists all)")

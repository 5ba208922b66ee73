"""``scones train``: train, export and evaluate the classifier.

The defaults rebuild the shipped model (``scones.paths.SHIPPED_MODEL_DIR``).
"""

from __future__ import annotations

import argparse
import sys
import time

from scones.cli.arguments import check_writable_folder, file_or_folder, labels, output_folder
from scones.cli.errors import CommandError
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR

DEFAULT_DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from scones.model.recipe import (
        DEFAULT_LABELS,
        DEFAULT_METHOD,
        DEFAULT_TEACHER,
        DISTIL_SETTINGS,
        FRESH_TEACHER,
        METHODS,
        NETWORKS,
        QUANTISATIONS,
        RESNET_SETTINGS,
        TrainRecipe,
        model_name,
    )

    defaults = TrainRecipe()
    parser = subparsers.add_parser(
        "train",
        help="train the classifier of the labels (--labels) on CPU and write the model artifact",
        description=(
            "Fine-tune a cross-fitted ensemble of pretrained MobileNetV3 backbones (or, with "
            "--network resnet, train small ResNets from scratch), or (--recipe distil) distil "
            "such an ensemble into one network, on labelled image folders "
            "(<data>/<label>/*.png or <data>/train/<label>/*.png), export it to ONNX with "
            "model.json, and write evaluation.json/.png and baseline.json for the held-out "
            "validation split. The defaults reproduce the shipped model."
        ),
    )
    default = " (default: %(default)s)"
    parser.add_argument(
        "--data", type=file_or_folder, default=DEFAULT_DATA, help="labelled image folder" + default
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=SHIPPED_MODEL_DIR,
        help="artifact folder to write" + default,
    )
    parser.add_argument(
        "--name",
        default=None,
        help="model name in model.json (default: the labels joined by '-', "
        f"{model_name(DEFAULT_LABELS)} for the default labels)",
    )
    parser.add_argument(
        "--labels",
        type=labels,
        default=DEFAULT_LABELS,
        help="the class folders, in the model's output order, comma-separated (the stack's "
        f"ModelLabels; default: {','.join(DEFAULT_LABELS)})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="confidence threshold for the report and baseline "
        "(default: ConfidenceThreshold in template.yaml)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of everything" + default
    )
    parser.add_argument(
        "--recipe",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="'ensemble': cross-fitted members trained on the labels; 'distil': one student "
        "trained on the teacher ensemble's calibrated predictions over augmented views" + default,
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="distil: teacher artifact folder, relative to the project (several, "
        "comma-separated, answer as one ensemble), or "
        f"'{FRESH_TEACHER}' to train the teacher ensemble on the same images first "
        f"(default: {DEFAULT_TEACHER})",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTISATIONS,
        default=None,
        help="store the graph as float32 ('none'), int8 (static, calibrated on training "
        "images) or float16 ('fp16') (default: none)",
    )
    parser.add_argument(
        "--flip-tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each image with its mirror image at inference (default: on for "
        f"ensemble, {'on' if DISTIL_SETTINGS['flip_tta'] else 'off'} for distil)",
    )
    parser.add_argument(
        "--cross-fit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="distil: train a student per fold for out-of-fold numbers on every training "
        "image and one pooled calibration, then the shipped student on every fold (members "
        "+ 1 trainings); without it, one student on all folds but one, calibrated on that "
        f"one (default: {'on' if DISTIL_SETTINGS['cross_fit'] else 'off'})",
    )
    parser.add_argument(
        "--hard-label-weight",
        type=float,
        default=None,
        help="distil: share of each target taken from the true label, the rest from the "
        f"teacher (default: {defaults.hard_label_weight})",
    )
    parser.add_argument(
        "--cache-dir",
        type=output_folder,
        default=None,
        help="distil: keep the teacher-labelled views here and reuse them when every input "
        "is the same (the teacher is the costly part) (default: none)",
    )
    parser.add_argument(
        "--network",
        choices=NETWORKS,
        default=defaults.network,
        help="fine-tune the pretrained backbone, or a ResNet from scratch" + default,
    )
    per_network = " (default: {} for {}, {} for resnet)"

    def network_default(help_text: str, recipe_field: str) -> str:
        value = getattr(defaults, recipe_field)
        resnet = RESNET_SETTINGS.get(recipe_field, value)
        text = help_text + per_network.format(value, defaults.network, resnet)
        if recipe_field in DISTIL_SETTINGS:
            text = text[:-1] + f"; {DISTIL_SETTINGS[recipe_field]} for distil)"
        return text

    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=network_default(
            "per member (distil: also teacher-labelled views per image)", "epochs"
        ),
    )
    parser.add_argument(
        "--resize",
        type=int,
        default=None,
        help=f"side the pretrained backbone sees (default: {defaults.resize}; "
        f"{DISTIL_SETTINGS['resize']} for distil)",
    )
    parser.add_argument(
        "--members",
        type=int,
        default=defaults.members,
        help="ensemble members, also the number of calibration folds (distil: the number of "
        "cross-fitted students that calibrate the shipped one)" + default,
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"resnet: channels of stage 1 (default: {defaults.width})",
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=None,
        help=f"resnet: residual blocks per stage (default: {defaults.blocks_per_stage})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=network_default("images per step", "batch_size"),
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=network_default("peak learning rate (of the head, when fine-tuning)", "learning_rate"),
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="share of each class held out for validation" + default,
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="torch CPU threads; results can differ in the last bits across values" + default,
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from scones.cli.torch_free import torch_installed
    from scones.model.artifact import text_field_problem
    from scones.model.evaluate import check_threshold, default_threshold
    from scones.model.recipe import TrainRecipe

    # The arguments are judged first, so a mistake is named in any environment.
    try:
        if args.name is not None and (problem := text_field_problem(args.name)) is not None:
            raise ValueError(f"--name is {problem}")
        threshold = (
            default_threshold() if args.threshold is None else check_threshold(args.threshold)
        )
        recipe = TrainRecipe.from_arguments(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.cache_dir is not None and recipe.method != "distil":
        raise CommandError("--cache-dir keeps the teacher's views: only used by --recipe distil")
    # Where the results go is checked before minutes of training, not after: the artifact
    # is staged beside --out and moved into it, and the views are kept in --cache-dir.
    check_writable_folder(args.out.parent, "--out's parent folder", create=False)
    check_writable_folder(args.out, create=False)
    if args.cache_dir is not None:
        check_writable_folder(args.cache_dir, "--cache-dir", create=False)
    if not torch_installed():
        raise CommandError(
            "training needs torch, which only the training environment has: run `make model`, "
            "or `.venv-train/bin/python -m scones.cli.main train ...` after "
            "`scripts/bootstrap.sh train`"
        )
    from scones.model.build import build_model
    from scones.model.folders import DataError

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        report = build_model(
            args.data,
            args.out,
            recipe,
            threshold,
            name=args.name,
            labels=args.labels,
            log=log,
            cache_dir=args.cache_dir,
        )
    except (DataError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    at = report["at_threshold"]
    print(
        f"wrote {args.out}: validation accuracy {report['accuracy']:.4f} on {report['images']} "
        f"images; at threshold {threshold:g}: coverage {at['coverage']:.4f}, accepted accuracy "
        f"{at['accepted_accuracy']}; {time.perf_counter() - started:.0f} s"
    )
    return 0

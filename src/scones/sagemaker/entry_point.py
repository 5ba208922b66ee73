"""Script-mode training inside a SageMaker framework container.

The SageMaker training toolkit runs ``scones_train.py`` from the source bundle,
which calls :func:`main`. Hyperparameters arrive as ``--name value`` arguments
(either ``--batch_size`` or ``--batch-size``); the images come from the ``train``
channel (``SM_CHANNEL_TRAIN``, ``<class>/*.png``), plus the optional ``labelled``
channel of a retraining run (``SM_CHANNEL_LABELLED``: images people labelled in
review, same layout), and the artifact goes to
``SM_MODEL_DIR``, which SageMaker uploads as ``model.tar.gz`` when the job ends.
The confidence threshold is passed in by the launcher, because ``template.yaml``
is not part of the bundle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from scones.sagemaker.exit_message import (
    TRAINING_FAILURE,
    TRAINING_JOB_CONFIG,
    write_exit_message,
)

if TYPE_CHECKING:
    from scones.model.recipe import TrainRecipe


def _option(parser: argparse.ArgumentParser, name: str, **kwargs: object) -> None:
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    parser.add_argument(*sorted(flags), dest=name, **kwargs)  # type: ignore[arg-type]


def _boolean(text: str) -> bool:
    """A hyperparameter the toolkit passes as ``True``/``False`` (JSON ``true``/``false``)."""
    lowered = text.strip().lower()
    if lowered not in {"true", "false"}:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return lowered == "true"


class _RefusingParser(argparse.ArgumentParser):
    """Raises ``ValueError`` with argparse's sentence instead of printing it and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def toolkit_argv(hyperparameters: Mapping[str, Any]) -> list[str]:
    """What the SageMaker training toolkit passes this program for a job's hyperparameters:
    ``--name value``, leaving out the toolkit's own ``sagemaker_*`` entries."""
    argv: list[str] = []
    for name, value in hyperparameters.items():
        if not name.startswith("sagemaker_"):
            argv += [f"--{name}", str(value)]
    return argv


# Where the job's files are: SageMaker's channels and folders, never a hyperparameter.
PATH_OPTIONS = ("data", "labelled", "model_dir", "failure_file")


def check_hyperparameters(hyperparameters: Mapping[str, Any]) -> TrainRecipe:
    """The recipe this program would train with a job's hyperparameters, or ``ValueError``
    naming what it would refuse, so a launcher can refuse them before a job or a stack
    starts."""
    given = sorted(set(hyperparameters).intersection(PATH_OPTIONS))
    if given:
        raise ValueError(
            f"{', '.join(given)}: where the job's files are (its channels and SageMaker's "
            "folders), not a hyperparameter"
        )
    parser = build_parser(_RefusingParser)
    argv = toolkit_argv(hyperparameters)
    return recipe_and_threshold(parser.parse_args([*argv, "--data", ".", "--model-dir", "."]))[0]


def recipe_and_threshold(args: argparse.Namespace) -> tuple[TrainRecipe, float]:
    """The run's recipe and threshold from parsed options, or ``ValueError`` naming what
    is wrong. The teacher is trained fresh unless one is named (distil only)."""
    from scones.model.artifact import text_field_problem
    from scones.model.evaluate import check_threshold
    from scones.model.recipe import FRESH_TEACHER, TrainRecipe

    if args.name is not None and (problem := text_field_problem(args.name)) is not None:
        raise ValueError(f"--name is {problem}")
    if args.recipe == "distil" and args.teacher is None:
        args.teacher = FRESH_TEACHER
    return TrainRecipe.from_arguments(args), check_threshold(args.threshold)


def build_parser(
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    from scones.cli.arguments import labels
    from scones.model.recipe import (
        DEFAULT_LABELS,
        DEFAULT_METHOD,
        METHODS,
        NETWORKS,
        TrainRecipe,
    )

    defaults = TrainRecipe()
    parser = parser_class(prog="scones_train.py", description=__doc__)
    _option(parser, "data", type=Path, default=os.environ.get("SM_CHANNEL_TRAIN"))
    _option(parser, "labelled", type=Path, default=os.environ.get("SM_CHANNEL_LABELLED"))
    _option(parser, "model_dir", type=Path, default=os.environ.get("SM_MODEL_DIR"))
    _option(parser, "threshold", type=float, required=True)
    # None: the labels' name (scones.model.recipe.model_name), as retraining leaves it.
    _option(parser, "name", default=None)
    # The stack's ModelLabels, in the model's output order: the images' folder names.
    _option(parser, "labels", type=labels, default=",".join(DEFAULT_LABELS))
    _option(parser, "network", choices=NETWORKS, default=defaults.network)
    # The shipped recipe. The job has no teacher artifact to read, and the newly labelled
    # images must reach the student, so by default it trains its teacher first
    # (recipe_and_threshold: "fresh" unless a teacher is named).
    _option(parser, "recipe", choices=METHODS, default=DEFAULT_METHOD)
    _option(parser, "teacher", default=None)
    _option(parser, "cross_fit", type=_boolean, default=None)
    _option(parser, "flip_tta", type=_boolean, default=None)
    _option(parser, "hard_label_weight", type=float, default=None)
    _option(parser, "seed", type=int, default=defaults.seed)
    # None: the network's own default (TrainRecipe.for_network)
    _option(parser, "epochs", type=int, default=None)
    _option(parser, "members", type=int, default=defaults.members)
    _option(parser, "resize", type=int, default=None)
    _option(parser, "width", type=int, default=None)
    _option(parser, "blocks", type=int, default=None)
    _option(parser, "batch_size", type=int, default=None)
    _option(parser, "lr", type=float, default=None)
    _option(parser, "validation_fraction", type=float, default=defaults.validation_fraction)
    _option(parser, "threads", type=int, default=os.cpu_count() or 1)
    # In a training job, SageMaker's FailureReason: the refusal's own sentence.
    _option(
        parser,
        "failure_file",
        type=Path,
        default=TRAINING_FAILURE if TRAINING_JOB_CONFIG.is_file() else None,
    )
    return parser


@dataclass(frozen=True)
class MergedChannels:
    root: Path
    # Labelled images the image rules refuse, and why: one bad object a reviewer's tool
    # wrote must not fail every later retraining, so it is named and left out.
    left_out: tuple[tuple[Path, str], ...]


def merge_channels(channels: Sequence[Path], labels: Sequence[str], into: Path) -> MergedChannels:
    """One ``<label>/`` folder tree holding every channel's images, as symbolic links.

    Each channel is ``<label>/<name>`` or ``train/<label>/<name>``; link names carry the
    channel's position so equal file names in two channels never collide. The first
    channel is the curated training set (a bad image there is an error, as in ``scones
    train``); each later one is checked image by image.
    """
    from scones_core.errors import ImageRejected

    from scones.model.artifact import decode_image
    from scones.model.folders import class_root, images_in

    left_out: list[tuple[Path, str]] = []
    for label in labels:
        (into / label).mkdir(parents=True, exist_ok=True)
    for index, channel in enumerate(channels):
        root = class_root(channel, labels) if index == 0 else _optional_root(channel, labels)
        if root is None:
            continue
        for label in labels:
            folder = root / label
            if not folder.is_dir():
                continue
            for path in images_in(folder):
                if index > 0:
                    try:
                        decode_image(path.read_bytes())
                    except (OSError, ImageRejected) as exc:
                        left_out.append((path, str(exc)))
                        continue
                (into / label / f"c{index}-{path.name}").symlink_to(path.resolve())
    return MergedChannels(into, tuple(left_out))


def _optional_root(channel: Path, labels: Sequence[str]) -> Path | None:
    for candidate in (channel, channel / "train"):
        if any((candidate / label).is_dir() for label in labels):
            return candidate
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from scones.model.build import build_model
    from scones.model.folders import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None or args.model_dir is None:
        parser.error("SM_CHANNEL_TRAIN and SM_MODEL_DIR are unset; pass --data and --model-dir")
    try:
        recipe, threshold = recipe_and_threshold(args)
    except ValueError as exc:
        parser.error(str(exc))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="scones-channels-") as tmp:
        data = args.data
        try:
            if args.labelled is not None and args.labelled.is_dir():
                merged = merge_channels([args.data, args.labelled], args.labels, Path(tmp))
                data = merged.root
                for path, reason in merged.left_out:
                    log(f"left out labelled image {path}: {reason}")
                log(
                    f"training on {args.data} plus the labelled images in {args.labelled}"
                    + (f" ({len(merged.left_out)} left out)" if merged.left_out else "")
                )
            report = build_model(
                data, args.model_dir, recipe, threshold, name=args.name, labels=args.labels, log=log
            )
        except DataError as exc:
            # The data cannot be trained on (a class too small, an unreadable image of the
            # curated channel): a refusal named, not a traceback.
            log(f"error: {exc}")
            if args.failure_file is not None:
                write_exit_message(args.failure_file, f"{type(exc).__name__}: {exc}")
            return 1
    print(f"validation accuracy {report['accuracy']:.4f} on {report['images']} images", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

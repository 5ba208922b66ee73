"""Script-mode training inside a SageMaker framework container.

The SageMaker training toolkit runs ``scones_train.py`` from the source bundle,
which calls :func:`main`. Hyperparameters arrive as ``--name value`` arguments
(either ``--batch_size`` or ``--batch-size``); the images come from the ``train``
channel (``SM_CHANNEL_TRAIN``, ``<class>/*.png``) and the artifact goes to
``SM_MODEL_DIR``, which SageMaker uploads as ``model.tar.gz`` when the job ends.
The confidence threshold is passed in by the launcher, because ``template.yaml``
is not part of the bundle.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scones.paths import SHIPPED_MODEL_NAME


def _option(parser: argparse.ArgumentParser, name: str, **kwargs: object) -> None:
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    parser.add_argument(*sorted(flags), dest=name, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    from scones.model.recipe import NETWORKS, TrainRecipe

    defaults = TrainRecipe()
    parser = argparse.ArgumentParser(prog="scones_train.py", description=__doc__)
    _option(parser, "data", type=Path, default=os.environ.get("SM_CHANNEL_TRAIN"))
    _option(parser, "model_dir", type=Path, default=os.environ.get("SM_MODEL_DIR"))
    _option(parser, "threshold", type=float, required=True)
    _option(parser, "name", default=SHIPPED_MODEL_NAME)
    _option(parser, "network", choices=NETWORKS, default=defaults.network)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from scones.model.build import build_model
    from scones.model.evaluate import check_threshold
    from scones.model.recipe import TrainRecipe

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None or args.model_dir is None:
        parser.error("SM_CHANNEL_TRAIN and SM_MODEL_DIR are unset; pass --data and --model-dir")
    try:
        recipe = TrainRecipe.from_arguments(args)
        threshold = check_threshold(args.threshold)
    except ValueError as exc:
        parser.error(str(exc))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = build_model(args.data, args.model_dir, recipe, threshold, name=args.name, log=log)
    print(f"validation accuracy {report['accuracy']:.4f} on {report['images']} images", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

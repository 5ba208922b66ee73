"""``scones retrain``: the retraining state machine's steps on the offline stack."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from scones.cli.arguments import (
    check_writable_folder,
    file_or_folder,
    hyperparameters,
    output_folder,
    positive_int,
)
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.stack_state import effective_params, parse_params


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from scones.offline.retrain_recipe import DEFAULT_DATA, SHORT_RECIPE, SHORT_RESIZE

    parser = subparsers.add_parser(
        "retrain",
        help="retrain offline: dataset, training, gate, registry, canary, promote or roll back",
        description=(
            "Run statemachine/retrain.asl.json's steps on a fresh offline stack whose endpoint "
            "serves --model: assemble the dataset (training channel plus labelled images) with "
            "the deployed dataset function, train with the training job's program and a short "
            "recipe, score candidate and production on the fixed gate set with the evaluation "
            "job's program, apply the gate (the deployed gate function), register a model "
            "package, then run the candidate as a canary variant through the real workflow "
            "and promote it or roll it back on the stack's alarms. Prints each step's "
            "decision and writes OUT/retrain-<UTC time>.json, .md and .html."
        ),
    )
    parser.add_argument(
        "--data", type=file_or_folder, default=DEFAULT_DATA, help="labelled image folder"
    )
    parser.add_argument(
        "--labelled",
        type=file_or_folder,
        help="folder of <label>/ images to publish under LabelledDataPrefix (what the review "
        "page writes)",
    )
    parser.add_argument(
        "--model", type=file_or_folder, help="production model (default: the shipped one)"
    )
    parser.add_argument("--out", type=output_folder, default=Path("out"), help="report folder")
    recipe = ", ".join(f"{k}={v}" for k, v in SHORT_RECIPE.items())
    parser.add_argument(
        "--hyperparameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override a training hyperparameter (the short recipe sets {recipe}, and "
        f"resize={SHORT_RESIZE} for a network that fine-tunes a pretrained backbone; the "
        "network is the stack's RetrainingNetwork unless network=... is given)",
    )
    parser.add_argument(
        "--max-train-per-label", type=positive_int, help="limit the training channel"
    )
    parser.add_argument("--max-gate-per-label", type=positive_int, help="limit the gate set")
    parser.add_argument(
        "--canary-requests",
        type=positive_int,
        default=40,
        help="images sent while the canary bakes",
    )
    parser.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="publish the training channel with its labels shuffled (the gate should refuse)",
    )
    parser.add_argument(
        "--fail-canary",
        action="store_true",
        help="make the canary's model fail every request (the rollback alarm should fire)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a template.yaml parameter, e.g. --param GateMinAcceptedAccuracy=0.98",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def _hyperparameters(pairs: list[str], params: dict[str, str]) -> dict[str, object]:
    """The short recipe of the network the job trains, with ``--hyperparameter`` over it."""
    from scones.offline.retrain_recipe import short_recipe

    given = hyperparameters(pairs)
    values: dict[str, object] = short_recipe(str(given.get("network", params["RetrainingNetwork"])))
    values.update(given)
    return values


def _check_recipe(hyperparameters: dict[str, object], params: dict[str, str]) -> None:
    """What the training job's own program would refuse, refused now: the hyperparameters
    the deployed TrainCandidate state gives it, with this run's over them."""
    from scones.sagemaker.entry_point import check_hyperparameters

    job = {
        "threshold": params["ConfidenceThreshold"],
        "labels": params["ModelLabels"],
        "network": params["RetrainingNetwork"],
        "epochs": params["RetrainingEpochs"],
    }
    try:
        check_hyperparameters({**job, **hyperparameters})
    except ValueError as exc:
        raise CommandError(
            f"--hyperparameter: the training program refuses it (RetrainingNetwork="
            f"{params['RetrainingNetwork']}): {exc}"
        ) from exc


def _check_folders(args: argparse.Namespace) -> None:
    """The training images and the labelled ones, read as the run will read them."""
    from scones_core.settings import parse_labels

    from scones.model.artifact import ModelArtifactError, ModelManifest
    from scones.model.folders import DataError, list_labelled
    from scones.offline.retrain import gate_split
    from scones.offline.retrain_recipe import DEFAULT_DATA
    from scones.offline.stack import DEFAULT_MODEL_DIR

    labels = parse_labels(effective_params(parse_params(args.param))["ModelLabels"])
    try:
        production = ModelManifest.load(args.model or DEFAULT_MODEL_DIR).to_json()
    except ModelArtifactError as exc:
        raise CommandError(f"--model: {exc}") from exc
    try:
        gate_split(args.data or DEFAULT_DATA, labels, production)
        if args.labelled is not None:
            list_labelled(args.labelled, labels)
    except (DataError, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from scones_core.retraining.outcome import FAILED

    from scones.offline.deploy import DeployError
    from scones.offline.retrain import OfflineRetrain, RetrainError, RetrainOptions
    from scones.offline.stack import DEFAULT_MODEL_DIR, StackError
    from scones.reports.retrain_report import write_retrain_report

    # Everything the user gave is checked before the stack starts (minutes of work).
    overrides = parse_params(args.param)
    params = effective_params(overrides)
    hyperparameters = _hyperparameters(args.hyperparameter, params)
    _check_recipe(hyperparameters, params)
    for option, folder in (("--data", args.data), ("--labelled", args.labelled)):
        if folder is not None and not folder.is_dir():
            raise CommandError(f"{option} {folder}: no such folder")
    _check_folders(args)
    check_writable_folder(args.out)
    from scones.cli.torch_free import torch_installed

    if not torch_installed():  # the training job's program runs here, on this machine
        raise CommandError(
            "retraining trains a model, which needs torch, and only the training environment "
            "has it: run `.venv-train/bin/python -m scones.cli.main retrain ...` after "
            "`scripts/bootstrap.sh train`"
        )
    options = RetrainOptions(
        data_dir=args.data,
        production_model=args.model or DEFAULT_MODEL_DIR,
        labelled_dir=args.labelled,
        recipe=hyperparameters,
        max_train_per_label=args.max_train_per_label,
        max_gate_per_label=args.max_gate_per_label,
        shuffle_training_labels=args.shuffle_labels,
        canary_requests=args.canary_requests,
        canary_faults={"model_error": -1} if args.fail_canary else None,
        overrides=overrides,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        result = OfflineRetrain(options, log=log).run()
    except (RetrainError, StackError, DeployError) as exc:
        raise CommandFailed(str(exc)) from exc
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    report = result.to_json()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    paths = write_retrain_report(report, args.out, stamp)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"outcome: {result.outcome}: {result.record['reason']}")
        print(f"report: {paths['html']} ({paths['markdown'].name}, {paths['json'].name})")
    if result.outcome == FAILED:
        raise CommandFailed(f"the retraining run failed: {result.record['reason']}")
    return 0

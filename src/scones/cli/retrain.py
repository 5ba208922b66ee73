"""``scones retrain``: the retraining state machine's steps on the offline stack."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from scones_core.settings import parse_labels

from scones.cli.arguments import (
    check_writable_folder,
    file_or_folder,
    hyperparameters,
    int_up_to,
    output_folder,
    positive_int,
)
from scones.cli.errors import CommandError, CommandFailed
from scones.cli.inputs import NOT_UTF8_NAME, utf8_name
from scones.cli.model_check import check_model_option
from scones.cli.signals import stop_signals_interrupt, stop_signals_recorded
from scones.cli.stack_state import effective_params, parse_params
from scones.safe_files import read_regular_file
from scones.shown_text import shown

MAX_CANARY_REQUESTS = 10_000


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
        type=int_up_to(MAX_CANARY_REQUESTS),
        default=40,
        help=f"images sent while the canary bakes (at most {MAX_CANARY_REQUESTS}: about four "
        "minutes of the offline stack's throughput)",
    )
    parser.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="publish the training channel with its labels shuffled (the gate should refuse)",
    )
    parser.add_argument(
        "--guessing-production",
        action="store_true",
        help="production is a model that guesses (about 50/50), so the short recipe's "
        "candidate passes the gate and the canary and its promotion can be seen",
    )
    parser.add_argument(
        "--fail-canary",
        action="store_true",
        help="make the canary's model fail every request (the rollback alarm should fire); "
        "without --model, production is the model that guesses, so the candidate reaches "
        "the canary",
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
    toolkit = sorted(name for name in given if name.startswith("sagemaker_"))
    if toolkit:
        # The training job's own program never sees them (entry_point.toolkit_argv).
        raise CommandError(
            f"--hyperparameter {', '.join(toolkit)}: the SageMaker training toolkit's own "
            "settings, which the job sets and the training program never reads"
        )
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
    given = hyperparameters.get("labels")
    if given is not None and parse_labels(str(given)) != parse_labels(params["ModelLabels"]):
        # The candidate must answer in the production model's labels and order: the gate,
        # the workflow and the results table all read them from ModelLabels.
        raise CommandError(
            f"--hyperparameter labels={given}: the stack's ModelLabels are "
            f"{params['ModelLabels']}, and a candidate must answer in those, in that order "
            "(--param ModelLabels sets the stack's)"
        )


def _check_folders(args: argparse.Namespace) -> None:
    """The training images and the labelled ones, read as the run will read them."""
    from scones.model.artifact import ModelArtifactError, ModelManifest
    from scones.model.folders import DataError, list_labelled
    from scones.offline.retrain import gate_split
    from scones.offline.retrain_recipe import DEFAULT_DATA
    from scones.paths import SHIPPED_MODEL_DIR

    labels = parse_labels(effective_params(parse_params(args.param))["ModelLabels"])
    try:
        production = ModelManifest.load(args.model or SHIPPED_MODEL_DIR).to_json()
    except ModelArtifactError as exc:
        raise CommandError(f"--model: {exc}") from exc
    # The production model as the stack will check it when it starts: loadable, and
    # answering in ModelLabels' order (before the split, which would only say it differs).
    check_model_option(args.model, parse_params(args.param))
    try:
        training, gate = gate_split(args.data or DEFAULT_DATA, labels, production)
        labelled = [] if args.labelled is None else list_labelled(args.labelled, labels)[0]
    except (DataError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    # Every image read now, as the run's jobs will read it, so a file they would fail on is
    # named by the path given here, not by a job's copy of it minutes into the run.
    for path, _ in [*training, *gate]:
        if refused := _refusal(path):
            raise CommandError(f"{shown(str(path))}: {refused}")
    if args.labelled is not None:
        _name_what_is_not_read(args.labelled, labels)
    for path, _ in labelled:
        if refused := _refusal(path):
            # As the training job does: a labelled image the rules refuse is left out.
            print(f"scones: left out labelled image {shown(str(path))}: {refused}", file=sys.stderr)


def _name_what_is_not_read(root: Path, labels: tuple[str, ...]) -> None:
    """Each entry of a label folder that the run will not read, named on stderr, as the
    dataset step leaves it out (it reads ``<label>/<name>`` image files only)."""
    from scones_core.image_files import IN_A_SUBFOLDER, not_an_image_file_because

    for label in labels:
        folder = root / label
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                why: str | None = f"a folder ({IN_A_SUBFOLDER})"
            elif not entry.is_file():
                why = "not a regular file, or a link to nothing"
            else:
                why = not_an_image_file_because(entry.name)
            if why is None:
                continue
            print(f"scones: left out {shown(str(entry))}: {why}", file=sys.stderr)


def _refusal(path: Path) -> str | None:
    """Why the image rules refuse ``path`` (None: they take it). A file the run could not
    take at all is a ``CommandError``: a name that is not UTF-8 (an S3 key is), or a file
    that cannot be read."""
    from scones_core.errors import ImageRejected

    from scones.model.artifact import decode_image

    if utf8_name(path.name) is None:
        raise CommandError(f"{shown(str(path))}: {NOT_UTF8_NAME}")
    try:
        data = read_regular_file(path)
    except OSError as exc:
        raise CommandError(f"{shown(str(path))}: cannot read it: {exc.strerror or exc}") from exc
    try:
        decode_image(data)
    except ImageRejected as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    from scones.paths import SHIPPED_MODEL_DIR

    if args.guessing_production and args.model is not None:
        raise CommandError("--guessing-production is the production model: leave out --model")

    # Everything the user gave is checked before the stack starts (minutes of work).
    overrides = parse_params(args.param)
    params = effective_params(overrides)
    hyperparameters = _hyperparameters(args.hyperparameter, params)
    _check_recipe(hyperparameters, params)
    for option, folder in (("--data", args.data), ("--labelled", args.labelled)):
        if folder is not None and not folder.is_dir():
            what = "a file, not a folder" if folder.exists() else "no such folder"
            raise CommandError(f"{option} {shown(str(folder))}: {what}")
    _check_folders(args)
    check_writable_folder(args.out)
    from scones.cli.torch_free import torch_installed

    if not torch_installed():  # the training job's program runs here, on this machine
        raise CommandError(
            "retraining trains a model, which needs torch, and only the training environment "
            "has it: run `.venv-train/bin/python -m scones.cli.main retrain ...` after "
            "`scripts/bootstrap.sh train`"
        )
    guessing = args.guessing_production or (args.fail_canary and args.model is None)
    # SIGTERM (timeout, a service manager) and SIGHUP end the run as Ctrl-C does: its stack
    # stopped and its temporary folders removed, "interrupted" said.
    with (
        stop_signals_interrupt() as received,
        tempfile.TemporaryDirectory(prefix="scones-guessing-") as scratch,
    ):
        production = args.model or SHIPPED_MODEL_DIR
        if guessing:
            from scones.offline.guessing_model import coin_flip_model

            production = coin_flip_model(Path(scratch) / "model")
            why = "--fail-canary" if not args.guessing_production else "--guessing-production"
            print(
                f"production: a model that guesses ({why}), so the candidate can pass the "
                "gate and reach the canary",
                file=sys.stderr if args.json else sys.stdout,
                flush=True,
            )
        code = _run(args, production, overrides, hyperparameters, received)
    if received:  # came while the stack stopped at the run's end: the report is written
        raise KeyboardInterrupt(signal.Signals(received[0]).name)
    return code


def _run(
    args: argparse.Namespace,
    production: Path,
    overrides: dict[str, str],
    hyperparameters: dict[str, object],
    received: list[int],
) -> int:
    from scones_core.retraining.outcome import FAILED

    from scones.offline.deploy import DeployError
    from scones.offline.retrain import OfflineRetrain, RetrainError, RetrainOptions
    from scones.offline.stack import StackError
    from scones.reports.retrain_report import write_retrain_report

    options = RetrainOptions(
        data_dir=args.data,
        production_model=production,
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
        stopping = partial(stop_signals_recorded, received)
        result = OfflineRetrain(options, log=log, stopping=stopping).run()
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

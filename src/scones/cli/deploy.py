"""``scones deploy-preflight`` and ``scones deploy-baseline``: the steps around ``sam deploy``.

``make deploy`` runs ``deploy-preflight`` (no AWS credentials: stop at once, saying how to
configure them), ``sam build``, ``sam deploy`` and ``deploy-baseline`` (the monitor's baseline
into the stack's bucket, the endpoint's log retention, then whether the endpoint exists).
Stack name, region and profile and every other setting are resolved by ``sam deploy``'s own
options and config file reading, from the options ``sam deploy`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scones.cli.arguments import file_or_folder
from scones.cli.errors import CommandError, CommandFailed

if TYPE_CHECKING:
    from scones.deploy import SamConfig


def _aws_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", help="stack name (default: stack_name in samconfig.toml)")
    parser.add_argument("--region", help="AWS region (default: samconfig.toml's, then AWS's)")
    parser.add_argument("--profile", help="AWS profile (default: samconfig.toml's, then AWS's)")
    parser.add_argument(
        "sam_deploy_args",
        nargs=argparse.REMAINDER,
        metavar="-- SAM_DEPLOY_OPTION",
        help="after --, the options given to sam deploy (--config-env, --config-file, "
        "--parameter-overrides, ...): the settings are read as sam deploy reads them",
    )


def _model_argument(parser: argparse.ArgumentParser) -> None:
    from scones.paths import SHIPPED_MODEL_DIR, display_path

    parser.add_argument(
        "--model",
        type=file_or_folder,
        default=None,
        help="folder of the model the stack serves, holding baseline.json (make deploy's "
        f"MODEL; default: the shipped model, {display_path(SHIPPED_MODEL_DIR)})",
    )


def _model_folder(args: argparse.Namespace) -> Path:
    """``--model`` or the shipped model: a folder with the baseline to publish, checked
    before anything reaches AWS."""
    from scones.paths import BASELINE_FILE, SHIPPED_MODEL_DIR

    model: Path = args.model or SHIPPED_MODEL_DIR
    if not (model / BASELINE_FILE).is_file():
        raise CommandError(f"--model {model}: no {BASELINE_FILE} there (a model folder holds one)")
    return model


def register(subparsers: argparse._SubParsersAction) -> None:
    preflight = subparsers.add_parser(
        "deploy-preflight",
        help="before sam deploy: AWS credentials, identity, region, names, quota, endpoint",
        description="Stop at once when no AWS credentials are configured, when the stack name "
        "would make a bucket name S3 refuses, when a parameter value sam deploy would deploy "
        "(on an existing stack, its current value of each parameter not overridden) would be "
        "refused or outlast an Express execution, when what the account leaves unreserved "
        "of its Lambda concurrency cannot hold the functions' reservations, or when "
        "CreateEndpoint=true names an endpoint this stack did not create; otherwise print "
        "the account, region and stack that sam deploy will use, warn when the update "
        "deletes the endpoint or replaces the classification workflow, and say whether the "
        "endpoint exists and captures where this stack's monitor reads. Refuse a "
        "baseline.json deploy-baseline would refuse after sam deploy (not the model's own, "
        "or one the monitor could not use) and, with --model, a model that does not fit "
        "the stack's ModelLabels and ModelInputSize (deploy-baseline would, after sam "
        "deploy).",
    )
    _aws_arguments(preflight)
    _model_argument(preflight)
    preflight.set_defaults(handler=run_preflight)

    baseline = subparsers.add_parser(
        "deploy-baseline",
        help="after sam deploy: the monitor's baseline and the retraining jobs' source bundle "
        "into the stack's bucket",
        description="Upload MODEL/baseline.json to s3://<ImageBucketName>/<BaselineKey> of the "
        "deployed stack (its output and parameter), and the retraining jobs' source bundle "
        "(this checkout's code) to s3://<ImageBucketName>/<RetrainingPrefix>code/"
        "sourcedir.tar.gz unless the same bundle is there, give the stack's endpoint's log "
        "group (/aws/sagemaker/Endpoints/<EndpointName>, which SageMaker creates with no "
        "retention) the stack's LogRetentionDays, then say whether the endpoint exists. A "
        "baseline that is not the model's own (its model_version is not model.json's "
        "version) or that the monitor could not use for the model's labels, and a model that "
        "does not fit the stack's ModelLabels and ModelInputSize, are refused; while the "
        "endpoint serves a model retraining promoted, the baseline there (that model's) is "
        "kept.",
    )
    _aws_arguments(baseline)
    _model_argument(baseline)
    baseline.set_defaults(handler=run_baseline)


def _sam_deploy_args(args: argparse.Namespace) -> list[str]:
    """sam deploy's options for these arguments: --stack, --region and --profile win."""
    given = list(args.sam_deploy_args)
    if given[:1] == ["--"]:
        given = given[1:]
    for option, value in (
        ("--stack-name", args.stack),
        ("--region", args.region),
        ("--profile", args.profile),
    ):
        if value is not None:
            given += [option, value]
    return given


def _context(args: argparse.Namespace) -> tuple[Any, str, SamConfig]:
    from scones.deploy import DeployError, make_session, read_samconfig

    config = read_samconfig(sam_args=_sam_deploy_args(args))
    stack = config.stack_name
    if not stack:
        raise CommandError("no stack name: pass --stack or set stack_name in samconfig.toml")
    try:
        session = make_session(config.region, config.profile)
    except DeployError as exc:
        raise CommandError(str(exc)) from exc
    return session, stack, config


def _warn_about_endpoint(session: Any, stack: str | None, config: SamConfig) -> dict[str, str]:
    from scones.deploy import endpoint_advice, endpoint_status

    status = endpoint_status(session, stack, config)
    advice = endpoint_advice(status)
    if advice:
        print(f"scones: warning: {advice}", file=sys.stderr)
    return status


def _endpoint_problem(
    session: Any, stack: str, config: SamConfig, refuse: Callable[[str], CommandError]
) -> str | None:
    """The endpoint warning to print after the summary; refused at once when CloudFormation
    would fail to create the endpoint (its name is taken)."""
    from scones.deploy import endpoint_advice, endpoint_status

    status = endpoint_status(session, stack, config)
    advice = endpoint_advice(status)
    if advice and status.get("taken") == "true":
        raise refuse(advice)
    return advice


def _model_misfit(problem: str, *, named: bool, kept_note: str) -> None:
    """The model whose baseline deploy-baseline publishes after sam deploy does not fit the
    stack. One named with --model is refused now: deploy-baseline would refuse it only
    after the deploy. The shipped one is the default, and the endpoint may serve another
    (CreateEndpoint=false, or ModelDataUrl): a warning, and deploy-baseline, given the
    served model's folder, refuses a mismatch."""
    if named:
        raise CommandError(
            f"{problem}: deploy-baseline would refuse its baseline after sam deploy{kept_note}"
        )
    print(
        f"scones: warning: {problem}{kept_note}. If the endpoint serves another model, "
        "name its folder (make deploy MODEL=DIR, or make deploy-baseline MODEL=DIR after "
        "a plain sam deploy), which refuses a model that does not fit the stack",
        file=sys.stderr,
    )


def _check_the_model(model: Path, values: dict[str, str], kept_note: str, *, named: bool) -> None:
    """The model these parameter values serve and retrain: one named with --model that
    does not fit is refused, anything else is a warning."""
    from scones_core.settings import parse_input_size
    from scones_core.training_split import input_size_problem

    from scones.deploy import model_problem

    if problem := model_problem(model, values, "set in sam deploy's parameter_overrides"):
        _model_misfit(problem, named=named, kept_note=kept_note)
    if problem := input_size_problem(parse_input_size(values["ModelInputSize"])):
        # The stack serves fine; only the monitor's retraining cannot help it.
        print(
            f"scones: warning: {problem}{kept_note}; each retraining run the monitor starts "
            "ends FAILED at its first step, before any training job",
            file=sys.stderr,
        )


def run_preflight(args: argparse.Namespace) -> int:
    import botocore.exceptions

    from scones.deploy import (
        DeployError,
        bucket_name_problem,
        capture_retention_problem,
        concurrency_problem,
        express_time_problem,
        kept_parameters,
        model_drift_baseline,
        preflight,
        previous_parameters,
        sent_parameters,
        update_hazards,
    )
    from scones.template_params import ParameterError, resolve_parameters

    model = _model_folder(args)
    try:  # deploy-baseline's own check: it would refuse the file only after sam deploy
        model_drift_baseline(model)
    except DeployError as exc:
        raise CommandError(
            f"--model {model}: {exc}; deploy-baseline would refuse it after sam deploy"
        ) from exc
    session, stack, config = _context(args)
    try:
        who = preflight(session, guided=config.guided)
    except DeployError as exc:
        raise CommandFailed(str(exc)) from exc
    if config.guided:
        print(
            "scones: warning: with --guided, sam deploy asks for the stack name, region and "
            "parameters after this check: only the AWS credentials are checked here",
            file=sys.stderr,
        )
        print(
            f"deploying as {who['arn']} ({who['credentials']} credentials) in account "
            f"{who['account']}"
        )
        return 0
    if problem := bucket_name_problem(stack, who["account"], who["region"]):
        raise CommandError(problem)
    # What CloudFormation deploys: on an existing stack sam deploy sends every parameter
    # the overrides do not name as UsePreviousValue, so the stack keeps its value.
    try:
        previous = previous_parameters(session.client("cloudformation"), stack)
    except DeployError as exc:
        raise CommandFailed(str(exc)) from exc
    values = sent_parameters(config.parameter_overrides, previous)
    kept = kept_parameters(config.parameter_overrides, previous)
    shown = ", ".join(f"{name}={value}" for name, value in sorted(kept.items()))
    kept_note = (
        f" (stack {stack} keeps {shown}: parameter_overrides does not name them)" if kept else ""
    )

    def refuse(problem: str) -> CommandError:
        return CommandError(problem + kept_note)

    try:  # as CloudFormation will check them, before they are used below
        resolve_parameters(values)
    except ParameterError as exc:
        raise refuse(f"sam deploy's parameters: {exc}") from exc
    if problem := express_time_problem(values):
        raise refuse(problem)
    _check_the_model(model, values, kept_note, named=args.model is not None)
    if problem := capture_retention_problem(values):
        raise refuse(problem)
    try:
        problem = concurrency_problem(session, values, previous)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"scones: warning: the Lambda concurrency quota was not read: {exc}", file=sys.stderr)
    else:
        if problem:
            raise refuse(problem)
    advice = _endpoint_problem(session, stack, config, refuse)
    print(
        f"deploying stack {stack} to account {who['account']} in {who['region']} as "
        f"{who['arn']} ({who['credentials']} credentials)"
    )
    if kept:
        print(f"stack {stack} keeps its values of the parameters not overridden: {shown}")
    hazards = (
        update_hazards(stack, previous, config.parameter_overrides) if previous is not None else []
    )
    for warning in (*hazards, advice):
        if warning:
            print(f"scones: warning: {warning}", file=sys.stderr)
    return 0


def run_baseline(args: argparse.Namespace) -> int:
    from scones.deploy import (
        DeployError,
        keep_endpoint_logs,
        publish_baseline,
        publish_source_bundle,
    )

    model = _model_folder(args)
    session, stack, config = _context(args)
    if config.guided:
        print(
            f"scones: warning: after --guided, the baseline goes to the stack the config file "
            f"names now ({stack}); if the answers were not saved, run make deploy-baseline "
            'ARGS="--stack NAME --region REGION"',
            file=sys.stderr,
        )
    try:
        result = publish_baseline(session, stack, model)
    except DeployError as exc:
        raise CommandFailed(str(exc)) from exc
    if "kept" in result:
        print(f"scones: {result['kept']}", file=sys.stderr)
    try:
        result.update(publish_source_bundle(session, stack))
    except DeployError as exc:
        raise CommandFailed(f"{exc} (the baseline was published)") from exc
    try:
        result.update(keep_endpoint_logs(session, stack))
    except DeployError as exc:
        raise CommandFailed(
            f"{exc} (the baseline and the retraining source bundle were published)"
        ) from exc
    if "endpoint_log_retention_days" not in result and "endpoint_logs" in result:
        print(f"scones: warning: {result['endpoint_logs']}", file=sys.stderr)
    result["stack"] = stack
    result.update(_warn_about_endpoint(session, stack, config))
    print(json.dumps(result))
    return 0

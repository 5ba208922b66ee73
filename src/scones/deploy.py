"""What `make deploy` does around ``sam deploy``: the checks before it and the step after it.

- :func:`preflight`: AWS credentials must be configured (``sam deploy`` would otherwise fail
  after a build, with a less helpful message); says which identity and region it will use.
- :func:`publish_baseline`: the monitor compares the label mix with the training baseline at
  ``s3://<ImageBucketName>/<BaselineKey>``, which ``sam deploy`` does not upload. It reads both
  from the stack (its output and its parameter), as deployed.
- :func:`endpoint_status`: the workflow calls the endpoint named by ``EndpointName``; when it
  does not exist every image ends ``FAILED``.

The settings (stack name, region, profile, parameter overrides) are the ones ``sam deploy``
resolves from its options and config file, read by the pinned SAM CLI (:func:`read_samconfig`).
The parameter values checked are the ones CloudFormation deploys (:func:`sent_parameters`): on
an existing stack every parameter the overrides do not name keeps its current value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from scones_core.monitoring.drift import BaselineError, model_baseline
from scones_core.objects import is_bucket_name

from scones.cli.errors import CommandError
from scones.paths import BASELINE_FILE, SHIPPED_MODEL_DIR
from scones.template_params import (
    PROJECT_ROOT,
    condition_value,
    load_template,
    parameter_default,
    parameter_defaults,
    setting_value,
)

ENDPOINT_CONFIG_RESOURCE = "SageMakerEndpointConfig"
"""template.yaml's endpoint config (CreateEndpoint=true): what CloudFormation serves."""
# Lambda keeps this much of an account's concurrency quota unreserved.
MIN_UNRESERVED_CONCURRENCY = 100

NO_CREDENTIALS = (
    "no AWS credentials are configured, so sam deploy cannot create the stack. Configure them "
    "first, then run make deploy again: `aws configure` (access keys) or `aws configure sso`, "
    "or export AWS_PROFILE=<profile>, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Looked "
    "in: the AWS_* environment variables, ~/.aws/credentials and ~/.aws/config{profile}, SSO, "
    "web identity, and container and instance roles."
)


class DeployError(RuntimeError):
    """A deployment step cannot go on; the message says what to do."""


class SamConfigError(DeployError, CommandError):
    """``samconfig.toml`` cannot be read as ``sam deploy`` reads it. A :class:`CommandError`
    too: the deploy commands read it before anything else, where a bad file is bad input."""


@dataclass
class SamConfig:
    """The settings ``sam deploy`` resolves from its options and its config file."""

    stack_name: str | None = None
    region: str | None = None
    profile: str | None = None
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    guided: bool = False
    """``--guided``: sam deploy asks for the stack, region and parameters after the checks."""


# Where the credentials are checked when sam deploy --guided will ask for the region.
GUIDED_STS_REGION = "us-east-1"
# The pinned SAM CLI's environment (`make deploy` builds it before the preflight).
SAM_PYTHON = PROJECT_ROOT / ".venv-sam" / "bin" / "python"
SAM_READ_TIMEOUT_S = 120
_SAM_BROKEN = 3
# Runs `sam deploy ARGS` up to the point where sam has resolved every option (config file
# found and version-checked, --config-env and --config-file, command line over file, deploy
# over global, parameter_overrides parsed) and prints those values instead of deploying.
_SAM_READS = """
import inspect, json, sys
try:
    import click
    import samcli.commands.deploy.command as deploy
    import samcli.lib.utils.version_checker as version_checker
    from samcli.cli.main import cli
except Exception as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}")
    sys.exit(BROKEN)
version_checker._inform_newer_version = lambda *args, **kwargs: None  # no PyPI request
resolved = {}
signature = inspect.signature(deploy.do_cli)
def capture(*args, **kwargs):
    resolved.update(signature.bind(*args, **kwargs).arguments)
    # What sam's do_cli refuses before it builds or uploads anything.
    from samcli.commands.deploy.exceptions import DeployResolveS3AndS3SetError
    as_json = str(resolved.get("output", "text")).lower() == "json"
    if resolved["guided"] and as_json:
        raise click.UsageError("--guided is not compatible with --output json")
    if resolved["confirm_changeset"] and as_json:
        raise click.UsageError("--confirm-changeset is not compatible with --output json")
    if not resolved["guided"] and resolved["resolve_s3"] and resolved["s3_bucket"]:
        raise DeployResolveS3AndS3SetError()
deploy.do_cli = capture
def describe(exc):  # some of sam's exceptions cannot print their message; their cause can
    try:
        text = str(exc.format_message() if isinstance(exc, click.ClickException) else exc)
    except Exception:
        return describe(exc.__cause__) if exc.__cause__ else type(exc).__name__
    return text if isinstance(exc, click.ClickException) else f"{type(exc).__name__}: {text}"
try:
    cli.main(["deploy", *sys.argv[1:]], prog_name="sam deploy", standalone_mode=False)
except click.exceptions.Exit as exc:
    sys.exit(exc.exit_code or 1)
except Exception as exc:  # what sam deploy stops on before deploying anything
    if type(exc).__name__ == "ConfigParseError":  # botocore's: not sam's config file
        print(json.dumps({"aws_config": describe(exc)}))
        sys.exit(1)
    given, named = sys.argv[1:], None
    for at, option in enumerate(given):  # the last one given, as click takes it
        if option == "--config-file" and at + 1 < len(given):
            named = given[at + 1]
        elif option.startswith("--config-file="):
            named = option.partition("=")[2]
    named = resolved.get("config_file") or named  # as sam resolved it, if it got that far
    try:
        from samcli.lib.config.samconfig import SamConfig
        where = named or SamConfig.get_default_file(".")
    except Exception:
        where = "its config file"
    refused = f"{describe(exc)} (config file: {where})"
    print(json.dumps({"refused": refused}))  # sam may have logged a traceback too
    sys.exit(1)
if not resolved:  # --help and the like: sam deploy would print and stop
    refused = "they only print (--help: run scripts/sam.sh deploy --help for sam's own)"
    print(json.dumps({"refused": refused}))
    sys.exit(1)
keys = ("stack_name", "region", "profile", "parameter_overrides", "guided")
print(json.dumps({"settings": {key: resolved.get(key) for key in keys}}, default=str))
""".replace("BROKEN", str(_SAM_BROKEN))


def read_samconfig(path: Path | None = None, sam_args: Sequence[str] = ()) -> SamConfig:
    """What ``sam deploy SAM_ARGS`` would deploy with (``--config-file PATH`` when given),
    resolved by the pinned SAM CLI itself, run where ``make deploy`` runs sam.

    A second reading of sam's settings checked values other than the ones deployed: the
    config file's name (``samconfig.toml``, ``.yaml`` or ``.yml``), ``--config-env``,
    options given on the command line, and ``parameter_overrides`` in each of its forms
    (``Key=Value`` pairs, the long form, tables, lists, ``file://`` references) all have
    rules of their own. What sam refuses is refused here, before anything is built; a
    :class:`SamConfigError` says which."""
    args = [*(["--config-file", str(path.resolve())] if path else []), *sam_args]
    if not SAM_PYTHON.exists():
        raise SamConfigError(
            "reading sam deploy's settings needs the SAM CLI's environment (.venv-sam): run "
            "scripts/bootstrap.sh sam (make deploy does)"
        )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    broken = "the SAM CLI in .venv-sam cannot read sam deploy's settings"
    try:
        done = subprocess.run(
            [str(SAM_PYTHON), "-c", _SAM_READS, *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,  # sam would prompt for what it lacks
            text=True,
            cwd=PROJECT_ROOT,  # where sam finds samconfig.toml and relative file:// paths
            env={**environment, "SAM_CLI_TELEMETRY": "0"},
            timeout=SAM_READ_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SamConfigError(
            f"{broken}: it did not answer within {exc.timeout:g} s; run scripts/bootstrap.sh sam"
        ) from exc
    except OSError as exc:
        raise SamConfigError(f"{broken}: {exc}; run scripts/bootstrap.sh sam") from exc
    if done.returncode == _SAM_BROKEN:
        reason = " ".join(done.stderr.split())
        raise SamConfigError(f"{broken}: {reason}; run scripts/bootstrap.sh sam")
    try:
        answer = json.loads(done.stdout.splitlines()[-1])
        if done.returncode != 0 and "aws_config" in answer:
            said = " ".join(str(answer["aws_config"]).split())
            raise SamConfigError(f"an AWS config or credentials file cannot be read: {said}")
        refused = None if done.returncode == 0 else str(answer["refused"])
        read: dict[str, Any] = dict(answer["settings"]) if refused is None else {}
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        said = " ".join((done.stdout + done.stderr).split())[-300:]
        raise SamConfigError(
            f"{broken}: exit status {done.returncode}: {said}; run scripts/bootstrap.sh sam"
        ) from exc
    if refused is not None:
        refused = " ".join(refused.split())
        raise SamConfigError(f"sam deploy would refuse its config file or options: {refused}")
    overrides = read["parameter_overrides"] or {}
    return SamConfig(
        stack_name=read["stack_name"],
        region=read["region"],
        profile=read["profile"],
        parameter_overrides={str(k): str(v) for k, v in overrides.items()},
        guided=bool(read.get("guided")),
    )


def make_session(region: str | None, profile: str | None) -> Any:
    import boto3
    import botocore.exceptions

    try:
        return boto3.Session(region_name=region, profile_name=profile)
    except botocore.exceptions.ProfileNotFound as exc:
        raise DeployError(
            f"{exc}: name a profile that `aws configure list-profiles` shows"
        ) from exc


def preflight(session: Any, *, guided: bool = False) -> dict[str, str]:
    """Fail at once without credentials; otherwise who and where ``sam deploy`` will act as.
    ``guided``: sam deploy asks for the region afterwards, so none is needed yet."""
    import botocore.exceptions

    where = f" (profile {session.profile_name!r})" if session.profile_name != "default" else ""
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise DeployError(f"the AWS credentials cannot be loaded: {exc}") from exc
    if credentials is None:
        raise DeployError(NO_CREDENTIALS.format(profile=where))
    region = session.region_name or (GUIDED_STS_REGION if guided else None)
    if not region:
        raise DeployError(
            "no AWS region is set: set region in samconfig.toml, pass --region, or export "
            "AWS_DEFAULT_REGION"
        )
    try:
        sts = session.client("sts", region_name=region)
    except botocore.exceptions.BotoCoreError as exc:
        # A setting the SDK cannot use (AWS_RETRY_MODE, AWS_MAX_ATTEMPTS, the config file's
        # values): not the credentials.
        raise DeployError(f"the AWS configuration cannot be used: {exc}") from exc
    try:
        identity = sts.get_caller_identity()
    except botocore.exceptions.EndpointConnectionError as exc:
        # No network, a proxy, or a region without that endpoint: not the credentials.
        raise DeployError(
            f"AWS STS cannot be reached to check the credentials{where}: {exc}"
        ) from exc
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise DeployError(f"the AWS credentials{where} were refused: {exc}") from exc
    return {
        "account": identity["Account"],
        "arn": identity["Arn"],
        "region": session.region_name or "(asked by sam deploy --guided)",
        "credentials": credentials.method,
    }


def image_bucket_name(stack_name: str, account: str, region: str) -> str:
    """The stack's image bucket, as template.yaml's ImageBucket names it."""
    return f"{stack_name}-{account}-{region}-images"


def bucket_name_problem(stack_name: str, account: str, region: str) -> str | None:
    """Why the stack's image bucket (:func:`image_bucket_name`) could not be created, or
    None. CloudFormation takes stack names S3 refuses in a bucket name, and would fail only
    after creating the queues."""
    bucket = image_bucket_name(stack_name, account, region)
    if is_bucket_name(bucket):
        return None
    room = 63 - len(bucket) + len(stack_name)
    return (
        f"stack name {stack_name!r} makes the image bucket's name {bucket!r}, which S3 "
        f"refuses: bucket names are at most 63 lower-case letters, digits and hyphens, so "
        f"in {region} the stack name can have at most {room} of them"
    )


def reserved_concurrency(overrides: Mapping[str, str]) -> int:
    """The concurrency the template's functions reserve with these parameter values."""
    template = load_template()
    values = {**parameter_defaults(), **overrides}
    total = 0
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        value = resource["Properties"].get("ReservedConcurrentExecutions")
        if isinstance(value, dict) and "Fn::If" in value:
            name, if_true, if_false = value["Fn::If"]
            value = if_true if condition_value(template, name, values) else if_false
        # A number, a parameter or a mapping keyed by one; None for AWS::NoValue.
        setting = setting_value(value, values)
        if setting is not None:
            total += int(setting)
    return total


def concurrency_problem(
    session: Any, overrides: Mapping[str, str], previous: Mapping[str, str] | None = None
) -> str | None:
    """Why ``sam deploy`` would fail on the functions' reserved concurrency, or None.

    Lambda refuses a reservation that leaves less than 100 of the account's quota
    unreserved; new accounts start with less than the stack's total plus 100, and other
    stacks of the account (another copy of this one) may hold reservations already. What
    this stack reserves now (``previous``: its deployed parameter values) is freed by the
    update, so it counts as unreserved.
    """
    needed = reserved_concurrency(overrides)
    if not needed:
        return None
    limit = session.client("lambda").get_account_settings()["AccountLimit"]
    quota = int(limit["ConcurrentExecutions"])
    unreserved = int(limit.get("UnreservedConcurrentExecutions", quota))
    held = reserved_concurrency(previous) if previous is not None else 0
    free = min(quota, unreserved + held)
    if free >= needed + MIN_UNRESERVED_CONCURRENCY:
        return None
    others = quota - free
    elsewhere = (
        f", of which other functions of the account already reserve {others}" if others else ""
    )
    return (
        f"this account's Lambda concurrency quota in {session.region_name} is {quota}"
        f"{elsewhere}: the stack's functions reserve {needed} and Lambda keeps "
        f"{MIN_UNRESERVED_CONCURRENCY} unreserved, so sam deploy would fail and roll back. Set "
        "ReserveFunctionConcurrency=false in samconfig.toml's parameter_overrides (the "
        "functions then share the account's pool), or ask for a quota of at least "
        f"{needed + MIN_UNRESERVED_CONCURRENCY + others} (Service Quotas: AWS Lambda, "
        "Concurrent executions)"
    )


def express_time_problem(overrides: Mapping[str, str]) -> str | None:
    """Why these (already checked) parameters would let an Express execution time out
    before it is done, or None. Express stops an execution at 5 minutes: a timed-out
    classification writes no FAILED record and sends no dead letter, so its batch's uploads
    would go unrecorded; a timed-out backfill batch (its Distributed Map's children run as
    ``WorkflowType``) counts as failed. ``overrides``: the values ``sam deploy`` would deploy
    (:func:`sent_parameters`); the template's defaults fill any left out."""
    from scones.costs.workflow import (
        EXPRESS_LIMIT_SECONDS,
        backfill_batch_seconds,
        load_workflow,
        worst_case_seconds,
    )

    values = {**parameter_defaults(), **overrides}
    if values["WorkflowType"] != "EXPRESS":
        return None
    seconds, _ = worst_case_seconds(load_workflow(dict(overrides)))
    batch_seconds = backfill_batch_seconds(dict(overrides))
    if max(seconds, batch_seconds) <= EXPRESS_LIMIT_SECONDS:
        return None
    problems = []
    if seconds > EXPRESS_LIMIT_SECONDS:
        problems.append(
            f"the slowest path to a record (every retry, every attempt to its timeout) takes "
            f"{seconds:.0f} s, past an Express execution's {EXPRESS_LIMIT_SECONDS} s: a "
            "timed-out execution records nothing for its batch. Lower RetryMaxAttempts, "
            "RetryIntervalSeconds, RetryMaxDelaySeconds or EndpointTimeoutSeconds, or set "
            "WorkflowType=STANDARD (`scones cost --param ...` prints the slowest path)"
        )
    if batch_seconds > EXPRESS_LIMIT_SECONDS:
        problems.append(
            f"a backfill batch's slowest path (every retry of the backfill function to its "
            f"timeout) takes {batch_seconds:.0f} s, past an Express execution's "
            f"{EXPRESS_LIMIT_SECONDS} s: a timed-out batch fails without starting its "
            "objects. Lower RetryMaxAttempts, RetryIntervalSeconds or RetryMaxDelaySeconds, "
            "or set WorkflowType=STANDARD (`scones cost --param ...` prints it)"
        )
    return "with these parameters " + "; and ".join(problems)


def capture_retention_problem(overrides: Mapping[str, str]) -> str | None:
    """Why ``CaptureRetentionDays`` would expire captured traffic the monitor still reads,
    or None. A run reads the window (``MonitorWindowMinutes``) that ended
    ``MonitorSettleMinutes`` before it, so its oldest capture is their sum old; a day more
    leaves room for a late or retried run. Reads the values ``sam deploy`` would
    deploy, as ``express_time_problem`` does."""
    values = {**parameter_defaults(), **overrides}
    days = int(values["CaptureRetentionDays"])
    window = timedelta(minutes=int(values["MonitorWindowMinutes"]))
    settle = timedelta(minutes=int(values["MonitorSettleMinutes"]))
    if days == 0 or timedelta(days=days) >= window + settle + timedelta(days=1):
        return None
    return (
        f"CaptureRetentionDays={days} expires captured traffic the monitor still reads: a run "
        f"reads a window of MonitorWindowMinutes={values['MonitorWindowMinutes']} that ended "
        f"MonitorSettleMinutes={values['MonitorSettleMinutes']} before it, so keep the capture "
        "at least those two plus a day (or 0, forever)"
    )


def stack_facts(cloudformation: Any, stack_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The deployed stack's outputs and parameters."""
    import botocore.exceptions

    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"stack {stack_name} was not found: deploy it first ({exc})") from exc
    if stack.get("StackStatus") == "REVIEW_IN_PROGRESS":
        raise DeployError(
            f"stack {stack_name} is not deployed yet (REVIEW_IN_PROGRESS): its change set was "
            "not executed; deploy it first"
        )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {
        p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
        for p in stack.get("Parameters", [])
    }
    return outputs, parameters


def previous_parameters(cloudformation: Any, stack_name: str) -> dict[str, str] | None:
    """The parameter values ``stack_name`` is deployed with, or None when ``sam deploy``
    would create it (no such stack, or REVIEW_IN_PROGRESS: a change set never executed),
    as the pinned SAM CLI decides (``Deployer.has_stack``)."""
    import botocore.exceptions

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except botocore.exceptions.ClientError as exc:
        if f"Stack with id {stack_name} does not exist" in str(exc):
            return None
        # sam deploy reads the stack with the same credentials, and would stop there too.
        raise DeployError(f"stack {stack_name} cannot be read: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise DeployError(f"stack {stack_name} cannot be read: {exc}") from exc
    status = stacks[0].get("StackStatus") if stacks else None
    if not stacks or status == "REVIEW_IN_PROGRESS":
        return None
    if status == "ROLLBACK_COMPLETE":
        # Its creation failed: CloudFormation refuses to update it, so sam deploy would
        # stop at the change set, and the next stack starts from template.yaml's defaults.
        raise DeployError(
            f"stack {stack_name} is ROLLBACK_COMPLETE: its creation failed and it cannot be "
            f"updated; delete it (`sam delete --stack-name {stack_name}`, after reading why "
            "in its events), then deploy again"
        )
    return {
        str(p["ParameterKey"]): str(p.get("ParameterValue", ""))
        for p in stacks[0].get("Parameters", [])
    }


def sent_parameters(
    overrides: Mapping[str, str], previous: Mapping[str, str] | None
) -> dict[str, str]:
    """The parameter values CloudFormation deploys for ``sam deploy`` with these overrides:
    each override; on an existing stack (``previous``, :func:`previous_parameters`) every
    other parameter the stack already has keeps its value (sam sends it as
    UsePreviousValue); the rest take template.yaml's default. Overrides the template does
    not declare stay, for :func:`~scones.template_params.resolve_parameters` to name."""
    declared = load_template().get("Parameters", {})
    values = parameter_defaults()
    values.update({k: v for k, v in (previous or {}).items() if k in declared})
    values.update(overrides)
    return values


def kept_parameters(
    overrides: Mapping[str, str], previous: Mapping[str, str] | None
) -> dict[str, str]:
    """The values an existing stack keeps that differ from template.yaml's defaults: what
    a reader of samconfig.toml alone would not expect to be deployed."""
    defaults = parameter_defaults()
    sent = sent_parameters(overrides, previous)
    return {
        name: sent[name]
        for name in (previous or {})
        if name in sent and name not in overrides and sent[name] != defaults.get(name)
    }


ENDPOINT_RESOURCE = "SageMakerEndpoint"
"""template.yaml's endpoint (CreateEndpoint=true): the one the workflow calls."""
CLASSIFICATION_MACHINE = "ClassificationStateMachine"


def removed_resources(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The template's resources whose ``Condition`` holds with the ``before`` values and
    not with ``after``: CloudFormation deletes them."""
    template = load_template()
    return sorted(
        name
        for name, resource in template["Resources"].items()
        if "Condition" in resource
        and condition_value(template, resource["Condition"], before)
        and not condition_value(template, resource["Condition"], after)
    )


def update_hazards(
    stack_name: str, previous: Mapping[str, str], overrides: Mapping[str, str]
) -> list[str]:
    """What this update of a deployed stack destroys that is in use, each with what to do:
    the endpoint the workflow calls (CreateEndpoint true to false), and the running
    classifications (a WorkflowType change replaces the state machine). Both can be meant,
    and both can be recovered from, so they are warnings."""
    before = sent_parameters({}, previous)
    after = sent_parameters(overrides, previous)
    hazards = []
    removed = removed_resources(before, after)
    if ENDPOINT_RESOURCE in removed:
        deleted, called = before["EndpointName"], after["EndpointName"]
        until = (
            f"every upload ends FAILED until an endpoint named {called} exists again: keep "
            "CreateEndpoint=true, or right after the deploy create it with `scones sagemaker "
            f"deploy ... --endpoint-name {called}`"
            if called == deleted
            else f"the workflow calls {called} instead, and every upload ends FAILED while "
            "no endpoint has that name"
        )
        hazards.append(
            f"this deploy changes CreateEndpoint from true to false: CloudFormation deletes "
            f"the stack's endpoint {deleted} (the resources it removes: {', '.join(removed)})"
            f"; {until}. Then replay "
            f"the failed uploads with `scones redrive --stack {stack_name}`"
        )
    if before["WorkflowType"] != after["WorkflowType"]:
        hazards.append(
            f"this deploy changes WorkflowType from {before['WorkflowType']} to "
            f"{after['WorkflowType']}: CloudFormation replaces the classification state "
            f"machine ({CLASSIFICATION_MACHINE}) and deletes the old one, which terminates "
            "its running executions at their next state transition, so their uploads get "
            "no record (not even FAILED) and no dead letter. Deploy while no upload is being "
            f"classified, then run `scones backfill {after['IncomingPrefix']} --stack "
            f"{stack_name}`: it classifies every upload that has no record"
        )
    return hazards


def model_problem(model_dir: Path, parameters: Mapping[str, str], how: str) -> str | None:
    """Why the model in ``model_dir`` does not fit a stack with these parameters (the
    template's defaults fill the rest): its classes in another order than ``ModelLabels``,
    or an input size other than ``ModelInputSize``. Nothing on AWS would say so."""
    from scones_core.settings import parse_labels

    from scones.model.artifact import ModelArtifactError, ModelManifest, stack_mismatches

    def value(name: str) -> str:
        return parameters.get(name) or parameter_default(name)

    try:
        manifest = ModelManifest.load(model_dir)
        labels = parse_labels(value("ModelLabels"))
    except (ModelArtifactError, ValueError) as exc:
        return f"the model at {model_dir} cannot be checked against the stack: {exc}"
    problems = stack_mismatches(manifest, labels, value("ModelInputSize"), how=how)
    return f"the model at {model_dir}: " + "; and ".join(problems) if problems else None


def model_drift_baseline(model_dir: Path) -> bytes:
    """``model_dir``'s ``baseline.json``, once it is known to be that model's own, one the
    monitor compares with (``model_baseline``); ``DeployError`` saying why not. The check
    ``deploy-baseline`` makes before it publishes the file, and ``deploy-preflight`` before
    ``sam deploy``, so the refusal does not come only after the stack is deployed."""
    from scones.model.artifact import ModelArtifactError, ModelManifest

    baseline = model_dir / BASELINE_FILE
    if not baseline.is_file():
        raise DeployError(f"{baseline} is missing: the model folder holds no baseline")
    body = baseline.read_bytes()
    try:
        manifest = ModelManifest.load(model_dir)
    except ModelArtifactError as exc:
        raise DeployError(f"the model at {model_dir} cannot be read: {exc}") from exc
    try:
        model_baseline(body, manifest.labels, manifest.version)
    except BaselineError as exc:
        # The monitor would log it as unusable every hour and compute no drift, or
        # compare the traffic with another model's mix and name that model.
        raise DeployError(
            f"{baseline} is not a drift baseline the monitor can use for the model at "
            f"{model_dir}: {exc}. `scones train` writes one beside the model"
        ) from exc
    return body


def publish_baseline(
    session: Any, stack_name: str, model_dir: Path = SHIPPED_MODEL_DIR
) -> dict[str, str]:
    """Upload the model's baseline to where the stack's monitor reads it, once the baseline
    is known to be this model's own, one the monitor compares with
    (``model_drift_baseline``, before anything is asked of AWS), and the model to fit the
    deployed stack's ``ModelLabels`` and ``ModelInputSize``.

    Not while the stack's endpoint serves a model retraining promoted (CreateEndpoint=true,
    another endpoint config than the stack's): the promotion put that model's own baseline
    there, and a deploy that left the endpoint alone must not swap it for the bundled
    model's; the answer says it was kept (``kept``)."""
    try:
        body = model_drift_baseline(model_dir)
    except DeployError as exc:
        raise DeployError(f"{exc}. The baseline was not published.") from exc
    outputs, parameters = stack_facts(session.client("cloudformation"), stack_name)
    # The stack's labels are the model's, in order: the baseline's check above holds for them.
    problem = model_problem(model_dir, parameters, how="deploy the stack with")
    if problem:
        raise DeployError(f"{problem}. The baseline was not published.")
    bucket = _image_bucket(outputs, stack_name)
    key = parameters.get("BaselineKey") or parameter_default("BaselineKey")
    if promoted := _serving_promoted(session, stack_name, parameters):
        return {
            "baseline": f"s3://{bucket}/{key}",
            "kept": (
                f"the endpoint serves endpoint config {promoted['serving_config']}, not the "
                f"stack's (a retraining promotion, or a config switched by hand), so the "
                f"drift baseline at s3://{bucket}/{key} stays: a promotion copies the "
                "promoted model's there (if its copy failed, its alert named the copy to "
                f"make). {model_dir}'s is published once the endpoint serves that model again"
            ),
        }
    session.client("s3").put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json"
    )
    return {"baseline": f"s3://{bucket}/{key}", "bytes": str(len(body))}


def _image_bucket(outputs: Mapping[str, str], stack_name: str) -> str:
    """The deployed stack's image bucket (its ``ImageBucketName`` output)."""
    if "ImageBucketName" not in outputs:
        raise DeployError(
            f"stack {stack_name} has no ImageBucketName output: is it this project, and did "
            "its last deployment complete?"
        )
    return outputs["ImageBucketName"]


def publish_source_bundle(session: Any, stack_name: str) -> dict[str, str]:
    """Put the retraining jobs' source bundle (``scones_train.py``, ``scones_evaluate.py``
    and this checkout's code) where the deployed stack's retraining runs read it:
    ``<RetrainingPrefix>code/sourcedir.tar.gz`` in its bucket. The bundle is byte-for-byte
    reproducible; its SHA-256 is kept in the object's metadata, so a deploy that changed
    no code leaves the object (and the bucket's versions) as they were."""
    import hashlib

    from botocore.exceptions import ClientError
    from scones_core.objects import object_missing

    from scones.sagemaker.errors import LaunchError
    from scones.sagemaker.source_bundle import STACK_BUNDLE_KEY, build_bundle

    outputs, parameters = stack_facts(session.client("cloudformation"), stack_name)
    bucket = _image_bucket(outputs, stack_name)
    prefix = parameters.get("RetrainingPrefix") or parameter_default("RetrainingPrefix")
    key = f"{prefix}{STACK_BUNDLE_KEY}"
    uri = f"s3://{bucket}/{key}"
    try:
        bundle = build_bundle()
    except (LaunchError, OSError) as exc:
        raise DeployError(f"the retraining source bundle cannot be built: {exc}") from exc
    digest = hashlib.sha256(bundle).hexdigest()
    s3 = session.client("s3")
    try:
        held = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")
    except ClientError as exc:
        if not object_missing(exc):
            raise DeployError(f"cannot read {uri}: {exc}") from exc
        held = None
    if held == digest:
        return {"source_bundle": uri, "sha256": digest, "unchanged": "true"}
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=bundle,
        ContentType="application/gzip",
        Metadata={"sha256": digest},
    )
    return {"source_bundle": uri, "sha256": digest, "bytes": str(len(bundle))}


def keep_endpoint_logs(session: Any, stack_name: str) -> dict[str, str]:
    """Give the stack's endpoint's log group the stack's ``LogRetentionDays``.

    SageMaker creates ``/aws/sagemaker/Endpoints/<EndpointName>`` itself when the endpoint's
    containers start, with no retention: it would keep the model server's lines (one per
    request at its default log level) for ever. The stack cannot own the group (on an
    existing stack it exists already, and CloudFormation would fail to create it), so this
    step sets its retention after each deploy. Only the stack's own endpoint
    (``CreateEndpoint=true``): an endpoint deployed outside the stack keeps its settings."""
    from botocore.exceptions import ClientError
    from scones_core.errors import aws_error_code
    from scones_core.sagemaker_names import endpoint_log_group

    _, parameters = stack_facts(session.client("cloudformation"), stack_name)
    if parameters.get("CreateEndpoint", parameter_default("CreateEndpoint")) != "true":
        return {}
    endpoint = parameters.get("EndpointName") or parameter_default("EndpointName")
    days = int(parameters.get("LogRetentionDays") or parameter_default("LogRetentionDays"))
    group = endpoint_log_group(endpoint)
    try:
        session.client("logs").put_retention_policy(logGroupName=group, retentionInDays=days)
    except ClientError as exc:
        if aws_error_code(exc) != "ResourceNotFoundException":
            raise DeployError(f"cannot set the retention of log group {group}: {exc}") from exc
        return {
            "endpoint_logs": f"{group} does not exist yet (the endpoint has logged nothing): "
            "run make deploy-baseline again once it has, to keep its logs "
            f"{days} days (LogRetentionDays)"
        }
    return {"endpoint_logs": group, "endpoint_log_retention_days": str(days)}


def endpoint_status(session: Any, stack_name: str | None, config: SamConfig) -> dict[str, str]:
    """The endpoint the workflow calls and its status (``missing`` when it does not exist)."""
    from scones.sagemaker.hosting import existing_endpoint

    outputs: dict[str, str] = {}
    parameters: dict[str, str] = {}
    if stack_name:
        try:
            outputs, parameters = stack_facts(session.client("cloudformation"), stack_name)
        except DeployError:
            outputs, parameters = {}, {}

    deployed = sent_parameters(config.parameter_overrides, parameters)
    name, create = deployed["EndpointName"], deployed["CreateEndpoint"]
    sagemaker = session.client("sagemaker")
    # Only SageMaker's own "no such endpoint" answer means missing: any other refusal
    # (AccessDenied, throttling, another validation error) is raised as what it is.
    described = existing_endpoint(sagemaker, name)
    if described is None:
        return {"endpoint": name, "status": "missing", "create_endpoint": str(create)}
    status = str(described["EndpointStatus"])
    result = {"endpoint": name, "status": status, "create_endpoint": str(create)}
    if str(create) == "true" and (
        parameters.get("CreateEndpoint") != "true" or parameters.get("EndpointName") != name
    ):
        # The stack did not create it: CloudFormation would try to, and fail on the name.
        result["taken"] = "true"
    elif stack_name and str(create) == "true":
        result.update(_promoted_config(session, sagemaker, stack_name, described))
    elif stack_name and float(deployed["DataCaptureSamplingPercentage"]) > 0:
        result.update(_capture_mismatch(described, stack_name, outputs, deployed))
    variant = deployed["EndpointVariantName"]
    served = [str(v["VariantName"]) for v in described.get("ProductionVariants", [])]
    if str(create) != "true" and served and variant not in served:
        # An endpoint of its own: the stack must name its variant, or the monitor reads no
        # capture and EndpointErrorAlarm watches a variant that does not exist.
        result.update({"variant": variant, "served_variants": ",".join(served)})
    return result


def _capture_mismatch(
    described: Mapping[str, Any],
    stack_name: str,
    outputs: Mapping[str, str],
    deployed: Mapping[str, str],
) -> dict[str, str]:
    """Where an endpoint of its own (CreateEndpoint=false) captures, when the stack's
    monitor would not read it there: no capture, another bucket or prefix (another stack's
    endpoint), or another sampling share than DataCaptureSamplingPercentage. {} if it fits."""
    # Before the first deploy the bucket is not there to read: its name is the template's,
    # in the endpoint's account and region (arn:aws:sagemaker:REGION:ACCOUNT:endpoint/NAME).
    arn = str(described.get("EndpointArn", "")).split(":")
    bucket = outputs.get("ImageBucketName") or (
        image_bucket_name(stack_name, arn[4], arn[3]) if len(arn) > 4 else ""
    )
    expected = f"s3://{bucket}/{deployed['DataCapturePrefix']}"
    capture = described.get("DataCaptureConfig") or {}
    where = str(capture.get("DestinationS3Uri", "")).rstrip("/")
    if not capture.get("EnableCapture") or capture.get("CaptureStatus") == "Stopped":
        where = ""
    share = capture.get("CurrentSamplingPercentage")
    wanted = deployed["DataCaptureSamplingPercentage"]
    if where == expected.rstrip("/") and (share is None or float(share) == float(wanted)):
        return {}
    return {
        "stack": stack_name,
        "capture": where or "none",
        "expected_capture": expected,
        "capture_percent": "" if share is None else str(share),
        "expected_capture_percent": wanted,
    }


def _serving_promoted(
    session: Any, stack_name: str, parameters: Mapping[str, str]
) -> dict[str, str]:
    """The config a retraining promoted, if the endpoint the stack calls serves one: with
    CreateEndpoint=true any config but the stack's (:func:`_promoted_config`), else one
    named as retraining names them; {} when it cannot be described."""
    import botocore.exceptions
    from scones_core.retraining.dataset import retraining_prefix

    sagemaker = session.client("sagemaker")
    name = parameters.get("EndpointName") or parameter_default("EndpointName")
    try:
        described = sagemaker.describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError:
        return {}
    if parameters.get("CreateEndpoint") == "true":
        return _promoted_config(session, sagemaker, stack_name, described)
    # An endpoint of its own: retraining still promotes into it, under a config it names.
    serving = str(described.get("EndpointConfigName", ""))
    return {"serving_config": serving} if serving.startswith(retraining_prefix(name)) else {}


def _promoted_config(
    session: Any, sagemaker: Any, stack_name: str, endpoint: dict[str, Any]
) -> dict[str, str]:
    """With CreateEndpoint=true, the endpoint config the stack created, when the endpoint
    now serves another one (retraining promoted a model), and that model's artifact."""
    import botocore.exceptions

    serving = str(endpoint.get("EndpointConfigName", ""))
    try:
        resource = session.client("cloudformation").describe_stack_resource(
            StackName=stack_name, LogicalResourceId=ENDPOINT_CONFIG_RESOURCE
        )["StackResourceDetail"]
        stack_config = str(resource.get("PhysicalResourceId", ""))
    except botocore.exceptions.ClientError:
        return {}
    # CloudFormation's physical id of an endpoint config is its ARN, whose name part
    # SageMaker writes in lower case.
    stack_name_part = stack_config.rsplit("/", 1)[-1]
    if not stack_config or not serving or stack_name_part.lower() == serving.lower():
        return {}
    found = {"serving_config": serving, "stack_config": stack_name_part}
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=serving)
        model_name = config["ProductionVariants"][0]["ModelName"]
        container = sagemaker.describe_model(ModelName=model_name)["PrimaryContainer"]
        if "ModelPackageName" in container:  # a model made from a registered version
            package = sagemaker.describe_model_package(
                ModelPackageName=container["ModelPackageName"]
            )
            container = package["InferenceSpecification"]["Containers"][0]
        found["serving_model_data"] = str(container["ModelDataUrl"])
    except (botocore.exceptions.ClientError, KeyError, IndexError):
        pass  # the warning still stands without the artifact's address
    return found


# The resources a deploy replaces when one of their parameters changes (CreateEndpoint=true):
# the model and endpoint config, and the endpoint itself (a new EndpointName makes a new
# endpoint from the stack's config).
_ENDPOINT_CONFIG_RESOURCES = ("SageMakerModel", ENDPOINT_CONFIG_RESOURCE, "SageMakerEndpoint")


def endpoint_config_parameters() -> list[str]:
    """The template parameters the stack's model, endpoint config and endpoint are made of:
    changing one makes CloudFormation replace the config (or the endpoint), and the
    endpoint serve the stack's model."""
    template = load_template()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("Ref"), str):
                found.add(node["Ref"])
            sub = node.get("Fn::Sub")
            text = sub if isinstance(sub, str) else sub[0] if isinstance(sub, list) else ""
            found.update(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in _ENDPOINT_CONFIG_RESOURCES:
        walk(template["Resources"][name]["Properties"])
    return sorted(found & set(template["Parameters"]))


def endpoint_advice(status: dict[str, str]) -> str | None:
    """A warning when images would end FAILED, or a deploy would undo a promotion, with
    what to do; None when all is well."""
    if "serving_config" in status:
        artifact = status.get("serving_model_data", "the promoted model's model.tar.gz")
        return (
            f"endpoint {status['endpoint']} serves {status['serving_config']} (retraining "
            f"promoted a model), not the stack's {status['stack_config']}. A deploy that "
            f"changes one of the endpoint's settings ({', '.join(endpoint_config_parameters())}) "
            "makes CloudFormation serve the stack's model again: to keep the promoted one, "
            f"deploy with ModelDataUrl={artifact}"
        )
    variant = None
    if "served_variants" in status:
        first = status["served_variants"].split(",")[0]
        variant = (
            f"endpoint {status['endpoint']} serves variant(s) {status['served_variants']}, "
            f"not the stack's EndpointVariantName={status['variant']}: the monitor would read "
            "no captured traffic (it lies under <endpoint>/<variant>/) and EndpointErrorAlarm "
            "would watch a variant that does not exist, so no retraining canary is rolled "
            f"back. Deploy with EndpointVariantName={first}"
        )
    if status.get("taken") == "true":
        return (
            f"an endpoint named {status['endpoint']} already exists and this stack did not "
            "create it (another stack's, or one made with `scones sagemaker deploy`): with "
            "CreateEndpoint=true CloudFormation would fail to create it (endpoint names are "
            "unique in an account and region) and roll back. Give this stack its own "
            f"EndpointName, or deploy with CreateEndpoint=false to call {status['endpoint']}"
        )
    capture = None
    if "expected_capture" in status:
        capture = (
            f"endpoint {status['endpoint']} captures its traffic into "
            f"{status['capture']} (sampling {status['capture_percent'] or '?'}%), not "
            f"{status['expected_capture']} at DataCaptureSamplingPercentage="
            f"{status['expected_capture_percent']}, where this stack's monitor reads it: "
            "every window with classified images would alert CAPTURE_MISSING, or count "
            "another share of the requests. If it is another stack's endpoint, give this stack "
            "its own EndpointName (both stacks' images would drive one monitor and one "
            "retraining). Otherwise redeploy its model with capture here: `scones sagemaker "
            f"deploy --stack {status['stack']} --update --take-over` (README, Deploy to AWS)"
        )
        variant = f"{variant}. Also, {capture}" if variant is not None else capture
    if status["status"] == "InService":
        return variant
    if status["status"] == "missing" and status["create_endpoint"] == "true":
        return (
            f"endpoint {status['endpoint']} does not exist yet: this deploy creates it "
            "(CreateEndpoint=true)"
        )
    if status["status"] == "missing":
        return (
            f"endpoint {status['endpoint']} does not exist: until it does, every uploaded image "
            "ends FAILED. Create it with `scones sagemaker deploy --model-data "
            "s3://.../model.tar.gz --image-uri <inference image> --role-arn <role> "
            f"--capture-bucket <ImageBucketName> --endpoint-name {status['endpoint']}`, or "
            "deploy with CreateEndpoint=true ModelImageUri=... ModelDataUrl=..., or point "
            "EndpointName at an endpoint you have (README, Deploy to AWS)"
        )
    waiting = (
        f"endpoint {status['endpoint']} is {status['status']}: images are classified once it is "
        "InService"
    )
    # Both matter: the endpoint's state first.
    return f"{waiting}. Also, {variant}" if variant is not None else waiting

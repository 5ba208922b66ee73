"""``scones sagemaker``: train on SageMaker and deploy the endpoint the workflow calls.

Subcommands:

- ``train-builtin``: the built-in image-classification algorithm on the channels
  ``scones prepare-data --upload`` wrote (as the original project trained);
- ``train-script``: the project's own PyTorch training in a framework container;
- ``deploy``: model + endpoint config with data capture + endpoint.

Defaults that describe the deployed stack (endpoint name, variant, instance type and
count, capture prefix and percentage, confidence threshold) come from ``template.yaml``;
``deploy --stack NAME`` takes them from that deployed stack's parameters instead, so the
endpoint is the one its workflow calls and its capture lands where its monitor reads.
Each command prints its result as JSON; ``--dry-run`` prints the requests instead of
sending them. AWS clients come from :func:`make_client`, which tests replace.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scones.cli.arguments import file_or_folder, hyperparameters, positive_int
from scones.cli.errors import CommandError, CommandFailed
from scones.template_params import TEMPLATE_PATH, parameter_default

Handler = Callable[[argparse.Namespace], dict[str, Any]]


def make_client(service: str, region: str | None) -> Any:
    """A boto3 client; tests replace this with stubbed clients."""
    import boto3

    return boto3.client(service, region_name=region)


def now_suffix() -> str:
    """The timestamp suffix of new resource names; tests replace this."""
    from scones.sagemaker.naming import timestamp_suffix

    return timestamp_suffix()


def _template_default(name: str) -> str | None:
    try:
        return parameter_default(name)
    except (FileNotFoundError, KeyError):
        return None


@dataclass(frozen=True)
class _Defaults:
    """Where ``deploy`` takes what the options leave out: the parameters and outputs of the
    deployed stack ``--stack`` names, else (``stack`` None) template.yaml's defaults. A
    parameter the stack lacks (deployed from an older template) takes the template's."""

    stack: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)

    def get(self, parameter: str) -> str | None:
        return self.parameters.get(parameter) or _template_default(parameter)

    @property
    def origin(self) -> str:
        return f"stack {self.stack}" if self.stack else str(TEMPLATE_PATH)


def _stack_defaults(args: argparse.Namespace) -> _Defaults:
    """The deployed stack's parameters and outputs when ``--stack`` names one."""
    if not args.stack:
        return _Defaults()
    from scones.deploy import DeployError, stack_facts

    cloudformation = make_client("cloudformation", args.region)
    try:
        outputs, parameters = stack_facts(cloudformation, args.stack)
    except DeployError as exc:
        raise CommandFailed(
            f"--stack: {exc} (in {cloudformation.meta.region_name}; another region: --region)"
        ) from exc
    return _Defaults(args.stack, parameters, outputs)


def _given_or_default(value: Any, flag: str, parameter: str, defaults: _Defaults) -> Any:
    """The option's value, else ``parameter`` as ``defaults`` give it (required)."""
    return _require(value or defaults.get(parameter), flag, f"no {parameter} in {defaults.origin}")


def _require(value: Any, flag: str, why: str) -> Any:
    if value is None or value == "":
        raise CommandError(f"{flag} is required: {why}")
    return value


# --- argument groups -----------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: the AWS configuration's)")
    parser.add_argument(
        "--role-arn", help="IAM role that SageMaker assumes (needs S3 access to the data)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the requests instead of sending them"
    )
    parser.add_argument(
        "--wait", action="store_true", help="block until the job or endpoint is done"
    )


def _job(parser: argparse.ArgumentParser, instance_type: str | None, prefix: str) -> None:
    parser.add_argument(
        "--data-uri",
        required=True,
        metavar="s3://BUCKET/PREFIX",
        help="where `scones prepare-data --upload` put the channels",
    )
    parser.add_argument(
        "--output-uri",
        required=True,
        metavar="s3://BUCKET/PREFIX",
        help="where SageMaker writes <job>/output/model.tar.gz",
    )
    parser.add_argument(
        "--instance-type",
        default=instance_type,
        help="training instance type"
        + ("" if instance_type else " (default: template.yaml's RetrainingInstanceType)"),
    )
    parser.add_argument("--instance-count", type=positive_int, default=1, help="training instances")
    parser.add_argument(
        "--volume-size-gb", type=positive_int, default=30, help="storage per instance"
    )
    parser.add_argument(
        "--max-runtime-seconds",
        type=positive_int,
        default=3 * 3600,
        help="the job is stopped after this",
    )
    parser.add_argument("--job-name-prefix", default=prefix, help="job name = <prefix>-<UTC time>")
    parser.add_argument(
        "--save-request",
        type=file_or_folder,
        metavar="FILE",
        help="also write the CreateTrainingJob request as JSON (the file that the template's "
        "RetrainingJobConfigS3Uri points at)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sagemaker",
        help="train on SageMaker and deploy the endpoint (needs an AWS account)",
        description="Train on SageMaker and deploy the endpoint that the workflow calls.",
    )
    commands = parser.add_subparsers(dest="sagemaker_command", metavar="COMMAND", required=True)

    builtin = commands.add_parser(
        "train-builtin",
        help="train the built-in image-classification algorithm",
        description=(
            "Start a training job of SageMaker's built-in image-classification algorithm "
            "(image_shape 3,32,32, 2 classes) on the train, validation, train_lst and "
            "validation_lst channels under --data-uri."
        ),
    )
    _common(builtin)
    _job(builtin, "ml.g4dn.xlarge", "scones-image-classification")
    builtin.add_argument(
        "--image-uri",
        help="algorithm image (default: image-classification:1 of --region, if known)",
    )
    samples = builtin.add_mutually_exclusive_group()
    samples.add_argument("--num-training-samples", type=int)
    samples.add_argument(
        "--prepared-dir",
        type=file_or_folder,
        help="count num_training_samples from <dir>/train.lst (default: build/data)",
    )
    builtin.add_argument(
        "--epochs", type=positive_int, default=30, help="the epochs hyperparameter"
    )
    builtin.add_argument(
        "--learning-rate", type=float, default=0.1, help="the learning_rate hyperparameter"
    )
    builtin.add_argument(
        "--mini-batch-size",
        type=positive_int,
        default=32,
        help="the mini_batch_size hyperparameter",
    )
    builtin.add_argument(
        "--use-pretrained-model", action="store_true", help="start from ImageNet weights"
    )
    builtin.add_argument(
        "--augmentation-type", choices=("crop", "crop_color", "crop_color_transform")
    )
    builtin.add_argument(
        "--num-layers", type=positive_int, help="ResNet depth (algorithm default if unset)"
    )
    builtin.set_defaults(handler=_handle(train_builtin))

    script = commands.add_parser(
        "train-script",
        help="train the project's PyTorch model in script mode",
        description=(
            "Bundle the project's Python package, upload it next to the job's output and start a "
            "script-mode training job on a PyTorch framework image; the train channel is "
            "<data-uri>/train/."
        ),
    )
    _common(script)
    # The retraining job's instance type (the same script-mode training), read when the
    # command runs: building the parser reads no template.
    _job(script, None, "scones-pytorch")
    script.add_argument(
        "--image-uri",
        help="PyTorch training image (required), e.g. in us-east-1 "
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:TAG",
    )
    script.add_argument(
        "--hyperparameter",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="passed to training as --NAME VALUE (epochs, members, lr, seed, ...); repeatable",
    )
    script.add_argument(
        "--requirements",
        type=file_or_folder,
        help="requirements.txt for the container (default: pins of the packages installed here)",
    )
    script.set_defaults(handler=_handle(train_script))

    deploy = commands.add_parser(
        "deploy",
        help="create the model, endpoint config (with data capture) and endpoint",
        description=(
            "Create a model and an endpoint config with data capture, then create the "
            "endpoint (or, with --update, switch an existing endpoint to the new config). "
            "The endpoint is described first: a name already taken (without --update), or "
            "no such endpoint (with --update), is refused before anything is created."
        ),
    )
    _common(deploy)
    deploy.add_argument(
        "--stack",
        metavar="NAME",
        help="the deployed CloudFormation stack whose workflow calls this endpoint: every "
        "default below comes from its parameters (explicit options still win), and capture "
        "goes to s3://<its ImageBucketName output>/<its DataCapturePrefix>; without it the "
        "defaults are template.yaml's",
    )
    source = deploy.add_mutually_exclusive_group()
    source.add_argument("--model-data", metavar="s3://.../model.tar.gz", help="model artifact")
    source.add_argument("--training-job", help="take the model artifact from this training job")
    deploy.add_argument("--image-uri", help="inference image (required)")
    deploy.add_argument("--endpoint-name", help="default: EndpointName of --stack/template.yaml")
    deploy.add_argument(
        "--instance-type", help="default: EndpointInstanceType of --stack/template.yaml"
    )
    deploy.add_argument(
        "--variant-name",
        help="production variant, where capture lands and the error alarm looks "
        "(default: EndpointVariantName of --stack/template.yaml)",
    )
    deploy.add_argument(
        "--instance-count",
        type=positive_int,
        help="endpoint instances (default: EndpointInstanceCount of --stack/template.yaml)",
    )
    deploy.add_argument(
        "--capture-uri",
        metavar="s3://BUCKET/PREFIX",
        help="data capture destination (default with --stack: its bucket and DataCapturePrefix)",
    )
    deploy.add_argument(
        "--capture-bucket",
        help="capture to s3://BUCKET/<DataCapturePrefix of --stack/template.yaml> (the stack's "
        "bucket)",
    )
    deploy.add_argument(
        "--sampling-percentage",
        type=int,
        help="share of requests captured, 0-100 (default: DataCaptureSamplingPercentage of "
        "--stack/template.yaml)",
    )
    deploy.add_argument("--no-capture", action="store_true", help="deploy without data capture")
    deploy.add_argument(
        "--update", action="store_true", help="update an existing endpoint instead of creating it"
    )
    deploy.add_argument(
        "--take-over",
        action="store_true",
        help="with --update: update the endpoint even though it captures into another "
        "bucket than this deploy's (another stack's endpoint of the same name)",
    )
    deploy.add_argument("--name-prefix", help="model/config name prefix (default: endpoint name)")
    deploy.set_defaults(handler=_handle(deploy_command))


def _handle(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Run ``handler``, turning launch and AWS errors into clear command errors."""

    def run(args: argparse.Namespace) -> int:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        from scones.sagemaker.errors import LaunchError, ResourceFailedError

        try:
            result = handler(args)
        except LaunchError as exc:
            raise CommandError(str(exc)) from exc
        except ResourceFailedError as exc:
            raise CommandFailed(str(exc)) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise CommandFailed(
                f"{exc.operation_name} failed: {error.get('Code')}: {error.get('Message')}"
            ) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise CommandFailed(f"AWS call failed: {exc}") from exc
        print(json.dumps(result, indent=2, default=str))
        return 0

    return run


# --- handlers ------------------------------------------------------------------------------


def _resources(args: argparse.Namespace) -> Any:
    from scones.sagemaker.training import Resources

    instance_type = args.instance_type or _template_default("RetrainingInstanceType")
    if not instance_type:
        raise CommandError("--instance-type is needed: no template.yaml gives its default")
    return Resources(
        instance_type=instance_type,
        instance_count=args.instance_count,
        volume_size_gb=args.volume_size_gb,
        max_runtime_seconds=args.max_runtime_seconds,
    )


def _s3(value: str, flag: str) -> Any:
    from scones.sagemaker.errors import LaunchError
    from scones.sagemaker.s3 import S3Uri

    try:
        return S3Uri.parse(value)
    except LaunchError as exc:
        raise CommandError(f"{flag}: {exc}") from exc


def _job_name(prefix: str) -> str:
    from scones.sagemaker.naming import resource_name

    return resource_name(prefix, now_suffix())


def _role(args: argparse.Namespace) -> str:
    return str(_require(args.role_arn, "--role-arn", "the IAM role SageMaker assumes"))


def train_builtin(args: argparse.Namespace) -> dict[str, Any]:
    from scones.cli.prepare_data import DEFAULT_OUT
    from scones.sagemaker import training
    from scones.sagemaker.channels import channel_uris, count_lst_lines

    role = _role(args)
    data, output = _s3(args.data_uri, "--data-uri"), _s3(args.output_uri, "--output-uri")
    samples = args.num_training_samples
    if samples is None:
        samples = count_lst_lines((args.prepared_dir or DEFAULT_OUT) / "train.lst")
    sagemaker = None
    image = args.image_uri
    if image is None:
        sagemaker = make_client("sagemaker", args.region)
        image = training.builtin_image_uri(sagemaker.meta.region_name)
    request = training.builtin_training_request(
        job_name=_job_name(args.job_name_prefix),
        image_uri=image,
        role_arn=role,
        channels=channel_uris(data),
        output=output,
        hyperparameters=training.BuiltinHyperparameters(
            num_training_samples=samples,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            mini_batch_size=args.mini_batch_size,
            use_pretrained_model=args.use_pretrained_model,
            augmentation_type=args.augmentation_type,
            num_layers=args.num_layers,
        ),
        resources=_resources(args),
    )
    _save_request(args.save_request, request)
    if args.dry_run:
        return {"CreateTrainingJob": request}
    sagemaker = sagemaker or make_client("sagemaker", args.region)
    return _start(sagemaker, request, args.wait)


def _save_request(path: Path | None, request: dict[str, Any]) -> None:
    if path is None:
        return
    from scones.safe_files import write_text_atomically

    try:
        write_text_atomically(path, json.dumps(request, indent=2) + "\n")
    except OSError as exc:
        raise CommandError(f"--save-request: cannot write {path}: {exc}") from exc


def _start(sagemaker: Any, request: dict[str, Any], wait: bool) -> dict[str, Any]:
    from scones.sagemaker.training import start_training_job, wait_for_training_job

    name = request["TrainingJobName"]
    result: dict[str, Any] = {
        "training_job_name": name,
        "training_job_arn": start_training_job(sagemaker, request),
    }
    if wait:
        result["model_data"] = wait_for_training_job(sagemaker, name)
    return result


def train_script(args: argparse.Namespace) -> dict[str, Any]:
    from scones.sagemaker import source_bundle, training

    role = _role(args)
    image = _require(args.image_uri, "--image-uri", "the PyTorch framework training image")
    data, output = _s3(args.data_uri, "--data-uri"), _s3(args.output_uri, "--output-uri")
    values = hyperparameters(args.hyperparameter)
    if "threshold" not in values:
        threshold = _template_default("ConfidenceThreshold")
        values["threshold"] = float(
            _require(threshold, "-p threshold=VALUE", f"no ConfidenceThreshold in {TEMPLATE_PATH}")
        )
    from scones.sagemaker.entry_point import check_hyperparameters

    try:
        check_hyperparameters(values)  # what the job's program would refuse, before it is paid
    except ValueError as exc:
        raise CommandError(f"--hyperparameter: the training program refuses it: {exc}") from exc
    requirements = None
    if args.requirements is not None:
        try:
            requirements = args.requirements.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"--requirements: cannot read {args.requirements}: {exc}") from exc
    bundle = source_bundle.build_bundle(requirements)
    job_name = _job_name(args.job_name_prefix)
    bundle_uri = output.join(job_name, "source", source_bundle.BUNDLE_NAME)
    sagemaker = make_client("sagemaker", args.region)
    request = training.script_training_request(
        job_name=job_name,
        image_uri=image,
        role_arn=role,
        train_uri=data.join("train").prefix_uri,
        hyperparameters=training.script_hyperparameters(
            values,
            program=source_bundle.PROGRAM,
            submit_directory=bundle_uri,
            region=sagemaker.meta.region_name,
            job_name=job_name,
        ),
        output=output,
        resources=_resources(args),
    )
    _save_request(args.save_request, request)
    if args.dry_run:
        return {"source_bundle": str(bundle_uri), "CreateTrainingJob": request}
    source_bundle.upload_bundle(make_client("s3", args.region), bundle, bundle_uri)
    return {"source_bundle": str(bundle_uri), **_start(sagemaker, request, args.wait)}


def _capture(args: argparse.Namespace, defaults: _Defaults) -> Any:
    from scones.sagemaker.hosting import DataCapture

    if args.no_capture:
        if args.capture_uri or args.capture_bucket:
            raise CommandError("--no-capture contradicts --capture-uri/--capture-bucket")
        if args.sampling_percentage is not None:
            raise CommandError("--no-capture contradicts --sampling-percentage")
        return None
    if args.capture_uri and args.capture_bucket:
        raise CommandError("give --capture-uri or --capture-bucket, not both")
    bucket = args.capture_bucket
    if not bucket and not args.capture_uri and defaults.stack:
        bucket = _require(
            defaults.outputs.get("ImageBucketName"),
            "--capture-uri or --capture-bucket",
            f"stack {defaults.stack} has no ImageBucketName output (did its last deployment "
            "complete?)",
        )
    if bucket:
        prefix = defaults.get("DataCapturePrefix")
        destination = _s3(f"s3://{bucket}/{prefix or ''}", "--capture-bucket")
    else:
        uri = _require(
            args.capture_uri,
            "--capture-uri or --capture-bucket",
            "where the endpoint's captured traffic goes (or pass --no-capture)",
        )
        destination = _s3(uri, "--capture-uri")
    percentage = args.sampling_percentage
    if percentage is None:
        default = defaults.get("DataCaptureSamplingPercentage")
        percentage = int(float(default)) if default is not None else 100
    return DataCapture(destination=destination, sampling_percentage=percentage)


def _capture_owner(args: argparse.Namespace, capture: Any, defaults: _Defaults) -> str | None:
    """The bucket an endpoint that ``--update`` updates must capture into, if it
    captures: this deploy's, else (``--no-capture``) the ``--stack``'s. Two stacks in one
    account may name the same endpoint; one capturing elsewhere is the other's. None: no
    check (``--take-over``, or nothing to compare with)."""
    if not args.update or args.take_over:
        return None
    if capture is not None:
        return str(capture.destination.bucket)
    return defaults.outputs.get("ImageBucketName") if args.stack else None


def deploy_command(args: argparse.Namespace) -> dict[str, Any]:
    from scones.sagemaker import hosting
    from scones.sagemaker.naming import check_name, resource_name

    role = _role(args)
    image = _require(args.image_uri, "--image-uri", "the inference image that serves the model")
    defaults = _stack_defaults(args)
    endpoint = check_name(
        _given_or_default(args.endpoint_name, "--endpoint-name", "EndpointName", defaults)
    )
    instance_type = _given_or_default(
        args.instance_type, "--instance-type", "EndpointInstanceType", defaults
    )
    # A variant is named like any SageMaker resource (ProductionVariant.VariantName).
    variant = check_name(
        _given_or_default(args.variant_name, "--variant-name", "EndpointVariantName", defaults)
    )
    instance_count = int(
        _given_or_default(
            args.instance_count, "--instance-count", "EndpointInstanceCount", defaults
        )
    )
    capture = _capture(args, defaults)
    if args.take_over and not args.update:
        raise CommandError("--take-over is for --update")
    sagemaker = None
    model_data = args.model_data
    if args.training_job:
        sagemaker = make_client("sagemaker", args.region)
        job = sagemaker.describe_training_job(TrainingJobName=args.training_job)
        if job["TrainingJobStatus"] != "Completed":
            raise CommandError(
                f"training job {args.training_job} is {job['TrainingJobStatus']}, not Completed"
            )
        model_data = job["ModelArtifacts"]["S3ModelArtifacts"]
    model_data = _require(model_data, "--model-data or --training-job", "the model artifact")
    _s3(model_data, "--model-data")
    suffix = now_suffix()
    prefix = args.name_prefix or endpoint
    model_name = resource_name(prefix, suffix)
    config_name = resource_name(f"{prefix}-config", suffix)
    plan = hosting.DeployPlan(
        model=hosting.model_request(
            model_name=model_name, image_uri=image, model_data_url=model_data, role_arn=role
        ),
        endpoint_config=hosting.endpoint_config_request(
            config_name=config_name,
            model_name=model_name,
            instance_type=instance_type,
            instance_count=instance_count,
            capture=capture,
            variant_name=variant,
        ),
        endpoint=hosting.endpoint_request(endpoint_name=endpoint, config_name=config_name),
    )
    if args.dry_run:
        return {
            "CreateModel": plan.model,
            "CreateEndpointConfig": plan.endpoint_config,
            "UpdateEndpoint" if args.update else "CreateEndpoint": plan.endpoint,
        }
    sagemaker = sagemaker or make_client("sagemaker", args.region)
    result: dict[str, Any] = hosting.deploy(
        sagemaker, plan, update=args.update, capture_bucket=_capture_owner(args, capture, defaults)
    ).as_dict()
    if args.wait:
        result["endpoint_status"] = hosting.wait_for_endpoint(
            sagemaker, endpoint, config_name=config_name
        )
    return result

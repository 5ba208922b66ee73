"""``scones prepare-data``: CIFAR-100 bicycle/motorcycle images -> PNG folders, .lst files, S3."""

from __future__ import annotations

import argparse
import json
from typing import Any

from scones.cli.arguments import file_or_folder, output_folder, whole_between
from scones.cli.errors import CommandError, CommandFailed
from scones.template_params import PROJECT_ROOT

DEFAULT_SOURCE = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"
DEFAULT_OUT = PROJECT_ROOT / "build" / "data"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare-data",
        help="prepare the bicycle/motorcycle images (CIFAR-100 labels 8 and 48) for training",
        description=(
            "Read the official cifar-100-python.tar.gz (or its extracted folder, or a PNG "
            "folder with manifest.csv), keep fine labels 8 (bicycle) and 48 (motorcycle), "
            "hold out a seeded stratified validation split from CIFAR's train split, and "
            "write <out>/<split>/<class>/*.png, <split>.lst and manifest.csv. With --upload, "
            "put the train/validation channels on S3 for SageMaker."
        ),
    )
    parser.add_argument(
        "--source",
        type=file_or_folder,
        default=DEFAULT_SOURCE,
        help="cifar-100-python.tar.gz, its extracted folder, or a PNG folder with manifest.csv "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=DEFAULT_OUT,
        help="folder to write (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of each class held out from CIFAR's train split (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=whole_between(0, 2**32 - 1),
        default=0,
        help="seed of the validation split (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a previous output in --out"
    )
    parser.add_argument(
        "--upload",
        metavar="s3://BUCKET/PREFIX",
        help="also upload train/, validation/, train_lst/, validation_lst/ under this prefix",
    )
    parser.add_argument("--region", help="AWS region of the S3 client (default: AWS config)")
    parser.set_defaults(handler=run)


def make_s3_client(region: str | None) -> Any:
    """The S3 client for --upload; tests replace this."""
    import boto3

    return boto3.client("s3", region_name=region)


def has_credentials(region: str | None) -> bool:
    """Whether boto3 finds AWS credentials (environment, profile, SSO, instance role)."""
    import boto3

    return boto3.Session(region_name=region).get_credentials() is not None


def run(args: argparse.Namespace) -> int:
    from scones.model.dataset import DatasetError, existing_outputs, prepare_dataset
    from scones.sagemaker.channels import upload_prepared
    from scones.sagemaker.errors import LaunchError
    from scones.sagemaker.s3 import S3Uri

    try:
        target = S3Uri.parse(args.upload) if args.upload else None
    except LaunchError as exc:
        raise CommandError(f"--upload: {exc}") from exc
    if not args.source.exists():
        raise CommandError(f"--source not found: {args.source}")
    # The AWS side of --upload is checked before minutes of preparing, not after.
    s3 = make_s3_client(args.region) if target is not None else None
    if s3 is not None and not has_credentials(args.region):
        raise CommandError(
            f"--upload {target}: no AWS credentials are configured (aws configure, "
            "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    stale = existing_outputs(args.out)
    if stale and not args.overwrite:
        raise CommandError(
            f"{args.out} already holds a prepared dataset ({stale[0].name}, ...); "
            "pass --overwrite to replace it"
        )
    try:
        prepared = prepare_dataset(
            args.source,
            args.out,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            replace_existing=args.overwrite,
        )
    except DatasetError as exc:
        raise CommandError(str(exc)) from exc
    summary: dict[str, Any] = {"out": str(prepared.root), "counts": prepared.counts}
    if target is not None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            channels = upload_prepared(s3, prepared.root, target)
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise CommandFailed(f"upload to {target} failed: {exc}") from exc
        summary["channels"] = channels.as_dict()
    print(json.dumps(summary, indent=2))
    return 0

"""The S3 layout of a prepared dataset, as SageMaker training channels read it.

The built-in image-classification algorithm in "lst" mode takes four channels,
all with content type ``application/x-image``: ``train`` and ``validation`` hold
the images, ``train_lst`` and ``validation_lst`` the ``.lst`` files whose paths are
relative to the image channel. :func:`upload_prepared` writes exactly this layout
under one prefix, and :func:`channel_uris` names it without uploading anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scones.sagemaker.errors import LaunchError
from scones.sagemaker.s3 import S3Uri, upload_directory, upload_file

UPLOADED_SPLITS = ("train", "validation")
"""Only these go to S3; CIFAR-100's test split stays local as the held-out set."""


@dataclass(frozen=True)
class ChannelUris:
    train: str
    validation: str
    train_lst: str
    validation_lst: str

    def as_dict(self) -> dict[str, str]:
        return {
            "train": self.train,
            "validation": self.validation,
            "train_lst": self.train_lst,
            "validation_lst": self.validation_lst,
        }


def channel_uris(prefix: S3Uri) -> ChannelUris:
    """Where each channel lives under ``prefix`` (S3 prefixes, with trailing slashes)."""
    return ChannelUris(
        train=prefix.join("train").prefix_uri,
        validation=prefix.join("validation").prefix_uri,
        train_lst=prefix.join("train_lst").prefix_uri,
        validation_lst=prefix.join("validation_lst").prefix_uri,
    )


def upload_prepared(s3_client: Any, prepared_dir: Path, prefix: S3Uri) -> ChannelUris:
    """Upload the output of ``scones prepare-data`` into the four-channel layout."""
    for split in UPLOADED_SPLITS:
        images, lst = prepared_dir / split, prepared_dir / f"{split}.lst"
        if not images.is_dir() or not lst.is_file():
            raise LaunchError(
                f"{prepared_dir} is not a prepared dataset: {split}/ or {split}.lst is missing "
                "(run `scones prepare-data` first)"
            )
        upload_directory(s3_client, images, prefix.join(split))
        upload_file(s3_client, lst, prefix.join(f"{split}_lst", lst.name))
    return channel_uris(prefix)


def count_lst_lines(path: Path) -> int:
    """The number of images a ``.lst`` file lists (the algorithm's ``num_training_samples``)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError as exc:
        raise LaunchError(f".lst file not found: {path}") from exc

"""Labelled image folders (``<data>/<label>/*.png``) and the seeded, stratified split.

Labels always come from the folder an image sits in, never from its file name:
CIFAR-100 file names are search keywords (``bike_s_*.png`` holds motorcycles too).
Training and evaluation both call :func:`stratified_split` with the seed recorded
in ``model.json``, so they agree on which images were held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scones_core.errors import ImageRejected
from scones_core.image_files import FILE_SUFFIXES, is_image_file_name
from scones_core.training_split import (
    TRAINED_INPUT_SIZE,
    TrainingSplit,
    held_out_count,
    split_refusal,
)

from scones.model.artifact import decode_image, images_to_tensor

# File names a class folder's images may have (the content is still what decides).
IMAGE_SUFFIXES = tuple(suffix for names in FILE_SUFFIXES.values() for suffix in names)


class DataError(ValueError):
    """The data folder is missing, empty or holds something that is not an image."""


@dataclass(frozen=True)
class LabelledImages:
    """Images as float32 NCHW in [0, 1] (as the served model receives them) plus labels."""

    pixels: np.ndarray  # float32 [N, 3, H, W]
    targets: np.ndarray  # int64 [N], index into ``labels``
    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(
            pixels=self.pixels[indices],
            targets=self.targets[indices],
            paths=tuple(self.paths[int(i)] for i in indices),
            labels=self.labels,
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.labels))
        return {label: int(counts[i]) for i, label in enumerate(self.labels)}


def class_root(data_dir: Path, labels: Sequence[str]) -> Path:
    """The folder that holds one sub-folder per label: ``data_dir`` or ``data_dir/train``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        if data_dir.exists():
            raise DataError(f"{data_dir} is a file, not a data folder")
        raise DataError(f"data folder not found: {data_dir}")
    for candidate in (data_dir, data_dir / "train"):
        if all((candidate / label).is_dir() for label in labels):
            return candidate
    wanted = ", ".join(f"{label}/" for label in labels)
    for candidate in (data_dir, data_dir / "train"):
        missing = [f"{label}/" for label in labels if not (candidate / label).is_dir()]
        if len(missing) < len(labels):  # some label folders are there: name the others
            raise DataError(
                f"{candidate} has no {', '.join(missing)} folder: it needs one folder per "
                f"label ({wanted})"
            )
    raise DataError(f"{data_dir} has no class folders ({wanted}), neither directly nor in train/")


def images_in(folder: Path) -> list[Path]:
    """The image files of one class folder (by name, as the retraining dataset step counts
    them: ``image_files.is_image_file_name``), sorted so the order never depends on the OS."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file_name(p.name))


def list_images(data_dir: Path, labels: Sequence[str]) -> list[tuple[Path, int]]:
    """``(path, label index)`` for every image, sorted so the order never depends on the OS."""
    root = class_root(data_dir, labels)
    items: list[tuple[Path, int]] = []
    for index, label in enumerate(labels):
        files = images_in(root / label)
        if not files:
            raise DataError(f"class folder {root / label} holds no images ({IMAGE_SUFFIXES})")
        items.extend((path, index) for path in files)
    return items


def list_labelled(folder: Path, labels: Sequence[str]) -> tuple[list[tuple[Path, int]], list[str]]:
    """Images people labelled: ``(path, label index)`` under each ``<label>/`` that exists
    (a reviewer may have labelled one class only), and the other folders, left out as the
    retraining dataset step leaves them out. ``DataError`` when no image is there at all."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"labelled folder not found: {root}")
    items: list[tuple[Path, int]] = []
    for index, label in enumerate(labels):
        if (root / label).is_dir():
            items.extend((path, index) for path in images_in(root / label))
    others = sorted(f"{p.name}/" for p in root.iterdir() if p.is_dir() and p.name not in labels)
    if not items:
        wanted = " or ".join(f"{label}/" for label in labels)
        found = f" (it has {', '.join(others)})" if others else ""
        raise DataError(f"{root} holds no images in {wanted}{found}")
    return items, others


def load_images(
    data_dir: Path, labels: Sequence[str], input_size: tuple[int, int] = TRAINED_INPUT_SIZE
) -> LabelledImages:
    """Decode every image of every class folder through the image rules, then the
    model's preprocessing: exactly what the workflow and the server do."""
    items = list_images(data_dir, labels)
    # Each image becomes its model-sized input at once: a folder of camera photos (labelled
    # uploads) held decoded until the last is read would take ~50 MB per 12 MP photo.
    inputs: list[np.ndarray] = []
    for path, _ in items:
        try:
            decoded = decode_image(path.read_bytes(), input_size)
        except (OSError, ImageRejected) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from exc
        inputs.append(images_to_tensor([decoded], input_size))
    return LabelledImages(
        pixels=np.concatenate(inputs) if inputs else images_to_tensor([], input_size),
        targets=np.array([index for _, index in items], dtype=np.int64),
        paths=tuple(path for path, _ in items),
        labels=tuple(labels),
    )


def refuse_small_classes(data_dir: Path, labels: Sequence[str], split: TrainingSplit) -> None:
    """Name each class too small to split and fold, before any image is decoded."""
    counts = dict.fromkeys(labels, 0)
    for _, index in list_images(data_dir, labels):
        counts[labels[index]] += 1
    small = split.too_small(counts)
    if small:
        raise DataError(f"too few images to train on in {data_dir}: {'; '.join(small)}")


def stratified_split(
    targets: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held out); each class gives ``round(fraction * n)`` images."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        members = members[rng.permutation(len(members))]
        if (why := split_refusal(len(members), fraction, folds=1)) is not None:
            raise ValueError(f"class {int(cls)} {why}")
        n_held = held_out_count(len(members), fraction)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def stratified_folds(targets: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number (0..folds-1) of every index, with each class spread evenly over folds."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(targets), dtype=np.int64)
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        if len(members) < folds:
            raise ValueError(
                f"class {int(cls)} has {len(members)} images, fewer than {folds} folds"
            )
        members = members[rng.permutation(len(members))]
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def fingerprint(paths: Sequence[Path], root: Path) -> str:
    """SHA-256 over the sorted relative paths: names a split so evaluation can check it."""
    digest = hashlib.sha256()
    for name in sorted(p.relative_to(root).as_posix() for p in paths):
        digest.update(name.encode("utf-8") + b"\n")
    return digest.hexdigest()

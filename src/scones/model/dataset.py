"""Prepare the bicycle/motorcycle subset of CIFAR-100 for training.

The images come from CIFAR-100: Alex Krizhevsky, *Learning Multiple Layers of
Features from Tiny Images*, Technical Report, University of Toronto, 2009
(https://www.cs.toronto.edu/~kriz/cifar.html).

Three inputs give the same output:

- the official ``cifar-100-python.tar.gz`` (read in place, never extracted);
- that archive already extracted (a folder holding ``train``, ``test``, ``meta``);
- a PNG folder laid out as ``<split>/<class>/*.png`` plus ``manifest.csv``, such
  as the bundled ``data/cifar100-bicycle-motorcycle`` or a previous output.

The output is PNG folders ``<out>/<split>/<class>/<filename>``, one SageMaker
image-classification ``<split>.lst`` per split (``index<TAB>label<TAB>path``,
where the path is relative to ``<out>/<split>/``) and a ``manifest.csv`` in the
bundled data's format, so an output folder is also a valid input.
"""

from __future__ import annotations

import csv
import hashlib
import io
import pickle
import shutil
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from scones_core.training_split import split_refusal

from scones.model.folders import stratified_split as training_split
from scones.model.recipe import DEFAULT_LABELS

FINE_LABELS: Mapping[int, str] = {8: "bicycle", 48: "motorcycle"}
"""CIFAR-100 fine label -> class name, for the two classes kept."""

ARCHIVE_DIR = "cifar-100-python"
IMAGE_SHAPE = (32, 32, 3)
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "split",
    "class",
    "cifar100_fine_label",
    "cifar100_row_index",
    "filename",
    "sha256_file",
    "sha256_rgb_pixels",
)
OUTPUT_SPLITS = ("train", "validation", "test")
"""``train`` and ``validation`` come from CIFAR's train split; ``test`` is CIFAR's test split."""

_PICKLE_SPLITS = ("train", "test")
_REQUIRED_KEYS = (b"data", b"fine_labels", b"filenames")


class DatasetError(ValueError):
    """The input is missing, unreadable or not in the expected format."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One kept CIFAR-100 image and where it came from."""

    source_split: str  # "train" or "test": the CIFAR-100 split the image belongs to
    class_name: str
    fine_label: int
    row_index: int  # row of the image in the CIFAR-100 pickle of its split
    filename: str
    pixels: np.ndarray  # uint8, shape (32, 32, 3), RGB

    @property
    def label(self) -> int:
        """The ``.lst`` label: the class's index in the model's labels (DEFAULT_LABELS)."""
        return DEFAULT_LABELS.index(self.class_name)


@dataclass(frozen=True)
class PreparedDataset:
    """What :func:`write_dataset` wrote."""

    root: Path
    counts: dict[str, dict[str, int]]  # split -> class -> number of images


def sha256_pixels(pixels: np.ndarray) -> str:
    """SHA-256 of the raw HWC RGB bytes, as in the bundled manifest's ``sha256_rgb_pixels``."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


# --- reading the official pickles ------------------------------------------------------


class _CifarUnpickler(pickle.Unpickler):
    """Unpickle CIFAR batches without running arbitrary code.

    The official pickles hold only dicts, lists, byte strings, ints and one numpy
    array, so only the globals needed to rebuild that array are allowed.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(*target)


def _load_pickle(handle: IO[bytes], source: str) -> dict[bytes, Any]:
    try:
        # encoding="bytes" reads the Python 2 pickles as the original project did.
        batch = _CifarUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DatasetError(f"{source} is not a CIFAR-100 pickle: {exc}") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{source} holds a {type(batch).__name__}, expected a dict")
    return {key.encode() if isinstance(key, str) else key: value for key, value in batch.items()}


def _samples_from_batch(batch: dict[bytes, Any], split: str, source: str) -> list[Sample]:
    missing = [key.decode() for key in _REQUIRED_KEYS if key not in batch]
    if missing:
        raise DatasetError(f"{source} lacks the key(s) {', '.join(missing)}")
    data, fine_labels, filenames = (batch[key] for key in _REQUIRED_KEYS)
    row_bytes = int(np.prod(IMAGE_SHAPE))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise DatasetError(f"{source}: 'data' must be a 2-D uint8 array")
    if data.shape[1] != row_bytes:
        raise DatasetError(f"{source}: 'data' rows have {data.shape[1]} bytes, not {row_bytes}")
    if not len(fine_labels) == len(filenames) == data.shape[0]:
        raise DatasetError(
            f"{source}: {data.shape[0]} images but {len(fine_labels)} fine labels "
            f"and {len(filenames)} file names"
        )
    samples = []
    for row, fine_label in enumerate(fine_labels):
        class_name = FINE_LABELS.get(int(fine_label))
        if class_name is None:
            continue
        # Each row is 1024 red, then 1024 green, then 1024 blue bytes of a 32x32 image.
        pixels = np.ascontiguousarray(data[row].reshape(3, 32, 32).transpose(1, 2, 0))
        samples.append(
            Sample(
                source_split=split,
                class_name=class_name,
                fine_label=int(fine_label),
                row_index=row,
                filename=_safe_filename(filenames[row], source),
                pixels=pixels,
            )
        )
    return samples


def _safe_filename(raw: bytes | str, source: str) -> str:
    name = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else str(raw)
    if not name or "/" in name or "\\" in name or name in {".", ".."} or "\0" in name:
        raise DatasetError(f"{source}: unsafe image file name {name!r}")
    return name


def _check_meta(batch: dict[bytes, Any], source: str) -> None:
    """Confirm that fine labels 8 and 48 really are bicycle and motorcycle."""
    names = batch.get(b"fine_label_names")
    if names is None:
        raise DatasetError(f"{source} lacks the key fine_label_names")
    for fine_label, class_name in FINE_LABELS.items():
        found = names[fine_label] if fine_label < len(names) else None
        found = found.decode() if isinstance(found, bytes) else found
        if found != class_name:
            raise DatasetError(
                f"{source}: fine label {fine_label} is {found!r}, expected {class_name!r}"
            )


def _check_member_name(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name:
        raise DatasetError(f"{archive} has an unsafe member name {member.name!r}")
    if (member.issym() or member.islnk()) and (
        PurePosixPath(member.linkname).is_absolute() or ".." in PurePosixPath(member.linkname).parts
    ):
        raise DatasetError(f"{archive} has a link {member.name!r} pointing outside the archive")


def load_cifar_archive(archive: Path) -> list[Sample]:
    """The kept images of ``cifar-100-python.tar.gz``, read from the archive in memory."""
    if not archive.is_file():
        raise DatasetError(f"CIFAR-100 archive not found: {archive}")
    opened = False
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            opened = True
            members = {}
            for member in tar.getmembers():
                _check_member_name(member, archive)
                members[PurePosixPath(member.name).as_posix()] = member
            samples: list[Sample] = []
            meta = members.get(f"{ARCHIVE_DIR}/meta")
            if meta is not None:
                _check_meta(_read_member(tar, meta, archive), f"{archive}:{meta.name}")
            for split in _PICKLE_SPLITS:
                name = f"{ARCHIVE_DIR}/{split}"
                if name not in members:
                    raise DatasetError(f"{archive} has no member {name!r}")
                batch = _read_member(tar, members[name], archive)
                samples += _samples_from_batch(batch, split, f"{archive}:{name}")
            return samples
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if not opened and isinstance(exc, tarfile.ReadError):
            reason = "no compression it may have (plain, gzip, bz2 or xz) opens it"  # not the list
        else:
            reason = " ".join(str(exc).split())
        raise DatasetError(f"{archive} is not a readable tar archive: {reason}") from exc


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> dict[bytes, Any]:
    handle = tar.extractfile(member) if member.isreg() else None
    if handle is None:
        raise DatasetError(f"{archive}: member {member.name!r} is not a regular file")
    # Read first, so a damaged archive is reported as such and not as a bad pickle.
    with handle:
        data = handle.read()
    return _load_pickle(io.BytesIO(data), f"{archive}:{member.name}")


def load_cifar_directory(directory: Path) -> list[Sample]:
    """The kept images of an extracted archive (``directory`` or its ``cifar-100-python``)."""
    if (directory / ARCHIVE_DIR).is_dir():
        directory = directory / ARCHIVE_DIR
    samples: list[Sample] = []
    if (directory / "meta").is_file():
        with (directory / "meta").open("rb") as handle:
            _check_meta(_load_pickle(handle, str(directory / "meta")), str(directory / "meta"))
    for split in _PICKLE_SPLITS:
        path = directory / split
        if not path.is_file():
            if split == "train":
                raise DatasetError(f"no CIFAR-100 'train' pickle in {directory}")
            continue
        with path.open("rb") as handle:
            samples += _samples_from_batch(_load_pickle(handle, str(path)), split, str(path))
    return samples


# --- reading a PNG folder --------------------------------------------------------------


def load_png_folder(directory: Path) -> list[Sample]:
    """The images listed in ``directory/manifest.csv``, checked against their pixel hashes."""
    manifest = directory / MANIFEST_NAME
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise DatasetError(f"no {MANIFEST_NAME} in {directory}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{manifest} is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise DatasetError(f"{manifest} is not a readable CSV file: {exc}") from exc
    except OSError as exc:
        raise DatasetError(f"{manifest} cannot be read: {exc}") from exc
    samples = []
    for number, row in enumerate(rows, start=2):
        where = f"{manifest}, line {number}"
        try:
            split, class_name = row["split"], row["class"]
            fine_label, row_index = int(row["cifar100_fine_label"]), int(row["cifar100_row_index"])
            filename, expected = row["filename"], row["sha256_rgb_pixels"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: missing or malformed column ({exc!r})") from exc
        if split not in OUTPUT_SPLITS:
            raise DatasetError(f"{where}: unknown split {split!r}")
        if FINE_LABELS.get(fine_label) != class_name:
            raise DatasetError(f"{where}: class {class_name!r} does not match fine label")
        filename = _safe_filename(filename, where)
        path = directory / split / class_name / filename
        pixels = _read_png(path)
        if sha256_pixels(pixels) != expected:
            raise DatasetError(f"{path}: pixels do not match sha256_rgb_pixels in {manifest}")
        samples.append(
            Sample(
                source_split="test" if split == "test" else "train",
                class_name=class_name,
                fine_label=fine_label,
                row_index=row_index,
                filename=filename,
                pixels=pixels,
            )
        )
    if not samples:
        raise DatasetError(f"{manifest} lists no images")
    return samples


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DatasetError(f"image listed in the manifest is missing: {path}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable image: {exc}") from exc
    if pixels.shape != IMAGE_SHAPE:
        raise DatasetError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, expected 32x32")
    return pixels


def load_source(source: Path) -> list[Sample]:
    """Load whichever of the three inputs ``source`` is."""
    if source.is_dir():
        if (source / MANIFEST_NAME).is_file():
            return load_png_folder(source)
        if (source / "train").is_file() or (source / ARCHIVE_DIR).is_dir():
            return load_cifar_directory(source)
        raise DatasetError(
            f"{source} is neither a PNG folder with {MANIFEST_NAME} nor an extracted "
            f"{ARCHIVE_DIR} folder"
        )
    return load_cifar_archive(source)


# --- splitting and writing -------------------------------------------------------------


def stratified_split(
    samples: Iterable[Sample], validation_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``validation_fraction`` of each class: exactly the images ``scones train``
    holds out of the written ``train/`` folder with the same seed and fraction.

    One split for both (``model.folders.stratified_split``), over the images in the order
    training lists them (class by class, files by name), so ``validation/`` is the
    model's own validation split, never images it was trained on, and the result does
    not depend on the order of ``samples``.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DatasetError(
            f"validation fraction must be between 0 and 1, got {validation_fraction}"
        )
    ordered = sorted(samples, key=lambda s: (s.label, s.filename))
    for class_name in DEFAULT_LABELS:
        count = sum(s.class_name == class_name for s in ordered)
        if (why := split_refusal(count, validation_fraction, folds=1)) is not None:
            raise DatasetError(f"{class_name} {why}")
    targets = np.array([s.label for s in ordered], dtype=np.int64)
    kept, held = training_split(targets, validation_fraction, seed)
    return [ordered[i] for i in kept], [ordered[i] for i in held]


def write_dataset(splits: Mapping[str, list[Sample]], out: Path) -> PreparedDataset:
    """Write PNG folders, one ``.lst`` per split and ``manifest.csv`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    manifest_rows: list[dict[str, str | int]] = []
    for split in OUTPUT_SPLITS:
        samples = sorted(splits.get(split, []), key=lambda s: (s.row_index, s.filename))
        if not samples:
            continue
        counts[split] = dict.fromkeys(DEFAULT_LABELS, 0)
        lines = []
        seen: set[str] = set()
        for sample in samples:
            relative = f"{sample.class_name}/{sample.filename}"
            if relative in seen:
                raise DatasetError(f"two {split} images would both be written as {relative}")
            seen.add(relative)
            path = out / split / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            encoded = _encode_png(sample.pixels)
            path.write_bytes(encoded)
            counts[split][sample.class_name] += 1
            lines.append(f"{sample.row_index}\t{sample.label}\t{relative}\n")
            manifest_rows.append(
                {
                    "split": split,
                    "class": sample.class_name,
                    "cifar100_fine_label": sample.fine_label,
                    "cifar100_row_index": sample.row_index,
                    "filename": sample.filename,
                    "sha256_file": hashlib.sha256(encoded).hexdigest(),
                    "sha256_rgb_pixels": sha256_pixels(sample.pixels),
                }
            )
        (out / f"{split}.lst").write_text("".join(lines), encoding="utf-8")
    with (out / MANIFEST_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(manifest_rows)
    return PreparedDataset(root=out, counts=counts)


def existing_outputs(out: Path) -> list[Path]:
    """The files and folders a previous :func:`write_dataset` may have left in ``out``."""
    names = [*OUTPUT_SPLITS, *(f"{split}.lst" for split in OUTPUT_SPLITS), MANIFEST_NAME]
    return [out / name for name in names if (out / name).exists()]


def remove_outputs(out: Path) -> None:
    """Delete what :func:`existing_outputs` lists, and nothing else."""
    for path in existing_outputs(out):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_dataset(
    source: Path,
    out: Path,
    *,
    validation_fraction: float,
    seed: int,
    replace_existing: bool = False,
) -> PreparedDataset:
    """Load ``source``, hold out a stratified validation split and write everything to ``out``.

    With ``replace_existing`` an earlier dataset in ``out`` is deleted, but only once the
    source has been read and split: a bad source or fraction leaves it as it was.
    """
    if _overlaps(source, out):
        raise DatasetError(
            f"the output folder {out} is the source {source}, or inside it, or holds it: "
            "writing there would delete or mix with the images being read"
        )
    samples = load_source(source)
    train, validation = stratified_split(
        (s for s in samples if s.source_split == "train"), validation_fraction, seed
    )
    test = [s for s in samples if s.source_split == "test"]
    if replace_existing:
        remove_outputs(out)
    return write_dataset({"train": train, "validation": validation, "test": test}, out)


def _overlaps(source: Path, out: Path) -> bool:
    a, b = source.resolve(), out.resolve()
    return a == b or a in b.parents or b in a.parents


def read_lst(path: Path) -> Iterator[tuple[int, int, str]]:
    """``(index, label, relative_path)`` for each line of a ``.lst`` manifest."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise DatasetError(f"{path}, line {number}: expected 3 tab-separated fields")
            try:
                yield int(fields[0]), int(fields[1]), fields[2]
            except ValueError as exc:
                raise DatasetError(f"{path}, line {number}: {exc}") from exc

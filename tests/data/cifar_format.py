"""Build small CIFAR-100 archives in the official format from the bundled real images.

The official ``cifar-100-python.tar.gz`` holds Python 2 pickles: byte strings are
``BINSTRING`` opcodes, the image array is rebuilt by
``numpy.core.multiarray._reconstruct``, and each row of ``data`` is the red, green
and blue 32x32 planes. :class:`Py2Pickler` writes exactly that, so the tests read
what the real archive would give them.
"""

from __future__ import annotations

import csv
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "cifar100-bicycle-motorcycle"

_NAMES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm
"""
FINE_LABEL_NAMES = sorted(_NAMES.split())
assert len(FINE_LABEL_NAMES) == 100
assert FINE_LABEL_NAMES[8] == "bicycle" and FINE_LABEL_NAMES[48] == "motorcycle"
OTHER_LABELS = (0, 7, 9, 47, 49, 58, 90, 99)  # neighbours of 8 and 48 included on purpose


_PurePythonPickler: Any = pickle._Pickler


class Py2Pickler(_PurePythonPickler):
    """Protocol-2 pickles as Python 2's cPickle wrote them (bytes as BINSTRING)."""

    dispatch = _PurePythonPickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


@dataclass(frozen=True)
class Row:
    fine_label: int
    filename: str
    pixels: np.ndarray  # HWC RGB uint8

    @property
    def kept(self) -> bool:
        return self.fine_label in (8, 48)


@dataclass
class FakeCifar:
    """What went into an archive, to compare the prepared output with."""

    path: Path
    splits: dict[str, list[Row]] = field(default_factory=dict)

    def kept(self, split: str) -> list[tuple[int, Row]]:
        return [(index, row) for index, row in enumerate(self.splits[split]) if row.kept]


def bundled_rows() -> list[dict[str, str]]:
    with (BUNDLED / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def load_pixels(row: dict[str, str]) -> np.ndarray:
    with Image.open(BUNDLED / row["split"] / row["class"] / row["filename"]) as image:
        return np.asarray(image.convert("RGB"))


def make_rows(per_class: int, others: int, offset: int) -> list[Row]:
    """Real bundled images: ``per_class`` of each kept class plus ``others`` relabelled ones."""
    manifest = bundled_rows()
    by_class = {
        name: [r for r in manifest if r["class"] == name] for name in ("bicycle", "motorcycle")
    }
    rows: list[Row] = []
    for i in range(per_class):
        for name, label in (("bicycle", 8), ("motorcycle", 48)):
            source = by_class[name][offset + i]
            rows.append(Row(label, source["filename"], load_pixels(source)))
    for i in range(others):
        source = by_class["bicycle"][200 + offset + i]
        label = OTHER_LABELS[i % len(OTHER_LABELS)]
        rows.append(Row(label, f"other_s_{offset + i:06d}.png", load_pixels(source)))
    order = np.random.default_rng(offset).permutation(len(rows))
    return [rows[i] for i in order]


def batch(rows: list[Row], name: bytes) -> dict[bytes, Any]:
    data = np.stack([row.pixels.transpose(2, 0, 1).reshape(-1) for row in rows]).astype(np.uint8)
    return {
        b"filenames": [row.filename.encode() for row in rows],
        b"batch_label": name,
        b"fine_labels": [row.fine_label for row in rows],
        b"coarse_labels": [18 if row.kept else row.fine_label % 20 for row in rows],
        b"data": data,
    }


def meta(fine_names: list[str] = FINE_LABEL_NAMES) -> dict[bytes, Any]:
    return {
        b"fine_label_names": [name.encode() for name in fine_names],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        directory = tarfile.TarInfo("cifar-100-python")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def official_members(splits: dict[str, list[Row]]) -> dict[str, bytes]:
    return {
        "cifar-100-python/file.txt~": b"",
        "cifar-100-python/train": py2_pickle(batch(splits["train"], b"training batch 1 of 1")),
        "cifar-100-python/test": py2_pickle(batch(splits["test"], b"testing batch 1 of 1")),
        "cifar-100-python/meta": py2_pickle(meta()),
    }

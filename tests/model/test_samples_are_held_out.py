"""``scones run`` reports accuracy on ``samples/``: those images must be held out from training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from scones.model.folders import class_root, fingerprint, list_images, stratified_split
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR

DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"
MODEL = SHIPPED_MODEL_DIR


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_labelled_sample_is_in_the_models_validation_split() -> None:
    manifest = json.loads((MODEL / "model.json").read_text())
    labels = tuple(manifest["labels"])
    split = manifest["split"]
    items = list_images(DATA, labels)
    targets = np.array([target for _, target in items])
    _, held = stratified_split(targets, float(split["validation_fraction"]), int(split["seed"]))
    validation = [items[i][0] for i in held]
    assert fingerprint(validation, class_root(DATA, labels)) == split["validation_fingerprint"]

    held_out = {digest(path): path.parent.name for path in validation}
    samples = sorted((PROJECT_ROOT / "samples").glob("*/*.png"))
    labelled = [p for p in samples if p.parent.name in labels]
    assert len(labelled) == 24
    for path in labelled:
        assert held_out.get(digest(path)) == path.parent.name, f"{path} is not held out"

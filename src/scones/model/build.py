"""One training run end to end: data -> split -> ensemble -> ONNX -> evaluation -> baseline.

Everything shipped in ``models/<name>/`` comes from :func:`build_model`, so one
command reproduces it. The artifact is assembled in a staging folder beside the
destination and moved in file by file at the end, so a failed run never leaves a
half-written model where the server looks for one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scones_core.training_split import TRAINED_INPUT_SIZE, TrainingSplit

from scones.model.artifact import (
    ModelArtifactError,
    ModelManifest,
    OnnxClassifier,
)
from scones.model.backbone import BACKBONES
from scones.model.evaluate import (
    REPORT_JSON,
    REPORT_PNG,
    baseline,
    evaluate_artifact,
    write_json,
    write_report,
)
from scones.model.export import save_artifact, write_manifest
from scones.model.folders import (
    LabelledImages,
    class_root,
    fingerprint,
    load_images,
    refuse_small_classes,
    stratified_split,
)
from scones.model.recipe import DEFAULT_LABELS, FRESH_TEACHER, model_name
from scones.model.train import Log, TrainRecipe, train_ensemble
from scones.paths import BASELINE_FILE, MANIFEST_NAME, ONNX_NAME, PROJECT_ROOT, display_path

# PROJECT_ROOT is scones.paths', not scones.template_params': that module needs
# samtranslator, which a SageMaker training container running this code does not have.
SHIPPED_FILES = (ONNX_NAME, REPORT_JSON, REPORT_PNG, BASELINE_FILE, MANIFEST_NAME)


@dataclass(frozen=True)
class Split:
    train: LabelledImages
    validation: LabelledImages
    description: dict[str, Any]


def split_data(data: LabelledImages, data_dir: Path, fraction: float, seed: int) -> Split:
    """The seeded stratified validation split, described so evaluation can recreate it."""
    train_idx, val_idx = stratified_split(data.targets, fraction, seed)
    train, validation = data.subset(train_idx), data.subset(val_idx)
    root = class_root(data_dir, data.labels)
    description = {
        "method": "stratified by class, numpy default_rng(seed), sorted file order",
        "seed": seed,
        "validation_fraction": fraction,
        "train_images": len(train),
        "validation_images": len(validation),
        "train_per_class": train.class_counts(),
        "validation_per_class": validation.class_counts(),
        "validation_fingerprint": fingerprint(validation.paths, root),
    }
    return Split(train=train, validation=validation, description=description)


def validation_from_manifest(
    data: LabelledImages,
    data_dir: Path,
    manifest: ModelManifest,
    *,
    source: Path | str = MANIFEST_NAME,
) -> Split:
    """Recreate the split a model was trained with from the seed in its ``model.json``
    (``source``, the file an error names)."""
    recorded = manifest.extra.get("split")
    if not isinstance(recorded, dict) or "seed" not in recorded:
        raise ValueError(f"{source} records no split seed; evaluate with --split all")
    seed, fraction = recorded_split(recorded, source)
    split = split_data(data, data_dir, fraction, seed)
    expected = recorded.get("validation_fingerprint")
    if expected and expected != split.description["validation_fingerprint"]:
        raise ValueError(
            f"{data_dir} is not the data this model was trained on (its validation split "
            f"differs: other images, or labels listed in another order than {source}'s "
            f"{', '.join(manifest.labels)}); evaluate a different data set with --split all"
        )
    return split


def recorded_split(recorded: dict[str, Any], source: Path | str) -> tuple[int, float]:
    """The seed and validation fraction of a recorded split, checked as the recipe checks
    them: an edited ``model.json`` would otherwise fail in numpy without naming the field."""

    def shown(key: str) -> str:
        return f"is {recorded[key]!r}" if key in recorded else "is missing"

    seed = recorded.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ModelArtifactError(
            f"{source}: split.seed {shown('seed')}, expected a whole number >= 0"
        )
    fraction = recorded.get("validation_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ModelArtifactError(
            f"{source}: split.validation_fraction {shown('validation_fraction')}, expected a "
            "number between 0 and 1 (exclusive)"
        )
    return seed, float(fraction)


def describe_architecture(recipe: TrainRecipe) -> str:
    """One line for ``model.json``: what the exported graph computes."""
    if recipe.network in BACKBONES:
        member = (
            f"FineTunedBackbone({recipe.network}, {recipe.resize}x{recipe.resize} "
            "bilinear upsampling, global average pooling, linear head)"
        )
    else:
        member = f"SmallResNet(width={recipe.width}, blocks_per_stage={recipe.blocks_per_stage})"
    calibration = "temperature and per-class bias" if recipe.calibrate_bias else "temperature"
    if recipe.method == "distil":
        fitted_on = (
            f"{recipe.members} cross-fitted students' out-of-fold logits"
            if recipe.cross_fit
            else f"the training fold it never saw (1 of {recipe.members})"
        )
        return (
            f"1 x {member} distilled from the teacher ensemble, {calibration} fitted on "
            f"{fitted_on}, "
            f"{'flip test-time averaging, ' if recipe.flip_tta else ''}softmax; "
            "normalisation inside the graph"
        )
    return (
        f"{recipe.members} x {member}, per-member {calibration}, "
        f"{'flip test-time averaging, ' if recipe.flip_tta else ''}"
        "softmax of the mean scaled logit; normalisation inside the graph"
    )


def build_model(
    data_dir: Path,
    out_dir: Path,
    recipe: TrainRecipe,
    threshold: float,
    *,
    name: str | None = None,
    labels: tuple[str, ...] = DEFAULT_LABELS,
    log: Log | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, export, evaluate and write the artifact; returns the evaluation report.

    ``name`` defaults to the labels' (:func:`scones.model.recipe.model_name`).
    ``cache_dir`` keeps a distil recipe's teacher-labelled views for the next run.
    """
    started = time.perf_counter()
    if name is None:
        name = model_name(labels)
    refuse_small_classes(
        data_dir, labels, TrainingSplit(recipe.validation_fraction, recipe.members)
    )
    data = load_images(data_dir, labels, TRAINED_INPUT_SIZE)
    split = split_data(data, data_dir, recipe.validation_fraction, recipe.seed)
    if log:
        log(
            f"{len(data)} images from {data_dir}: {len(split.train)} for training, "
            f"{len(split.validation)} held out for validation (seed {recipe.seed})"
        )
    if recipe.method == "distil" and recipe.teacher != FRESH_TEACHER:
        teachers = resolve_teachers(recipe)
        refuse_teachers_of_other_labels(teachers, labels)
        refuse_teachers_of_another_split(teachers, split.description)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if recipe.method == "distil":
        from scones.model.distill import describe_teacher, distil, teacher_rounds

        with _teacher_for(
            recipe,
            data_dir,
            out_dir=out_dir,
            threshold=threshold,
            name=name,
            labels=labels,
            log=log,
        ) as teacher_dirs:
            teacher = describe_teacher(teacher_dirs)
            trained = distil(
                split.train, recipe, teacher_dirs, threshold, log=log, cache_dir=cache_dir
            )
    else:
        teacher = None
        trained = train_ensemble(split.train, recipe, log)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        extra: dict[str, Any] = {
            "description": f"{' vs '.join(labels)} classifier for 32x32 RGB images",
            "architecture": describe_architecture(recipe),
            "normalisation": {"mean": trained.mean, "std": trained.std},
            "recipe": recipe.to_json(),
            "seed": recipe.seed,
            "split": split.description,
            "cross_validation": trained.cross_validation,
            "training_seconds": round(trained.seconds, 1),
            "training_data": display_path(data_dir),
            "threshold": threshold,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if recipe.network in BACKBONES:
            extra["backbone"] = BACKBONES[recipe.network].describe()
        if teacher is not None:
            extra["teacher"] = teacher
            extra["distillation"] = {
                "targets": "the teacher's calibrated probabilities on every augmented view",
                "views_per_image": recipe.epochs,
                "teacher_rounds": teacher_rounds(recipe),
                "mirrored_rounds": "each labelled round serves two epochs, as drawn and "
                "mirrored, with the teacher's answer for the view as drawn (exact for a teacher "
                "that averages over mirror images, close for one that does not)",
                "augmentations": "as recipe.augment; CutMix pairs images of one fold",
                "hard_label_weight": recipe.hard_label_weight,
                "folds": recipe.members,
                "teacher_seconds": trained.cross_validation.get("teacher_seconds"),
            }
        manifest = save_artifact(
            staging,
            trained.model,
            name=name,
            labels=labels,
            input_size=TRAINED_INPUT_SIZE,
            extra=extra,
            check_pixels=split.validation.pixels[:64],
            int8_calibration=quantisation_images(split.train, recipe),
            fp16=recipe.quantize == "fp16",
        )
        classifier = OnnxClassifier(staging)
        report, probabilities = evaluate_artifact(
            classifier, split.validation, threshold, split.description
        )
        write_report(staging, report)
        write_json(
            staging / BASELINE_FILE,
            baseline(probabilities, labels, threshold, manifest.version),
        )
        manifest.extra["metrics"] = {
            "split": "validation",
            "images": report["images"],
            "accuracy": report["accuracy"],
            "threshold": threshold,
            "coverage": report["at_threshold"]["coverage"],
            "accepted_accuracy": report["at_threshold"]["accepted_accuracy"],
        }
        manifest.extra["build_seconds"] = round(time.perf_counter() - started, 1)
        write_manifest(staging, manifest)
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


QUANTISATION_IMAGES = 128


def quantisation_images(train: LabelledImages, recipe: TrainRecipe) -> np.ndarray | None:
    """A seeded sample of training images for int8 calibration, or None for float32."""
    if recipe.quantize != "int8":
        return None
    rng = np.random.default_rng(recipe.seed + 2)
    chosen = np.sort(rng.choice(len(train), min(QUANTISATION_IMAGES, len(train)), replace=False))
    return np.asarray(train.pixels[chosen])


def resolve_teachers(recipe: TrainRecipe) -> list[Path]:
    """The teacher artifact folders of a distil recipe (relative paths are project paths)."""
    if not recipe.teacher or recipe.teacher == FRESH_TEACHER:
        raise ValueError("the distil recipe needs a teacher artifact")
    paths = [Path(folder) for folder in recipe.teacher_folders]
    return [path if path.is_absolute() else PROJECT_ROOT / path for path in paths]


def refuse_teachers_of_other_labels(folders: list[Path], labels: tuple[str, ...]) -> None:
    """``ValueError`` unless every teacher answers the student's labels in the student's
    order: a teacher can only teach the classes it knows. Checked before the split, whose
    refusal would blame the held-out images for what is a label mismatch."""
    for folder in folders:
        theirs = ModelManifest.load(folder).labels
        if tuple(theirs) != tuple(labels):
            raise ValueError(
                f"the teacher {folder} answers the labels {','.join(theirs)}, but the student "
                f"is trained on {','.join(labels)}: a teacher teaches only its own labels, in "
                "its own order. Use --teacher fresh (a teacher trained on these images "
                "first), a teacher of these labels, or --recipe ensemble"
            )


def refuse_teachers_of_another_split(folders: list[Path], split: dict[str, Any]) -> None:
    """``ValueError`` unless every teacher held out exactly the student's validation
    images: a teacher trained on some of them would pass what it learned of those very
    images to the student, and the student's validation numbers would be no test at all."""
    wanted = split["validation_fingerprint"]
    for folder in folders:
        recorded = ModelManifest.load(folder).extra.get("split")
        theirs: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        if theirs.get("validation_fingerprint") != wanted:
            raise ValueError(
                f"the teacher {folder} held out other validation images than this split "
                f"(seed {split['seed']}, fraction {split['validation_fraction']}; the teacher's: "
                f"seed {theirs.get('seed')}, fraction {theirs.get('validation_fraction')}, on "
                "its own data): it trained on some of the images the student is validated on. "
                "Use the teacher's seed, fraction and data, or --teacher fresh"
            )


@contextlib.contextmanager
def _teacher_for(
    recipe: TrainRecipe,
    data_dir: Path,
    *,
    out_dir: Path,
    threshold: float,
    name: str,
    labels: tuple[str, ...],
    log: Log | None,
) -> Iterator[list[Path]]:
    """The teachers' artifact folders: the recipe's, or with ``teacher="fresh"`` an ensemble
    trained first on the same images (and the same split), kept only while distilling.

    A fresh teacher is what retraining uses: the newly labelled images reach the student
    through a teacher that learned them from their labels.
    """
    if recipe.teacher != FRESH_TEACHER:
        yield resolve_teachers(recipe)
        return
    folder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-teacher-", dir=out_dir.parent))
    try:
        if log:
            log("training the teacher: the ensemble recipe on the same images")
        build_model(
            data_dir,
            folder / "model",
            recipe.teacher_recipe(),
            threshold,
            name=name,
            labels=labels,
            log=log,
        )
        yield [folder / "model"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _move_into(staging: Path, out_dir: Path) -> None:
    """Replace the shipped files; ``model.json`` goes last so its hash never names a stale graph
    for longer than one rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename in SHIPPED_FILES:
        os.replace(staging / filename, out_dir / filename)


def evaluate_directory(
    model_dir: Path, data_dir: Path, threshold: float, *, whole: bool = False
) -> tuple[dict[str, Any], np.ndarray]:
    """Evaluate a saved artifact on its validation split (or on every image when ``whole``)."""
    classifier = OnnxClassifier(model_dir)
    description, subset = evaluation_images(classifier, data_dir, whole=whole)
    return evaluate_artifact(classifier, subset, threshold, description)


def evaluation_images(
    classifier: OnnxClassifier, data_dir: Path, *, whole: bool = False
) -> tuple[dict[str, Any], LabelledImages]:
    """The images of ``data_dir`` a model is scored on, and how they were chosen: its
    recorded validation split, or every image when ``whole`` (``--split all``)."""
    data = load_images(data_dir, classifier.labels, classifier.manifest.input_size)
    if whole:
        return {"method": "every image in the folder", "images": len(data)}, data
    split = validation_from_manifest(
        data, data_dir, classifier.manifest, source=classifier.directory / MANIFEST_NAME
    )
    return split.description, split.validation

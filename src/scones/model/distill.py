"""Distil the ensemble into one student network: a quarter of the compute or less.

The teacher is one or more ensemble artifacts (``model.onnx``: fine-tuned backbones,
calibrated), answering together as one ensemble (:class:`Teachers`). The student is one
:class:`~scones.model.networks.FineTunedBackbone`, usually at a smaller input
size and without flip averaging. The recipe:

1. Draw rounds of augmented views of every training image (random crop, flip,
   colour jitter, cutout and CutMix, the ensemble's augmentations). CutMix pairs
   images of the same calibration fold only, so a fold's images never reach the
   students that hold it out.
2. The teacher labels every view through onnxruntime: its calibrated probabilities
   on exactly the pixels the student will see (a CutMix view gets the teacher's
   opinion of the mixed image, not a mix of two labels). Each labelled round serves
   two epochs, once as drawn and once mirrored, with the answer for the view as
   drawn, which halves the teacher's cost (``epochs`` epochs need
   ``ceil(epochs / 2)`` rounds). For a teacher that averages each image with its
   mirror image that is exactly its answer for the mirrored view; for one that does
   not, a close one (a mirrored bicycle is still a bicycle).
3. Cross-fitting, as for the ensemble: for each of ``members`` stratified folds a
   student trains on the other folds' views and scores the fold it never saw. The
   pooled out-of-fold logits give the cross-validated numbers and fit one
   temperature and per-class bias.
4. The shipped student trains the same way on every fold's views and gets that
   calibration.

The teacher was trained on all the training images, so it has seen each fold a
fold-student holds out; the cross-validated numbers are slightly optimistic for
that reason. The validation split is untouched by teacher and student alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from scones.model.artifact import OnnxClassifier
from scones.model.augment import augment_batch
from scones.model.calibration import fit_calibration, negative_log_likelihood, softmax
from scones.model.evaluate import confusion_matrix, expected_calibration_error, selective
from scones.model.folders import LabelledImages, stratified_folds
from scones.model.networks import ServingEnsemble
from scones.model.recipe import TrainRecipe
from scones.model.train import (
    Log,
    TrainedEnsemble,
    build_network,
    build_optimiser,
    normalisation,
    set_learning_rates,
    soft_target_step,
    view_logits,
)

_TEACHER_BATCH = 256


@dataclass(frozen=True)
class TransferSet:
    """Augmented views [rounds, N, 3, H, W] (normalised), the teacher's probabilities and
    the true labels mixed as each view was ([rounds, N, classes] both)."""

    views: torch.Tensor
    soft: torch.Tensor
    hard: torch.Tensor
    teacher_seconds: float


class Teachers:
    """The teacher artifacts a student learns from, answering as one.

    With several, the answer is the softmax of the mean of their log-probabilities.
    For softmax outputs that is the softmax of the mean of each one's calibrated
    logits, which is how an ensemble averages its members: two four-member teachers
    answer as one eight-member ensemble whose halves count equally. Teachers built on
    different backbones err on different images, which is what makes the pair worth
    more than either.
    """

    def __init__(self, folders: Sequence[Path], threads: int = 1) -> None:
        if not folders:
            raise ValueError("need at least one teacher artifact")
        self.classifiers = [OnnxClassifier(f, intra_op_threads=threads) for f in folders]
        labels = {tuple(c.labels) for c in self.classifiers}
        if len(labels) != 1:
            raise ValueError(f"the teachers answer different labels: {sorted(labels)}")
        self.labels = labels.pop()

    @property
    def digest(self) -> str:
        """The teachers' graph digests, in order (one teacher: its digest)."""
        return "+".join(c.manifest.onnx_sha256 for c in self.classifiers)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] for RGB [0, 1] NCHW ``rgb``."""
        if len(self.classifiers) == 1:
            return self.classifiers[0].predict_tensor(rgb)
        log_probabilities = [
            np.log(np.clip(c.predict_tensor(rgb).astype(np.float64), 1e-12, 1.0))
            for c in self.classifiers
        ]
        return softmax(np.mean(log_probabilities, axis=0))


def describe_teacher(folders: Sequence[Path]) -> dict[str, Any]:
    """What ``model.json`` records about the teacher: which graphs, and how good they were."""

    def one(directory: Path) -> dict[str, Any]:
        teacher = OnnxClassifier(directory)
        extra = teacher.manifest.extra
        return {
            "name": teacher.manifest.name,
            "version": teacher.manifest.version,
            "onnx_sha256": teacher.manifest.onnx_sha256,
            "architecture": extra.get("architecture"),
            "metrics": extra.get("metrics"),
        }

    if len(folders) == 1:
        return one(folders[0])
    return {
        "combination": "softmax of the mean of the teachers' log-probabilities (the mean "
        "of their calibrated logits)",
        "teachers": [one(folder) for folder in folders],
    }


def teacher_rounds(recipe: TrainRecipe) -> int:
    """Labelled rounds of views: each serves two epochs (as drawn, then mirrored)."""
    return math.ceil(recipe.epochs / 2)


def _transfer_key(
    data: LabelledImages, folds: np.ndarray, recipe: TrainRecipe, teacher: Teachers
) -> str:
    """Everything the transfer set depends on, hashed: a cached one is reused only if equal."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.pixels).tobytes())
    digest.update(np.ascontiguousarray(data.targets).tobytes())
    digest.update(np.ascontiguousarray(folds).tobytes())
    settings = {
        "teacher": teacher.digest,
        "seed": recipe.seed,
        "batch_size": recipe.batch_size,
        "augment": asdict(recipe.augment),
        "network": recipe.network,
        "torch": torch.__version__,
        "format": 2,  # views, soft and hard targets
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def make_transfer_set(
    data: LabelledImages,
    folds: np.ndarray,
    recipe: TrainRecipe,
    teacher_dirs: Sequence[Path],
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    log: Log | None = None,
    cache_dir: Path | None = None,
) -> TransferSet:
    """Rounds of augmented views of ``data``, each labelled by the teachers.

    With ``cache_dir`` the set is saved there, named by a hash of everything it depends
    on, and loaded instead of recomputed when present (the teacher is the costly part).
    """
    teacher = Teachers(teacher_dirs, threads=recipe.threads)
    if tuple(teacher.labels) != tuple(data.labels):
        raise ValueError(f"teacher labels {teacher.labels} differ from data labels {data.labels}")
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"transfer-{_transfer_key(data, folds, recipe, teacher)}.pt"
        rounds = teacher_rounds(recipe)
        saved = torch.load(cached, weights_only=True) if cached.is_file() else None
        # Rounds are drawn in order from one generator: a longer saved set starts with
        # exactly the rounds a shorter run would draw.
        if saved is not None and len(saved["views"]) >= rounds:
            if log:
                log(f"transfer set: loaded {rounds} of {len(saved['views'])} rounds from {cached}")
            share = rounds / len(saved["views"])
            return TransferSet(
                views=saved["views"][:rounds],
                soft=saved["soft"][:rounds],
                hard=saved["hard"][:rounds],
                teacher_seconds=float(saved["teacher_seconds"]) * share,
            )
    rounds = teacher_rounds(recipe)
    gen = torch.Generator().manual_seed(recipe.seed * 1000 + 999)
    pixels = torch.from_numpy(data.pixels)
    n, classes = len(data), len(data.labels)
    views = torch.empty((rounds, *pixels.shape), dtype=torch.float32)
    soft = torch.empty((rounds, n, classes), dtype=torch.float32)
    hard = torch.empty((rounds, n, classes), dtype=torch.float32)
    one_hot = F.one_hot(torch.from_numpy(data.targets).long(), classes).float()
    started = time.perf_counter()
    teacher_seconds = 0.0
    for round_ in range(rounds):
        for fold in np.unique(folds):
            members = torch.from_numpy(np.flatnonzero(folds == fold))
            members = members[torch.randperm(len(members), generator=gen)]
            for start in range(0, len(members), recipe.batch_size):
                idx = members[start : start + recipe.batch_size]
                x, y = augment_batch(
                    pixels[idx], one_hot[idx], cfg=recipe.augment, mean=mean, std=std, gen=gen
                )
                views[round_, idx] = x
                hard[round_, idx] = y
        tick = time.perf_counter()
        rgb = (views[round_] * std + mean).numpy()
        for start in range(0, n, _TEACHER_BATCH):
            chunk = np.ascontiguousarray(rgb[start : start + _TEACHER_BATCH])
            soft[round_, start : start + _TEACHER_BATCH] = torch.from_numpy(
                teacher.predict(chunk).astype(np.float32)
            )
        teacher_seconds += time.perf_counter() - tick
        if log:
            log(
                f"transfer set: round {round_ + 1}/{rounds} labelled "
                f"({time.perf_counter() - started:.0f} s)"
            )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        saved_set = {"views": views, "soft": soft, "hard": hard, "teacher_seconds": teacher_seconds}
        torch.save(saved_set, partial)
        partial.replace(cached)
    return TransferSet(views=views, soft=soft, hard=hard, teacher_seconds=teacher_seconds)


def train_student(
    transfer: TransferSet,
    indices: np.ndarray,
    num_classes: int,
    recipe: TrainRecipe,
    *,
    seed: int,
    log: Log | None = None,
    tag: str = "",
) -> torch.nn.Module:
    """One student on the views of ``indices``: a fresh view of each image every epoch
    (round ``epoch // 2``, mirrored on odd epochs), soft cross-entropy against the
    teacher's probabilities, blended with the view's true label by
    ``recipe.hard_label_weight``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_network(recipe, num_classes)
    optimiser = build_optimiser(model, recipe)
    chosen = torch.from_numpy(indices)
    n = len(indices)
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = max(1, n // batch_size)
    total = steps_per_epoch * recipe.epochs
    warmup = min(steps_per_epoch * recipe.warmup_epochs, total // 2)
    step = 0
    model.train()
    for epoch in range(recipe.epochs):
        order = chosen[torch.randperm(n, generator=gen)]
        running = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            x, y = transfer.views[epoch // 2, idx], transfer.soft[epoch // 2, idx]
            if recipe.hard_label_weight:
                w = recipe.hard_label_weight
                y = (1 - w) * y + w * transfer.hard[epoch // 2, idx]
            if epoch % 2:
                x = torch.flip(x, dims=[3])
            set_learning_rates(optimiser, step, total, warmup)
            running += soft_target_step(model, optimiser, x, y)
            step += 1
        if log and (epoch + 1) % max(1, recipe.epochs // 4) == 0:
            log(f"{tag}epoch {epoch + 1}/{recipe.epochs} loss {running / steps_per_epoch:.4f}")
    model.eval()
    return model


def distil(
    data: LabelledImages,
    recipe: TrainRecipe,
    teacher_dirs: Sequence[Path],
    threshold: float,
    *,
    log: Log | None = None,
    cache_dir: Path | None = None,
) -> TrainedEnsemble:
    """The shipped student, calibrated on training images it never saw.

    By default (``cross_fit`` off) it trains on every fold but the first and is
    calibrated on the first, as each ensemble member was: one training run. With
    ``cross_fit`` every fold gets a student for out-of-fold numbers and one pooled
    calibration, and the shipped student trains on every fold (``members + 1`` runs).
    """
    started = time.perf_counter()
    torch.set_num_threads(recipe.threads)
    num_classes = len(data.labels)
    mean_list, std_list = normalisation(recipe, data.pixels)
    mean = torch.tensor(mean_list).view(1, 3, 1, 1)
    std = torch.tensor(std_list).view(1, 3, 1, 1)
    folds = stratified_folds(data.targets, recipe.members, recipe.seed + 1)
    transfer = make_transfer_set(
        data, folds, recipe, teacher_dirs, mean=mean, std=std, log=log, cache_dir=cache_dir
    )
    views = 2 if recipe.flip_tta else 1
    if not recipe.cross_fit:
        # As each ensemble member was: train on every fold but one, calibrate on that one.
        fit_idx, held_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
        student = train_student(
            transfer, fit_idx, num_classes, recipe, seed=recipe.seed * 1000, log=log, tag="student "
        )
        held_logits = view_logits(student, data.pixels[held_idx], mean, std, recipe.flip_tta)
        calibration = fit_calibration(
            held_logits, data.targets[held_idx], bias=recipe.calibrate_bias
        )
        cv = cross_validation_summary(
            calibration.probabilities(held_logits),
            data.targets[held_idx],
            num_classes,
            threshold,
            what=(
                f"the shipped student on the training fold it never saw (1 of {recipe.members}), "
                "calibrated on that fold"
            ),
        )
    else:
        oof_logits = np.zeros((views, len(data), num_classes))
        for k in range(recipe.members):
            fit_idx, held_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            fold_student = train_student(
                transfer,
                fit_idx,
                num_classes,
                recipe,
                seed=recipe.seed * 1000 + k,
                log=log,
                tag=f"fold student {k + 1}/{recipe.members} ",
            )
            oof_logits[:, held_idx] = view_logits(
                fold_student, data.pixels[held_idx], mean, std, recipe.flip_tta
            )
            if log:
                held = oof_logits[:, held_idx].mean(0).argmax(1) == data.targets[held_idx]
                log(f"fold student {k + 1}/{recipe.members}: held-out accuracy {held.mean():.4f}")
        calibration = fit_calibration(oof_logits, data.targets, bias=recipe.calibrate_bias)
        student = train_student(
            transfer,
            np.arange(len(data)),
            num_classes,
            recipe,
            seed=recipe.seed * 1000 + recipe.members,
            log=log,
            tag="student ",
        )
        cv = cross_validation_summary(
            calibration.probabilities(oof_logits),
            data.targets,
            num_classes,
            threshold,
            what=(
                f"out-of-fold predictions of {recipe.members} cross-fitted students on the "
                "training part, one pooled calibration"
            ),
        )
    cv["temperature"] = round(calibration.temperature, 4)
    cv["bias"] = list(calibration.bias)
    cv["teacher_seconds"] = round(transfer.teacher_seconds, 1)
    model = ServingEnsemble(
        [student],
        [calibration.temperature],
        mean_list,
        std_list,
        biases=[calibration.bias],
        flip_tta=recipe.flip_tta,
    )
    model.eval()
    return TrainedEnsemble(
        model=model,
        calibrations=[calibration],
        cross_validation=cv,
        mean=mean_list,
        std=std_list,
        seconds=time.perf_counter() - started,
    )


def cross_validation_summary(
    probabilities: np.ndarray,
    targets: np.ndarray,
    num_classes: int,
    threshold: float,
    *,
    what: str,
) -> dict[str, Any]:
    """Held-out numbers on training images: the ones to compare recipes by (never the
    validation split)."""
    predicted = probabilities.argmax(1)
    return {
        "what": what,
        "images": len(targets),
        "accuracy": round(float((predicted == targets).mean()), 4),
        "confusion_matrix": confusion_matrix(predicted, targets, num_classes).tolist(),
        "nll": round(negative_log_likelihood(probabilities, targets), 4),
        "ece": round(expected_calibration_error(probabilities, targets), 4),
        "at_threshold": selective(probabilities, targets, threshold),
    }

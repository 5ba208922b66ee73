"""Distillation end to end on a tiny run: the teacher labels every view, the student ships."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scones.cli.main import main
from scones.model.artifact import OnnxClassifier, sha256_file
from scones.model.build import build_model, resolve_teachers
from scones.model.distill import (
    Teachers,
    describe_teacher,
    make_transfer_set,
    teacher_rounds,
    train_student,
)
from scones.model.distill import _transfer_key as _key
from scones.model.folders import load_images, stratified_folds
from scones.model.recipe import DEFAULT_TEACHER, FRESH_TEACHER, TrainRecipe
from scones.model.train import build_network

LABELS = ("bicycle", "motorcycle")

# One worker runs the module: its teacher (small_teacher) is then trained once, not once
# on each worker that runs a test needing it.
pytestmark = pytest.mark.xdist_group("distill")


TINY_SPLIT = {"seed": 3, "validation_fraction": 0.25}
TEACHER_NAME = "small-teacher"


@pytest.fixture(scope="module")
def small_teacher(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ensemble trained on ``small_data`` with the students' split: a teacher must
    have held out exactly the images its student is validated on (the shipped ensemble
    trained on most of these, and is refused)."""
    folder = tmp_path_factory.mktemp("teacher") / TEACHER_NAME
    recipe = TrainRecipe(**TINY_SPLIT, members=2, epochs=1, batch_size=16, threads=1, resize=64)
    build_model(small_data, folder, recipe, threshold=0.93, name=TEACHER_NAME)
    return folder


@pytest.fixture
def tiny_distil(small_teacher: Path) -> TrainRecipe:
    return TrainRecipe.for_network(
        "mobilenetv3-coco",
        "distil",
        **TINY_SPLIT,
        members=2,
        epochs=2,
        batch_size=16,
        threads=1,
        resize=64,
        teacher=str(small_teacher),
    )


def test_the_distil_recipe_defaults_to_the_reference_teacher_without_flips() -> None:
    recipe = TrainRecipe.for_network("mobilenetv3-coco", "distil")
    assert recipe.method == "distil"
    assert recipe.teacher == DEFAULT_TEACHER
    assert recipe.flip_tta is False and recipe.cross_fit is True
    # One backbone pass per image where the ensemble makes eight.
    assert recipe.resize == TrainRecipe().resize
    assert resolve_teachers(recipe)[0].joinpath("model.onnx").is_file()
    with pytest.raises(ValueError, match="needs a teacher"):
        TrainRecipe(method="distil")
    with pytest.raises(ValueError, match="method must be one of"):
        TrainRecipe(method="boosting")


def test_the_teacher_labels_exactly_the_views_the_student_sees(
    small_data: Path, tiny_distil: TrainRecipe, tmp_path: Path
) -> None:
    recipe = dataclasses.replace(tiny_distil, epochs=3)
    data = load_images(small_data, LABELS)
    folds = stratified_folds(data.targets, recipe.members, recipe.seed + 1)
    mean = torch.zeros(1, 3, 1, 1)
    std = torch.full((1, 3, 1, 1), 1 / 255)
    teacher_dirs = resolve_teachers(recipe)
    transfer = make_transfer_set(
        data, folds, recipe, teacher_dirs, mean=mean, std=std, cache_dir=tmp_path
    )
    # Three epochs need two labelled rounds: each serves as drawn, then mirrored.
    assert teacher_rounds(recipe) == 2
    assert transfer.views.shape == (2, len(data), 3, 32, 32)
    assert transfer.soft.shape == (2, len(data), 2)
    # Each round is a different augmentation, not the plain image.
    assert not torch.equal(transfer.views[0], transfer.views[1])
    assert not torch.allclose(transfer.views[0] * std + mean, torch.from_numpy(data.pixels))
    # The true labels travel with each view, mixed as CutMix mixed the view: each row is
    # a distribution, and an unmixed view keeps its own image's label.
    assert transfer.hard.shape == (2, len(data), 2)
    torch.testing.assert_close(transfer.hard.sum(-1), torch.ones(2, len(data)))
    pure = transfer.hard.max(-1).values == 1
    assert pure.any()
    labels = torch.from_numpy(data.targets).long().expand(2, -1)
    assert torch.equal(transfer.hard.argmax(-1)[pure], labels[pure])
    # The soft targets are the teacher's probabilities on those very pixels, and on
    # their mirror images too (the teacher averages over mirrors).
    (teacher_dir,) = teacher_dirs
    teacher = OnnxClassifier(teacher_dir)
    some = slice(0, 5)
    view = transfer.views[1, some] * std + mean
    expected = teacher.predict_tensor(view.numpy())
    np.testing.assert_allclose(transfer.soft[1, some].numpy(), expected, atol=1e-5)
    mirrored = teacher.predict_tensor(torch.flip(view, dims=[3]).numpy())
    np.testing.assert_allclose(mirrored, expected, atol=1e-5)
    # A second run with the same inputs loads the saved set instead of asking the teacher.
    (saved,) = tmp_path.glob("transfer-*.pt")
    again = make_transfer_set(
        data, folds, recipe, teacher_dirs, mean=mean, std=std, cache_dir=tmp_path
    )
    assert torch.equal(again.views, transfer.views) and torch.equal(again.soft, transfer.soft)
    assert torch.equal(again.hard, transfer.hard)
    other = dataclasses.replace(recipe, seed=4)
    assert _key(data, folds, other, Teachers(teacher_dirs)) != saved.stem.removeprefix("transfer-")
    # A student trains on them: from the same start, its weights move.
    torch.manual_seed(0)
    start = build_network(recipe, 2).head.weight.detach().clone()
    student = train_student(transfer, np.flatnonzero(folds == 0), 2, recipe, seed=0)
    assert not student.training
    assert not torch.equal(student.head.weight, start)
    # With part of each target from the true label, the same start learns differently.
    blended = dataclasses.replace(recipe, hard_label_weight=0.5)
    other_student = train_student(transfer, np.flatnonzero(folds == 0), 2, blended, seed=0)
    assert not torch.equal(other_student.head.weight, student.head.weight)
    with pytest.raises(ValueError, match="hard_label_weight must be in"):
        dataclasses.replace(recipe, hard_label_weight=1.5)


def test_several_teachers_answer_as_one_ensemble_of_their_calibrated_logits(
    small_data: Path, tiny_distil: TrainRecipe, tiny_recipe: TrainRecipe, tmp_path: Path
) -> None:
    """Two teachers: the softmax of the mean log-probability, which for softmax outputs is
    the softmax of the mean calibrated logit, as an ensemble averages its members."""
    second = tmp_path / "second-teacher"
    # The students' split (tiny_recipe's seed and fraction), another model.
    second_recipe = dataclasses.replace(tiny_recipe, resize=48, flip_tta=False)
    build_model(small_data, second, second_recipe, threshold=0.93, name="second")
    first = resolve_teachers(tiny_distil)[0]
    both = Teachers([first, second])
    pixels = load_images(small_data, LABELS).pixels[:12]
    p1 = OnnxClassifier(first).predict_tensor(pixels).astype(np.float64)
    p2 = OnnxClassifier(second).predict_tensor(pixels).astype(np.float64)
    combined = both.predict(pixels)
    # log p = z - logsumexp(z): the mean of the logits, up to a constant per image.
    logits = (np.log(p1) + np.log(p2)) / 2
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(combined, expected, rtol=1e-6)
    np.testing.assert_allclose(combined.sum(axis=1), 1.0, rtol=1e-6)
    # Where the two agree the pair is at least as sure as the less sure one.
    agree = p1.argmax(1) == p2.argmax(1)
    assert agree.any()
    assert (combined.max(1)[agree] >= np.minimum(p1.max(1), p2.max(1))[agree] - 1e-9).all()
    assert not np.allclose(combined, p1) and not np.allclose(combined, p2)
    assert both.digest == f"{OnnxClassifier(first).manifest.onnx_sha256}+" + (
        OnnxClassifier(second).manifest.onnx_sha256
    )
    described = describe_teacher([first, second])
    assert [t["onnx_sha256"] for t in described["teachers"]] == both.digest.split("+")
    assert describe_teacher([first]) == described["teachers"][0]
    # The recipe names them comma-separated, project-relative or absolute, in order.
    recipe = dataclasses.replace(tiny_distil, teacher=f"{first}, {second}")
    assert resolve_teachers(recipe) == [first, second]
    assert (
        resolve_teachers(dataclasses.replace(recipe, teacher=f"{DEFAULT_TEACHER}, {second}"))[0]
        == resolve_teachers(TrainRecipe.for_network("mobilenetv3-coco", "distil"))[0]
    )
    # A distillation from both records both, and its transfer set is keyed on both.
    data = load_images(small_data, LABELS)
    folds = stratified_folds(data.targets, recipe.members, recipe.seed + 1)
    assert _key(data, folds, recipe, both) != _key(data, folds, recipe, Teachers([first]))
    out = tmp_path / "student"
    build_model(small_data, out, dataclasses.replace(recipe, epochs=1), 0.93, name="tiny")
    manifest = json.loads((out / "model.json").read_text())
    assert [t["onnx_sha256"] for t in manifest["teacher"]["teachers"]] == both.digest.split("+")
    assert manifest["recipe"]["teacher"] == f"{first}, {second}"


@pytest.mark.parametrize(
    "teacher, problem",
    [
        ("models/reference/ensemble-v1,", "each comma-separated folder must be named once"),
        ("a,a", "each comma-separated folder must be named once"),
        (f"{FRESH_TEACHER},models/reference/ensemble-v1", "stands alone"),
    ],
)
def test_a_teacher_list_must_name_each_folder_once(teacher: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TrainRecipe.for_network("mobilenetv3-coco", "distil", teacher=teacher)


def test_teachers_of_different_labels_are_refused(tmp_path: Path) -> None:
    (reference,) = resolve_teachers(TrainRecipe.for_network("mobilenetv3-coco", "distil"))
    other = tmp_path / "cat-dog"
    shutil.copytree(reference, other)
    manifest = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**manifest, "labels": ["cat", "dog"]}))
    with pytest.raises(ValueError, match="the teachers answer different labels"):
        Teachers([reference, other])


def test_build_model_distils_a_single_calibrated_student(
    small_data: Path, tiny_distil: TrainRecipe, tmp_path: Path
) -> None:
    """With cross-fitting: a student per fold for out-of-fold numbers, then the shipped one."""
    tiny_distil = dataclasses.replace(tiny_distil, cross_fit=True)
    out = tmp_path / "student"
    report = build_model(small_data, out, tiny_distil, threshold=0.93, name="tiny")
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["onnx_sha256"] == sha256_file(out / "model.onnx")
    assert manifest["recipe"]["method"] == "distil"
    assert manifest["recipe"]["flip_tta"] is False
    teacher = json.loads((resolve_teachers(tiny_distil)[0] / "model.json").read_text())
    assert manifest["teacher"]["onnx_sha256"] == teacher["onnx_sha256"]
    assert manifest["distillation"]["views_per_image"] == tiny_distil.epochs
    assert manifest["distillation"]["folds"] == tiny_distil.members
    assert manifest["architecture"].startswith("1 x FineTunedBackbone(mobilenetv3-coco, 64x64")
    cv = manifest["cross_validation"]
    assert cv["images"] == 48 and cv["temperature"] > 0 and cv["bias"][0] == 0
    assert cv["what"].startswith("out-of-fold predictions of 2 cross-fitted students")
    assert 0.0 <= cv["ece"] <= 1.0
    assert "quantization" not in manifest
    assert report["images"] == 16
    assert 0.0 <= report["expected_calibration_error"] <= 1.0
    assert len(report["reliability"]) == 10


def test_a_fresh_teacher_is_trained_on_the_same_images_first(
    small_data: Path, tiny_distil: TrainRecipe, tmp_path: Path
) -> None:
    """What retraining does: no teacher artifact, so the ensemble recipe trains one."""
    recipe = dataclasses.replace(tiny_distil, teacher=FRESH_TEACHER, epochs=1)
    assert recipe.teacher_recipe().method == "ensemble"
    assert recipe.teacher_recipe().flip_tta is True
    out = tmp_path / "student"
    build_model(small_data, out, recipe, threshold=0.93, name="tiny")
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["recipe"]["teacher"] == FRESH_TEACHER
    teacher = manifest["teacher"]
    assert teacher["architecture"].startswith("2 x FineTunedBackbone(mobilenetv3-coco, 64x64")
    (shipped,) = resolve_teachers(TrainRecipe.for_network("mobilenetv3-coco", "distil"))
    reference = json.loads((shipped / "model.json").read_text())
    assert teacher["onnx_sha256"] != reference["onnx_sha256"]
    # The teacher's own numbers are on the same validation split the student reports on.
    assert teacher["metrics"]["images"] == manifest["metrics"]["images"] == 16
    assert manifest["architecture"].startswith("1 x FineTunedBackbone(mobilenetv3-coco, 64x64")
    # The teacher was only needed while distilling: nothing of it is left beside the student.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    with pytest.raises(ValueError, match="needs a teacher artifact"):
        resolve_teachers(recipe)


def test_train_command_takes_the_recipe(
    small_data: Path, small_teacher: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli-student"
    argv = ["train", "--recipe", "distil", "--data", str(small_data), "--out", str(out)]
    argv += ["--teacher", str(small_teacher), "--seed", str(TINY_SPLIT["seed"])]
    argv += [
        "--epochs",
        "1",
        "--members",
        "2",
        "--resize",
        "48",
        "--threads",
        "1",
        "--no-cross-fit",
    ]
    argv += ["--validation-fraction", "0.25", "--threshold", "0.9", "--quiet"]
    argv += ["--hard-label-weight", "0.25", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    manifest = OnnxClassifier(out).manifest.extra
    assert manifest["recipe"]["hard_label_weight"] == 0.25
    assert manifest["distillation"]["hard_label_weight"] == 0.25
    # The teacher-labelled views were kept for the next run.
    assert len(list((tmp_path / "cache").glob("transfer-*.pt"))) == 1
    assert manifest["recipe"]["method"] == "distil"
    assert manifest["recipe"]["resize"] == 48
    assert manifest["recipe"]["cross_fit"] is False
    assert manifest["teacher"]["name"] == TEACHER_NAME
    # Without cross-fitting the student is calibrated and measured on the one fold
    # it never trained on: half of the 48 training images here.
    cv = manifest["cross_validation"]
    assert cv["images"] == 24
    assert cv["what"].startswith("the shipped student on the training fold it never saw")

"""Training end to end on real images: the artifact it writes is the one the server loads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from scones.cli.main import main
from scones.model.artifact import OnnxClassifier, sha256_file
from scones.model.backbone import MOBILENETV3_COCO
from scones.model.build import build_model, split_data
from scones.model.export import save_artifact
from scones.model.folders import load_images, stratified_split
from scones.model.recipe import RESNET_SETTINGS
from scones.model.train import (
    TrainRecipe,
    build_network,
    build_optimiser,
    set_learning_rates,
    train_ensemble,
)

LABELS = ("bicycle", "motorcycle")


def test_trained_ensemble_exports_to_matching_onnx(
    small_data: Path, tiny_recipe: TrainRecipe, tmp_path: Path
) -> None:
    data = load_images(small_data, LABELS)
    split = split_data(data, small_data, tiny_recipe.validation_fraction, tiny_recipe.seed)
    trained = train_ensemble(split.train, tiny_recipe)
    assert len(trained.calibrations) == 2
    assert all(c.temperature > 0 and c.bias[0] == 0 for c in trained.calibrations)

    save_artifact(
        tmp_path,
        trained.model,
        name="tiny",
        labels=LABELS,
        input_size=(32, 32),
        extra={"seed": tiny_recipe.seed},
        check_pixels=split.validation.pixels[:8],
    )
    classifier = OnnxClassifier(tmp_path)
    onnx_probabilities = classifier.predict_tensor(split.validation.pixels)
    with torch.no_grad():
        torch_probabilities = trained.model(torch.from_numpy(split.validation.pixels)).numpy()
    assert onnx_probabilities.shape == (len(split.validation), 2)
    np.testing.assert_allclose(onnx_probabilities, torch_probabilities, atol=1e-5)
    np.testing.assert_allclose(onnx_probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (onnx_probabilities >= 0).all()

    # The serving path: encoded PNG bytes in, a list in label order out.
    png = split.validation.paths[0].read_bytes()
    served = classifier.predict_bytes(png)
    assert len(served) == 2
    np.testing.assert_allclose(served, onnx_probabilities[0], atol=1e-6)


def test_build_model_writes_a_complete_consistent_artifact(
    small_data: Path, tiny_recipe: TrainRecipe, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    report = build_model(small_data, out, tiny_recipe, threshold=0.93, name="tiny")

    assert sorted(p.name for p in out.iterdir()) == [
        "baseline.json",
        "evaluation.json",
        "evaluation.png",
        "model.json",
        "model.onnx",
    ]
    assert not list(tmp_path.glob(".model-*")), "the staging folder is left behind"
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["onnx_sha256"] == sha256_file(out / "model.onnx")
    assert manifest["labels"] == list(LABELS)
    assert manifest["input_size"] == [32, 32]
    assert manifest["recipe"]["epochs"] == 1
    assert manifest["split"]["validation_images"] == 16
    assert manifest["split"]["train_images"] == 48
    assert manifest["metrics"]["accuracy"] == report["accuracy"]
    cross_validation = manifest["cross_validation"]
    assert cross_validation["images"] == 48
    assert np.array(cross_validation["confusion_matrix"]).sum(axis=1).tolist() == [24, 24]

    # The report covers exactly the held-out images, none of the training ones.
    data = load_images(small_data, LABELS)
    _, held = stratified_split(data.targets, 0.25, tiny_recipe.seed)
    assert report["images"] == len(held) == 16
    assert report["split"]["validation_per_class"] == {"bicycle": 8, "motorcycle": 8}

    baseline = json.loads((out / "baseline.json").read_text())
    assert baseline["model_version"] == manifest["version"]
    assert baseline["sample_count"] == 16
    assert baseline["threshold"] == 0.93
    assert sum(baseline["label_mix"].values()) == pytest.approx(1.0)
    assert baseline["low_confidence_share"] == pytest.approx(1 - report["at_threshold"]["coverage"])
    percentiles = baseline["confidence_percentiles"]
    assert 0.5 <= percentiles["p10"] <= percentiles["p50"] <= percentiles["p90"] <= 1.0


@pytest.mark.parametrize("network", ["mobilenetv3-coco", "resnet"])
def test_same_seed_gives_identical_weights(
    small_data: Path, tiny_recipe: TrainRecipe, tiny_resnet_recipe: TrainRecipe, network: str
) -> None:
    recipe = tiny_recipe if network == "mobilenetv3-coco" else tiny_resnet_recipe
    data = load_images(small_data, LABELS)
    first = train_ensemble(data, recipe).model.state_dict()
    second = train_ensemble(data, recipe).model.state_dict()
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def test_train_command_writes_the_artifact(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-model"
    argv = ["train", "--recipe", "ensemble", "--data", str(small_data), "--out", str(out)]
    argv += ["--epochs", "1", "--members", "2", "--resize", "64", "--threads", "1"]
    argv += ["--threshold", "0.9"]
    argv += ["--validation-fraction", "0.25", "--quiet"]
    assert main(argv) == 0
    classifier = OnnxClassifier(out)
    assert classifier.labels == LABELS
    assert json.loads((out / "baseline.json").read_text())["threshold"] == 0.9
    manifest = classifier.manifest.extra
    assert manifest["recipe"]["network"] == "mobilenetv3-coco"
    assert manifest["recipe"]["resize"] == 64
    assert manifest["backbone"]["sha256"] == dict(MOBILENETV3_COCO.sha256)
    assert "FineTunedBackbone(mobilenetv3-coco, 64x64" in manifest["architecture"]


def test_train_command_trains_the_resnet_from_scratch(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "resnet-model"
    argv = ["train", "--recipe", "ensemble", "--network", "resnet"]
    argv += ["--data", str(small_data), "--out", str(out)]
    argv += ["--epochs", "1", "--members", "2", "--width", "4", "--threads", "1"]
    argv += ["--threshold", "0.9", "--validation-fraction", "0.25", "--quiet"]
    assert main(argv) == 0
    manifest = OnnxClassifier(out).manifest.extra
    assert manifest["recipe"]["network"] == "resnet"
    # the resnet's own defaults apply where no option was given
    assert manifest["recipe"]["learning_rate"] == RESNET_SETTINGS["learning_rate"]
    assert manifest["recipe"]["width"] == 4
    assert "backbone" not in manifest
    assert manifest["architecture"].startswith("2 x SmallResNet(width=4")


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--threshold", "1.5"], "between 0 and 1"),
        (["--threshold", "0.9", "--epochs", "0"], "epochs must be >= 1"),
        (["--threshold", "0.9", "--members", "1"], "members must be >= 2"),
        (["--threshold", "0.9", "--resize", "16"], "resize must be >= 32"),
        (["--threshold", "0.9", "--width", "4"], "width: not used by network mobilenetv3-coco"),
        (["--threshold", "0.9", "--network", "resnet", "--resize", "64"], "resize: not used"),
        (["--threshold", "0.9", "--name", " "], "--name is ' ', not a non-empty string"),
        (
            ["--threshold", "0.9", "--recipe", "ensemble", "--teacher", "fresh"],
            "teacher: only used by the distil method",
        ),
        (
            ["--threshold", "0.9", "--recipe", "ensemble", "--cross-fit"],
            "cross_fit: only used by the distil method",
        ),
        (
            ["--threshold", "0.9", "--recipe", "ensemble", "--cache-dir", "views"],
            "--cache-dir keeps the teacher's views: only used by --recipe distil",
        ),
        # Where the results go is judged before the training, not after it.
        (
            ["--threshold", "0.9", "--out", "/proc/scones-model"],
            "--out's parent folder /proc: cannot write there",
        ),
        (["--threshold", "0.9", "--cache-dir", "/proc/views"], "--cache-dir /proc/views: cannot"),
    ],
)
def test_train_command_rejects_bad_settings(
    small_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra_args: list[str],
    message: str,
) -> None:
    argv = ["train", "--data", str(small_data), "--out", str(tmp_path / "m"), *extra_args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--epochs", "-5"], "epochs must be >= 1"),
        (["--recipe", "ensemble", "--hard-label-weight", "0.5"], "hard_label_weight: only used"),
        ([], "training needs torch"),
    ],
)
def test_without_torch_the_settings_are_judged_before_torch_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra_args: list[str],
    message: str,
) -> None:
    """The run environment has no torch: a mistake in the settings is still named."""
    monkeypatch.setattr("scones.cli.torch_free.torch_installed", lambda: False)
    assert main(["train", "--out", str(tmp_path / "m"), *extra_args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert ("training needs torch" in err) == (message == "training needs torch")


def test_train_command_names_a_missing_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    argv = ["train", "--data", str(missing), "--out", str(tmp_path / "m"), "--threshold", "0.9"]
    assert main(argv) == 2
    assert f"data folder not found: {missing}" in capsys.readouterr().err


def test_train_command_names_an_empty_class_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "bicycle").mkdir(parents=True)
    (tmp_path / "data" / "motorcycle").mkdir()
    (tmp_path / "data" / "bicycle" / "notes.txt").write_text("not an image")
    argv = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m")]
    assert main([*argv, "--threshold", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "bicycle holds no images" in err


def test_train_command_names_an_unreadable_image(
    subset_copier: Callable[[Path, int], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = subset_copier(tmp_path / "data", 5)
    broken = data / "motorcycle" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--threshold", "0.9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err
    assert str(broken) in err


def test_export_is_byte_identical_for_identical_weights(
    small_data: Path, tiny_recipe: TrainRecipe, tmp_path: Path
) -> None:
    """So a retrained model's sha256 (and so its version) says whether anything changed."""
    data = load_images(small_data, LABELS)
    trained = train_ensemble(data, tiny_recipe)
    digests = []
    for name in ("first", "second"):
        manifest = save_artifact(
            tmp_path / name,
            trained.model,
            name="tiny",
            labels=LABELS,
            input_size=(32, 32),
            extra={},
            check_pixels=data.pixels[:4],
        )
        digests.append(manifest.onnx_sha256)
    assert digests[0] == digests[1]


def test_fine_tuning_steps_the_backbone_more_gently(tiny_recipe: TrainRecipe) -> None:
    model = build_network(tiny_recipe, 2)
    optimiser = build_optimiser(model, tiny_recipe)
    assert isinstance(optimiser, torch.optim.AdamW)
    base_lr = {id(p): g["base_lr"] for g in optimiser.param_groups for p in g["params"]}
    assert len(base_lr) == len(list(model.parameters())), "every parameter in exactly one group"
    for name, parameter in model.named_parameters():
        expected = tiny_recipe.learning_rate
        if name.startswith("backbone."):
            expected *= tiny_recipe.backbone_lr_scale
        assert base_lr[id(parameter)] == pytest.approx(expected), name
    decay = {id(p): g["weight_decay"] for g in optimiser.param_groups for p in g["params"]}
    assert decay[id(model.head.bias)] == 0.0
    assert decay[id(model.head.weight)] == tiny_recipe.weight_decay

    # the schedule scales every group from its own base: the backbone stays 10x gentler
    head_weight = model.head.weight
    backbone_weight = next(p for n, p in model.named_parameters() if n.startswith("backbone."))

    def lr_of(parameter: torch.nn.Parameter) -> float:
        return next(
            g["lr"] for g in optimiser.param_groups if any(p is parameter for p in g["params"])
        )

    for step, fraction in ((0, 0.25), (3, 1.0), (4 + 6, 0.0)):  # warm-up, peak, end
        set_learning_rates(optimiser, step, total=10, warmup=4)
        assert lr_of(head_weight) == pytest.approx(tiny_recipe.learning_rate * fraction)
        assert lr_of(backbone_weight) == pytest.approx(
            tiny_recipe.learning_rate * tiny_recipe.backbone_lr_scale * fraction
        )


def test_a_teacher_that_trained_on_the_students_validation_images_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default recipe distils the shipped ensemble (seed 0, fraction 0.2). Another seed
    holds out other images, most of which the teacher trained on: refused before training,
    as the student's validation numbers would be no test at all."""
    out = tmp_path / "m"
    assert main(["train", "--seed", "1", "--out", str(out), "--threshold", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "held out other validation images than this split (seed 1, fraction 0.2" in err
    assert "the teacher's: seed 0, fraction 0.2" in err and "--teacher fresh" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def van_truck_data(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small images under a team's own labels: ``van`` and ``truck``."""
    root = tmp_path_factory.mktemp("van-truck")
    for label, source in (("van", "bicycle"), ("truck", "motorcycle")):
        shutil.copytree(small_data / source, root / label)
    return root


TINY_RESNET_OPTIONS = ["--recipe", "ensemble", "--network", "resnet", "--epochs", "1"]
TINY_RESNET_OPTIONS += ["--members", "2", "--width", "4", "--threads", "1", "--threshold", "0.9"]
TINY_RESNET_OPTIONS += ["--validation-fraction", "0.25"]


def test_a_model_of_other_labels_is_named_after_them_not_the_shipped_model(
    van_truck_data: Path, tmp_path: Path
) -> None:
    """Without --name, model.json names the labels trained on: in `scones train` and in the
    retraining job's program (which is given no name), never the shipped classes'."""
    from scones.sagemaker import entry_point

    trained = tmp_path / "trained"
    argv = ["train", "--data", str(van_truck_data), "--labels", "van,truck", "--quiet"]
    assert main([*argv, "--out", str(trained), *TINY_RESNET_OPTIONS]) == 0
    assert OnnxClassifier(trained).manifest.name == "van-truck"

    retrained = tmp_path / "retrained"
    argv = ["--data", str(van_truck_data), "--labels", "van,truck", "--model-dir", str(retrained)]
    assert entry_point.main([*argv, *TINY_RESNET_OPTIONS]) == 0
    assert OnnxClassifier(retrained).manifest.name == "van-truck"

    # The shipped classes keep the shipped name, so `make model` writes the same model.json.
    from scones.model.recipe import DEFAULT_LABELS, model_name
    from scones.paths import SHIPPED_MODEL_DIR, SHIPPED_MODEL_NAME

    assert model_name(DEFAULT_LABELS) == SHIPPED_MODEL_NAME
    assert json.loads((SHIPPED_MODEL_DIR / "model.json").read_text())["name"] == SHIPPED_MODEL_NAME


def test_a_teacher_of_other_labels_is_refused_naming_both_label_sets(
    van_truck_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default recipe distils the shipped teacher (bicycle, motorcycle): for a team's own
    classes the refusal names the label mismatch, not the held-out images."""
    out = tmp_path / "m"
    argv = ["train", "--data", str(van_truck_data), "--labels", "van,truck"]
    assert main([*argv, "--out", str(out), "--threshold", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "answers the labels bicycle,motorcycle, but the student is trained on van,truck" in err
    assert "--teacher fresh" in err and "other validation images" not in err
    assert not out.exists()

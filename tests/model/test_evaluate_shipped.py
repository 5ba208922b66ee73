"""The shipped model: intact, loadable, and as good on its validation split as its report says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scones_core.monitoring.drift import model_baseline

from scones.model.artifact import ModelManifest, OnnxClassifier, sha256_file
from scones.model.build import evaluate_directory, validation_from_manifest
from scones.model.evaluate import baseline
from scones.model.folders import load_images
from scones.paths import PROJECT_ROOT, SHIPPED_MODEL_DIR

BUNDLED_DATA = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"
SHIPPED_MODEL = SHIPPED_MODEL_DIR
LABELS = ("bicycle", "motorcycle")


@pytest.fixture(scope="module")
def shipped() -> OnnxClassifier:
    return OnnxClassifier(SHIPPED_MODEL)  # checks the graph's sha256 against model.json


@pytest.fixture(scope="module")
def shipped_report() -> dict:
    return json.loads((SHIPPED_MODEL / "evaluation.json").read_text())


def test_manifest_describes_the_graph(shipped: OnnxClassifier) -> None:
    manifest = ModelManifest.load(SHIPPED_MODEL)
    assert manifest.onnx_sha256 == sha256_file(SHIPPED_MODEL / "model.onnx")
    assert manifest.labels == LABELS
    assert manifest.input_size == (32, 32)
    assert shipped.labels == LABELS
    for key in ("recipe", "seed", "split", "metrics", "created_at"):
        assert key in manifest.extra, key


def test_reports_name_the_shipped_graph(shipped: OnnxClassifier, shipped_report: dict) -> None:
    assert shipped_report["model"]["onnx_sha256"] == shipped.manifest.onnx_sha256
    baseline = json.loads((SHIPPED_MODEL / "baseline.json").read_text())
    assert baseline["model_version"] == shipped.manifest.version
    assert baseline["sample_count"] == shipped_report["images"]
    assert baseline["threshold"] == shipped_report["at_threshold"]["threshold"]


@pytest.mark.parametrize(
    "folder",
    sorted(path.parent for path in (PROJECT_ROOT / "models").rglob("model.json")),
    ids=lambda folder: str(folder.relative_to(PROJECT_ROOT)),
)
def test_every_model_folder_holds_a_baseline_it_can_deploy(folder: Path) -> None:
    """The offline stack and deploy-baseline publish a model's baseline.json only when it
    is that model's own and usable (``model_baseline``): each folder the project ships
    must pass, or `scones run --model` and `make deploy MODEL=` would refuse it."""
    manifest = ModelManifest.load(folder)
    body = (folder / "baseline.json").read_bytes()
    assert model_baseline(body, manifest.labels, manifest.version).model_version == (
        manifest.version
    )


def test_evaluation_json_is_reproduced_from_the_validation_split(shipped_report: dict) -> None:
    threshold = shipped_report["at_threshold"]["threshold"]
    report, probabilities = evaluate_directory(SHIPPED_MODEL, BUNDLED_DATA, threshold)
    keys = ("images", "accuracy", "confusion_matrix", "per_class", "at_threshold", "curve")
    for key in (*keys, "mistakes"):
        assert report[key] == shipped_report[key], key
    shipped_baseline = json.loads((SHIPPED_MODEL / "baseline.json").read_text())
    predicted = probabilities.argmax(axis=1)
    assert shipped_baseline["label_mix"]["bicycle"] == pytest.approx(float((predicted == 0).mean()))
    assert shipped_baseline["mean_confidence"] == pytest.approx(report["mean_confidence"], abs=1e-6)
    # The whole baseline, as the monitor's statistics summarise the same answers.
    manifest = ModelManifest.load(SHIPPED_MODEL)
    assert baseline(probabilities, manifest.labels, threshold, manifest.version) == (
        shipped_baseline
    )


def test_served_bytes_classify_validation_images_as_reported(
    shipped: OnnxClassifier, shipped_report: dict
) -> None:
    """A handful of validation PNGs through the server's bytes path agree with the report."""
    data = load_images(BUNDLED_DATA, LABELS)
    validation = validation_from_manifest(data, BUNDLED_DATA, shipped.manifest).validation
    assert len(validation) == shipped_report["images"]
    chosen = np.random.default_rng(0).choice(len(validation), size=24, replace=False)
    batch = shipped.predict_tensor(validation.pixels[chosen])
    served = np.array([shipped.predict_bytes(validation.paths[i].read_bytes()) for i in chosen])
    np.testing.assert_allclose(served, batch, atol=1e-6)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)
    correct = int((served.argmax(axis=1) == validation.targets[chosen]).sum())
    # How many of 24 a model with the reported accuracy gets wrong is binomial; allow 4 sigma.
    accuracy = shipped_report["accuracy"]
    expected_errors = 24 * (1 - accuracy)
    sigma = max(np.sqrt(24 * accuracy * (1 - accuracy)), 0.5)
    assert 24 - correct <= expected_errors + 4 * sigma


def test_labels_in_another_order_than_trained_are_named_not_blamed_on_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The split follows the labels' order: a model.json listing them the other way round
    holds out other images, and the error must say that the order may be what differs."""
    import shutil

    from scones.cli.main import main

    model = tmp_path / "swapped"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    manifest = json.loads((model / "model.json").read_text())
    manifest["labels"] = manifest["labels"][::-1]
    (model / "model.json").write_text(json.dumps(manifest))
    assert main(["evaluate", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "labels listed in another order than" in err and "motorcycle, bicycle" in err

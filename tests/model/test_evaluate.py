"""Evaluation arithmetic, on hand-made probabilities and on real images through onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scones.cli.main import main
from scones.model.build import evaluate_directory
from scones.model.evaluate import baseline, evaluate_probabilities, selective
from scones.model.export import save_artifact
from scones.model.report_figure import render_report
from tests import crafted_graphs as crafted
from tests.full_disk import fill_disk

LABELS = ("bicycle", "motorcycle")


def test_known_case_arithmetic() -> None:
    # true:      b     b     b     m     m     m     m
    # predicted: b     b     m     m     m     b     m
    # confident: yes   no    yes   yes   exact no    yes   (threshold 0.9)
    probabilities = np.array(
        [
            [0.95, 0.05],
            [0.60, 0.40],
            [0.02, 0.98],
            [0.01, 0.99],
            [0.10, 0.90],
            [0.55, 0.45],
            [0.30, 0.70],
        ]
    )
    targets = np.array([0, 0, 0, 1, 1, 1, 1])
    report = evaluate_probabilities(probabilities, targets, LABELS, threshold=0.9)

    assert report["images"] == 7
    assert report["accuracy"] == pytest.approx(5 / 7, abs=1e-6)
    assert report["confusion_matrix"]["matrix"] == [[2, 1], [1, 3]]
    assert report["per_class"]["bicycle"] == {
        "support": 3,
        "recall": pytest.approx(2 / 3, abs=1e-6),
        "precision": pytest.approx(2 / 3, abs=1e-6),
    }
    at = report["at_threshold"]
    # A top probability equal to the threshold is accepted, as the state machine does (>=).
    assert at["accepted"] == 4
    assert at["coverage"] == pytest.approx(4 / 7, abs=1e-6)
    assert at["accepted_correct"] == 3
    assert at["accepted_errors"] == 1
    assert at["accepted_accuracy"] == pytest.approx(0.75)
    assert report["mean_confidence"] == pytest.approx(probabilities.max(axis=1).mean(), abs=1e-6)

    curve = {point["threshold"]: point for point in report["curve"]}
    assert curve[0.5]["coverage"] == 1.0
    assert curve[0.999]["accepted"] == 0
    assert curve[0.999]["accepted_accuracy"] is None
    coverages = [point["coverage"] for point in report["curve"]]
    assert coverages == sorted(coverages, reverse=True)


def test_baseline_arithmetic() -> None:
    probabilities = np.array([[0.99, 0.01], [0.2, 0.8], [0.97, 0.03], [0.4, 0.6]])
    document = baseline(probabilities, LABELS, threshold=0.93, model_version="v1")
    assert document["label_mix"] == {"bicycle": 0.5, "motorcycle": 0.5}
    assert document["low_confidence_share"] == 0.5
    assert document["mean_confidence"] == pytest.approx((0.99 + 0.8 + 0.97 + 0.6) / 4)
    assert document["confidence_percentiles"]["p50"] == pytest.approx((0.8 + 0.97) / 2)
    assert document["sample_count"] == 4
    assert document["model_version"] == "v1"


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan")])
def test_rejects_thresholds_that_are_not_probabilities(threshold: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        evaluate_probabilities(np.array([[0.5, 0.5]]), np.array([0]), LABELS, threshold)
    with pytest.raises(ValueError, match="between 0 and 1"):
        selective(np.array([[0.5, 0.5]]), np.array([0]), threshold)


class _AlwaysBicycle(torch.nn.Module):
    """[0.96, 0.04] for every image, whatever it shows: a model whose report is known."""

    logits: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor([[np.log(0.96), np.log(0.04)]]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits + 0 * image.mean(dim=(1, 2, 3))[:, None], dim=1)


@pytest.fixture(scope="module")
def always_bicycle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("always-bicycle")
    save_artifact(
        directory,
        _AlwaysBicycle(),
        name="always-bicycle",
        labels=LABELS,
        input_size=(32, 32),
        extra={},
        check_pixels=np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32),
    )
    return directory


def test_real_images_through_onnx_with_a_known_confusion_matrix(
    always_bicycle: Path, small_data: Path
) -> None:
    report, probabilities = evaluate_directory(always_bicycle, small_data, 0.93, whole=True)
    assert report["images"] == 64
    assert report["confusion_matrix"]["matrix"] == [[32, 0], [32, 0]]
    assert report["accuracy"] == 0.5
    assert report["at_threshold"]["coverage"] == 1.0
    assert report["at_threshold"]["accepted_accuracy"] == 0.5
    assert report["per_class"]["motorcycle"]["precision"] is None
    np.testing.assert_allclose(probabilities, [[0.96, 0.04]] * 64, atol=1e-6)
    # At 0.97 nothing is confident enough any more.
    curve = {point["threshold"]: point for point in report["curve"]}
    assert curve[0.96]["coverage"] == 1.0
    assert curve[0.97]["coverage"] == 0.0


def test_the_report_names_every_mistake_and_whether_a_person_sees_it(
    always_bicycle: Path, small_data: Path
) -> None:
    report, _ = evaluate_directory(always_bicycle, small_data, 0.93, whole=True)
    mistakes = report["mistakes"]
    assert len(mistakes) == 32  # every motorcycle
    motorcycles = sorted(p.relative_to(small_data) for p in (small_data / "motorcycle").iterdir())
    assert sorted(Path(m["image"]).relative_to(small_data) for m in mistakes) == motorcycles
    for mistake in mistakes:
        assert (mistake["label"], mistake["predicted"]) == ("motorcycle", "bicycle")
        assert mistake["confidence"] == pytest.approx(0.96, abs=1e-6)
        assert mistake["accepted"] is True
    report, _ = evaluate_directory(always_bicycle, small_data, 0.97, whole=True)
    assert not any(m["accepted"] for m in report["mistakes"])


@pytest.mark.parametrize(
    ("threshold", "summary", "listed"),
    [
        ("0.93", "32 wrong: 32 accepted at the threshold, 0 sent to review", 20),
        ("0.97", "32 wrong: 0 accepted at the threshold, 32 sent to review", 0),
    ],
)
def test_evaluate_command_names_the_accepted_mistakes(
    always_bicycle: Path,
    small_data: Path,
    capsys: pytest.CaptureFixture[str],
    threshold: str,
    summary: str,
    listed: int,
) -> None:
    argv = ["evaluate", "--model", str(always_bicycle), "--data", str(small_data)]
    assert main([*argv, "--split", "all", "--threshold", threshold]) == 0
    out = capsys.readouterr().out
    assert summary in out
    lines = [line for line in out.splitlines() if "accepted and wrong: " in line]
    assert len(lines) == listed
    assert all("is motorcycle, answered bicycle at 0.960" in line for line in lines)
    assert ("... and 12 more (evaluation.json lists all)" in out) == bool(listed)


def test_evaluate_command_writes_json_and_png(
    always_bicycle: Path, small_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    argv = ["evaluate", "--model", str(always_bicycle), "--data", str(small_data)]
    assert main([*argv, "--out", str(out), "--split", "all", "--threshold", "0.5"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["at_threshold"]["threshold"] == 0.5
    assert report["model"]["name"] == "always-bicycle"
    with Image.open(out / "evaluation.png") as figure:
        assert figure.format == "PNG"
        assert figure.width > 800


def test_evaluate_command_without_out_only_prints_the_numbers(
    always_bicycle: Path,
    small_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--model", str(always_bicycle), "--data", str(small_data)]
    assert main([*argv, "--split", "all", "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "coverage 1.0000" in out and "wrote" not in out
    assert list(tmp_path.iterdir()) == []


def test_evaluate_command_needs_a_recorded_split_for_validation(
    always_bicycle: Path, small_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--model", str(always_bicycle), "--data", str(small_data)]
    assert main([*argv, "--out", str(tmp_path), "--threshold", "0.9"]) == 2
    assert "records no split seed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing-model", "model manifest not found"),
        ("missing-data", "data folder not found"),
        ("file-as-data", "is a file, not a data folder"),
        ("bad-threshold", "between 0 and 1"),
        ("tampered-graph", "has sha256"),
    ],
)
def test_evaluate_command_reports_bad_input_clearly(
    always_bicycle: Path,
    small_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    problem: str,
    message: str,
) -> None:
    model, data, threshold = always_bicycle, small_data, "0.9"
    if problem == "missing-model":
        model = tmp_path / "no-model"
    elif problem == "missing-data":
        data = tmp_path / "no-data"
    elif problem == "file-as-data":
        data = always_bicycle / "model.json"
    elif problem == "bad-threshold":
        threshold = "1.5"
    else:
        model = tmp_path / "tampered"
        model.mkdir()
        for name in ("model.json", "model.onnx"):
            (model / name).write_bytes((always_bicycle / name).read_bytes())
        with (model / "model.onnx").open("ab") as handle:
            handle.write(b"\0")
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*argv, "--split", "all", "--threshold", threshold]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_command_refuses_a_model_whose_answers_are_not_probabilities(
    tmp_path: Path, subset_copier: Callable[[Path, int], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A graph that passes the load-time dry run but answers a dark image with a row that
    sums to 1.5: the workflow fails every such answer, so its scores would say nothing."""
    model = crafted.artifact(tmp_path / "model", crafted.wrong_on_dark_images())
    data = subset_copier(tmp_path / "data", 3)
    Image.new("RGB", (32, 32)).save(data / "bicycle" / "night.png")
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*argv, "--split", "all", "--threshold", "0.9"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("scones: error: ") and "model.onnx breaks the contract: " in line
    assert "night.png is [0.75, 0.75]: the probabilities sum to 1.500000, not 1" in line
    assert not (tmp_path / "r").exists()


def test_evaluate_command_names_a_graph_failing_on_the_images_in_one_line(
    tmp_path: Path, subset_copier: Callable[[Path, int], Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime's error, and not its own log of it (written to the process's stderr,
    over several lines), nor a traceback."""
    model = crafted.artifact(tmp_path / "model", crafted.batches_of_two_only())
    data = subset_copier(tmp_path / "data", 3)
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--split", "all"]
    assert main([*argv, "--threshold", "0.9"]) == 2
    [line] = capfd.readouterr().err.splitlines()
    assert line.startswith("scones: error: ")
    assert "model.onnx fails on 6 images: [ONNXRuntimeError] : 1 : FAIL : " in line
    assert "Reshape" in line


def test_default_threshold_comes_from_the_template(
    always_bicycle: Path, small_data: Path, tmp_path: Path
) -> None:
    from scones.template_params import parameter_default

    argv = ["evaluate", "--model", str(always_bicycle), "--data", str(small_data)]
    assert main([*argv, "--out", str(tmp_path), "--split", "all"]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["at_threshold"]["threshold"] == float(parameter_default("ConfidenceThreshold"))


def test_a_full_disk_keeps_the_earlier_report_and_names_the_file(
    always_bicycle: Path,
    small_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An evaluation over an earlier one on a disk that fills: the earlier report stays
    whole (it was left as an empty or cut-off evaluation.json), and the error names the
    file the disk could not hold."""
    out = tmp_path / "report"
    argv = ["evaluate", "--model", str(always_bicycle), "--data", str(small_data)]
    assert main([*argv, "--out", str(out), "--split", "all", "--threshold", "0.5"]) == 0
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert set(earlier) == {"evaluation.json", "evaluation.png"}
    capsys.readouterr()

    fill_disk(monkeypatch, out)
    assert main([*argv, "--out", str(out), "--split", "all", "--threshold", "0.9"]) == 1
    # Each file as it was, and no partial file beside them.
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier
    error = capsys.readouterr().err
    assert f"No space left on device: '{out / 'evaluation.json'}'" in error
    # The figure, drawn over the earlier one on the same disk.
    report = json.loads(earlier["evaluation.json"])
    with pytest.raises(OSError, match="No space left on device") as raised:
        render_report(report, out / "evaluation.png")
    assert raised.value.filename == str(out / "evaluation.png")
    assert (out / "evaluation.png").read_bytes() == earlier["evaluation.png"]
    assert sorted(path.name for path in out.iterdir()) == sorted(earlier)


def test_an_unwritable_out_is_refused_before_the_evaluation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["evaluate", "--out", "/proc/no-such-folder"]) == 2
    printed = capsys.readouterr()
    assert "--out /proc/no-such-folder: cannot write there" in printed.err
    assert "images: accuracy" not in printed.out  # refused before it evaluated


def test_the_curve_reaches_down_to_the_lowest_top_probability_of_its_classes() -> None:
    """Three classes allow a top probability of 1/3: a threshold of 0.45 is one a team of
    three classes may choose, and its point must be on the curve the report draws."""
    probabilities = np.array([[0.4, 0.35, 0.25], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33]])
    report = evaluate_probabilities(
        probabilities, np.array([0, 1, 2]), ("van", "truck", "car"), threshold=0.45
    )
    thresholds = [point["threshold"] for point in report["curve"]]
    assert min(thresholds) == 0.33 and 0.45 in thresholds
    two = evaluate_probabilities(
        np.array([[0.6, 0.4], [0.2, 0.8]]), np.array([0, 1]), ("a", "b"), 0.9
    )
    assert min(point["threshold"] for point in two["curve"]) == 0.5

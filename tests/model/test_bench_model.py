"""``scones bench model``: models side by side, timed and scored, in one run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scones.cli.main import main
from scones.model.bench import format_model_bench, run_model_bench
from scones.model.build import build_model, evaluate_directory
from scones.model.train import TrainRecipe


@pytest.fixture(scope="module")
def two_models(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-models")
    common = {"seed": 3, "validation_fraction": 0.25, "members": 2, "epochs": 1}
    common |= {"batch_size": 16, "threads": 1}
    small = TrainRecipe.for_network("resnet", **common, width=4)
    wider = TrainRecipe.for_network("resnet", **common, width=16)
    build_model(small_data, root / "small", small, threshold=0.9, name="small")
    build_model(small_data, root / "wide", wider, threshold=0.9, name="wide")
    return root / "wide", root / "small"


def test_rows_hold_speed_size_and_quality(small_data: Path, two_models: tuple[Path, Path]) -> None:
    wide, small = two_models
    rows = run_model_bench(
        [("wide", wide), ("small", small)], small_data, 0.9, timed_images=5, warmup=1
    )
    assert [row.label for row in rows] == ["wide", "small"]
    for row, path in zip(rows, (wide, small), strict=True):
        report = json.loads((path / "evaluation.json").read_text())
        assert row.images == report["images"] == 16
        assert row.accuracy == report["accuracy"]
        assert row.coverage == report["at_threshold"]["coverage"]
        assert row.accepted_errors == report["at_threshold"]["accepted_errors"]
        assert row.expected_calibration_error == pytest.approx(
            report["expected_calibration_error"], abs=1e-4
        )
        assert row.file_bytes == (path / "model.onnx").stat().st_size
        assert 0 < row.ms_p50 <= row.ms_p95
        assert row.images_per_second > 0
    assert rows[0].file_bytes > rows[1].file_bytes
    table = format_model_bench(rows, 0.9)
    assert table.count("\n") == 3 and "| wide |" in table and "coverage at 0.9" in table


def test_bench_model_command(
    small_data: Path,
    two_models: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wide, small = two_models
    out = tmp_path / "bench.json"
    argv = ["bench", "model", "--model", str(wide), "--model", str(small)]
    argv += ["--data", str(small_data), "--images", "3", "--warmup", "0", "--threshold", "0.9"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ms/image p50" in printed and "ECE" in printed
    payload = json.loads(out.read_text())
    assert payload["threshold"] == 0.9
    assert [m["version"] for m in payload["models"]] == [
        json.loads((p / "model.json").read_text())["version"] for p in (wide, small)
    ]


def test_bench_model_names_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "model", "--model", str(tmp_path), "--images", "1"]) != 0
    assert "model manifest not found" in capsys.readouterr().err


def test_a_separate_test_set_is_benched_whole_as_the_refusal_says(
    two_models: tuple[Path, Path],
    subset_copier: Callable[[Path, int], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder other than the one the models' split was drawn from has no recorded
    split: the refusal names ``--split all``, and bench model takes it (as evaluate
    does), scoring every image."""
    wide, small = two_models
    other = subset_copier(tmp_path / "other", 6)
    argv = ["bench", "model", "--model", str(wide), "--model", str(small), "--data", str(other)]
    argv += ["--images", "2", "--warmup", "0", "--threshold", "0.9"]
    assert main(argv) == 2
    assert "evaluate a different data set with --split all" in capsys.readouterr().err
    out = tmp_path / "bench.json"
    assert main([*argv, "--split", "all", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["models"]
    assert [row["images"] for row in rows] == [12, 12]
    for row, path in zip(rows, (wide, small), strict=True):
        report, _ = evaluate_directory(path, other, 0.9, whole=True)
        assert row["accuracy"] == report["accuracy"]
        assert row["coverage"] == report["at_threshold"]["coverage"]

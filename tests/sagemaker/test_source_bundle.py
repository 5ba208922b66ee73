"""The script-mode source bundle, run the way the SageMaker training toolkit runs it."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest
from sagemaker_fixtures import REGION

from scones.model.artifact import OnnxClassifier
from scones.sagemaker import entry_point, source_bundle, training
from scones.sagemaker.errors import LaunchError
from scones.sagemaker.s3 import S3Uri

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "cifar100-bicycle-motorcycle"


def members(bundle: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        return {info.name: info for info in tar.getmembers()}


def test_bundle_is_reproducible_and_holds_what_the_toolkit_needs() -> None:
    bundle = source_bundle.build_bundle()
    assert bundle == source_bundle.build_bundle()
    found = members(bundle)
    assert {"scones_train.py", "requirements.txt", "scones/__init__.py", "LICENSE"} <= set(found)
    assert "scones/sagemaker/entry_point.py" in found and "scones/model/build.py" in found
    backbone = "scones/model/backbones/mobilenetv3_centernet_coco/"
    assert {backbone + name for name in ("centernet.json", "centernet.bin", "LICENSE")} <= set(
        found
    ), "the pretrained backbone that training starts from"
    assert not [name for name in found if "__pycache__" in name or name.endswith(".pyc")]
    assert all(info.mtime == 0 and info.uid == 0 and info.isreg() for info in found.values())


def test_requirements_pin_the_lock_files_versions_which_the_tests_run() -> None:
    pins = source_bundle.pinned_requirements(("numpy", "onnx", "Pillow"))
    assert pins == (
        f"numpy=={metadata.version('numpy')}\nonnx=={metadata.version('onnx')}\n"
        f"Pillow=={metadata.version('pillow')}\n"
    )
    with tarfile.open(fileobj=io.BytesIO(source_bundle.build_bundle())) as tar:
        requirements = tar.extractfile("requirements.txt")
        assert requirements is not None
        assert requirements.read().decode() == source_bundle.pinned_requirements()
    with pytest.raises(
        LaunchError, match=re.escape("not-a-real-package is not pinned in run.lock, train.lock")
    ):
        source_bundle.pinned_requirements(("not-a-real-package",))


def test_a_lock_line_that_is_not_a_pin_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    lock.write_text("# a comment\n\nnumpy==2.4.6  # why\nPillow>=13\n")
    with pytest.raises(LaunchError, match=re.escape("run.lock line 4 is not name==version")):
        source_bundle.locked_versions([lock])
    lock.write_text("# a comment\n\nnumpy==2.4.6  # why\nPillow==13.0.0\n")
    assert source_bundle.locked_versions([lock]) == {"numpy": "2.4.6", "pillow": "13.0.0"}
    custom = members(source_bundle.build_bundle("torchvision==0.0\n"))
    assert custom["requirements.txt"].size == len("torchvision==0.0\n")


def toolkit_arguments(hyperparameters: dict[str, str]) -> list[str]:
    """What sagemaker-training passes to the program: JSON-decoded ``--name value`` pairs."""
    arguments: list[str] = []
    for name, encoded in hyperparameters.items():
        if not name.startswith("sagemaker_"):
            arguments += [f"--{name}", str(json.loads(encoded))]
    return arguments


@pytest.mark.slow
def test_bundle_trains_a_servable_model_like_a_training_job(tmp_path: Path) -> None:
    code, data, model = (
        tmp_path / "opt/ml/code",
        tmp_path / "opt/ml/input/data/train",
        tmp_path / "opt/ml/model",
    )
    with tarfile.open(fileobj=io.BytesIO(source_bundle.build_bundle())) as tar:
        tar.extractall(code, filter="data")
    for class_name in ("bicycle", "motorcycle"):
        (data / class_name).mkdir(parents=True)
        for path in sorted((BUNDLED / "train" / class_name).glob("*.png"))[:16]:
            shutil.copy(path, data / class_name)
    hyperparameters = training.script_hyperparameters(
        {"epochs": 1, "members": 2, "resize": 64, "batch_size": 8, "threads": 1, "threshold": 0.93},
        program=source_bundle.PROGRAM,
        submit_directory=S3Uri.parse("s3://scones-data/job/source/sourcedir.tar.gz"),
        region=REGION,
        job_name="job",
    )
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(data), "SM_MODEL_DIR": str(model)}
    env.pop("PYTHONPATH", None)
    program = json.loads(hyperparameters["sagemaker_program"])
    result = subprocess.run(
        [sys.executable, program, *toolkit_arguments(hyperparameters)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "32 images" in result.stderr and "validation accuracy" in result.stdout
    # The shipped recipe, with a teacher trained first on the job's own images (the
    # bundle carries no teacher, and newly labelled images must reach the student).
    assert "training the teacher" in result.stderr
    manifest = json.loads((model / "model.json").read_text())
    assert (manifest["recipe"]["method"], manifest["recipe"]["teacher"]) == ("distil", "fresh")
    assert manifest["teacher"]["architecture"].startswith("2 x FineTunedBackbone")

    classifier = OnnxClassifier(model)
    image = next((BUNDLED / "train" / "motorcycle").glob("*.png")).read_bytes()
    probabilities = classifier.predict_bytes(image)
    assert classifier.labels == ("bicycle", "motorcycle")
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1) < 1e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "1"], "the following arguments are required: --threshold"),
        (["--threshold", "0.9"], "SM_CHANNEL_TRAIN and SM_MODEL_DIR are unset"),
        (
            ["--threshold", "0.9", "--data", ".", "--model-dir", ".", "--members", "1"],
            "members must",
        ),
        (["--threshold", "1.5", "--data", ".", "--model-dir", "."], "threshold"),
        (
            ["--threshold", "0.9", "--data", ".", "--model-dir", ".", "--cross_fit", "maybe"],
            "expected true or false, got 'maybe'",
        ),
        (
            ["--threshold", "0.9", "--data", ".", "--model-dir", ".", "--recipe", "boosting"],
            "invalid choice: 'boosting'",
        ),
        (
            ["--threshold", "0.9", "--data", ".", "--model-dir", ".", "--name", ""],
            "--name is '', not a non-empty string",
        ),
        (
            [
                *("--threshold", "0.9", "--data", ".", "--model-dir", "."),
                *("--recipe", "ensemble", "--hard_label_weight", "0.3"),
            ],
            "hard_label_weight: only used by the distil method",
        ),
    ],
)
def test_entry_point_reports_bad_arguments(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry_point.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_refused_training_names_its_reason_where_sagemaker_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A training job's FailureReason is the first 1 KB of /opt/ml/output/failure: the
    retraining run's record then says which class is too small, not a traceback."""
    data = tmp_path / "train"
    for class_name, count in (("bicycle", 4), ("motorcycle", 8)):
        (data / class_name).mkdir(parents=True)
        for path in sorted((BUNDLED / "train" / class_name).glob("*.png"))[:count]:
            shutil.copy(path, data / class_name)
    failure = tmp_path / "output" / "failure"
    argv = ["--data", str(data), "--model-dir", str(tmp_path / "model"), "--threshold", "0.93"]
    assert entry_point.main([*argv, "--failure-file", str(failure)]) == 1
    reason = failure.read_text(encoding="utf-8")
    assert reason.startswith(f"DataError: too few images to train on in {data}: bicycle has 4")
    assert f"error: {reason.removeprefix('DataError: ')}" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
    # In a training job it is written by default; elsewhere (offline) only where asked.
    config = tmp_path / "hyperparameters.json"
    monkeypatch.setattr(entry_point, "TRAINING_JOB_CONFIG", config)
    assert entry_point.build_parser().parse_args(argv).failure_file is None
    config.write_text("{}", encoding="utf-8")
    assert entry_point.build_parser().parse_args(argv).failure_file == Path(
        "/opt/ml/output/failure"
    )


@pytest.mark.parametrize("name", entry_point.PATH_OPTIONS)
def test_where_the_jobs_files_are_is_not_a_hyperparameter(name: str) -> None:
    """SageMaker names a job's channels and folders; a hyperparameter of the same name
    would move them (a failure reason written where SageMaker never reads it)."""
    with pytest.raises(ValueError, match=f"^{name}: where the job's files are"):
        entry_point.check_hyperparameters({"threshold": 0.9, name: "/tmp/elsewhere"})
    assert entry_point.check_hyperparameters({"threshold": 0.9, "members": "08"}).members == 8

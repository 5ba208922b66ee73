"""Images people labelled in review, as retraining reads them: offline and in the job."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scones.cli.main import main
from scones.model.folders import DataError, class_root, list_labelled
from scones.sagemaker.entry_point import merge_channels
from scones.template_params import PROJECT_ROOT

LABELS = ("bicycle", "motorcycle")
BUNDLED = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle"


def _image(label: str) -> bytes:
    return next((BUNDLED / "train" / label).glob("*.png")).read_bytes()


def test_a_refused_labelled_image_is_named_and_left_out_not_fatal(tmp_path: Path) -> None:
    """One bad object under LabelledDataPrefix must not fail every later retraining."""
    for label in LABELS:
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / "a.png").write_bytes(_image(label))
    labelled = tmp_path / "labelled" / "bicycle"
    labelled.mkdir(parents=True)
    (labelled / "good.png").write_bytes(_image("bicycle"))
    (labelled / "truncated.png").write_bytes(_image("bicycle")[:60])
    merged = merge_channels([tmp_path / "train", tmp_path / "labelled"], LABELS, tmp_path / "m")
    assert sorted(p.name for p in (merged.root / "bicycle").iterdir()) == [
        "c0-a.png",
        "c1-good.png",
    ]
    [(path, reason)] = merged.left_out
    assert path == labelled / "truncated.png"  # the labelled object, not a temporary link
    assert reason


def test_labelled_images_of_one_label_are_enough_and_other_folders_are_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "motorcycle").mkdir()
    (tmp_path / "motorcycle" / "m.png").write_bytes(_image("motorcycle"))
    (tmp_path / "scooter").mkdir()
    (tmp_path / "scooter" / "s.png").write_bytes(_image("motorcycle"))
    files, others = list_labelled(tmp_path, LABELS)
    assert files == [(tmp_path / "motorcycle" / "m.png", 1)]
    assert others == ["scooter/"]

    (tmp_path / "motorcycle" / "m.png").unlink()
    with pytest.raises(DataError, match=r"holds no images in bicycle/ or motorcycle/ \(it has "):
        list_labelled(tmp_path, LABELS)


def test_a_training_folder_missing_one_label_says_which(tmp_path: Path) -> None:
    (tmp_path / "bicycle").mkdir()
    with pytest.raises(DataError, match=r"has no motorcycle/ folder: it needs one folder per"):
        class_root(tmp_path, LABELS)
    with pytest.raises(DataError, match="has no class folders"):
        class_root(tmp_path / "bicycle", LABELS)


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("empty", "holds no images in bicycle/ or motorcycle/"),
        ("unknown", "holds no images in bicycle/ or motorcycle/ (it has scooter/)"),
    ],
)
def test_retrain_refuses_labelled_folders_it_cannot_use_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    folder: str,
    message: str,
) -> None:
    _never_run(monkeypatch)
    (tmp_path / "empty").mkdir()
    (tmp_path / "unknown" / "scooter").mkdir(parents=True)
    (tmp_path / "unknown" / "scooter" / "s.png").write_bytes(_image("bicycle"))
    argv = ["retrain", "--labelled", str(tmp_path / folder), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def _never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: object) -> None:
        raise AssertionError("the rehearsal started")

    monkeypatch.setattr("scones.offline.retrain.OfflineRetrain.run", refuse)


def test_retrain_without_torch_says_where_it_runs_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _never_run(monkeypatch)
    monkeypatch.setattr("scones.cli.torch_free.torch_installed", lambda: False)
    assert main(["retrain", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err and ".venv-train/bin/python -m scones.cli.main retrain" in err


def test_retrain_judges_its_recipe_for_the_stacks_retraining_network_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RetrainingNetwork=resnet: the short recipe fits it (the run gets as far as the torch
    check), and an override it cannot take is refused naming the parameter, not after the
    stack has started."""
    _never_run(monkeypatch)
    monkeypatch.setattr("scones.cli.torch_free.torch_installed", lambda: False)
    argv = ["retrain", "--out", str(tmp_path / "out"), "--param", "RetrainingNetwork=resnet"]
    assert main(argv) == 2
    assert "needs torch" in capsys.readouterr().err
    assert main([*argv, "--hyperparameter", "resize=96"]) == 2
    err = capsys.readouterr().err
    assert "the training program refuses it (RetrainingNetwork=resnet)" in err
    assert "resize: not used by network resnet" in err and "needs torch" not in err


def test_training_defaults_to_the_templates_labels() -> None:
    """A model trained without ``--labels`` answers what a stack with default parameters
    expects, so the gate's label check passes for it."""
    from scones.model.recipe import DEFAULT_LABELS
    from scones.sagemaker.entry_point import build_parser
    from scones.template_params import parameter_defaults

    assert ",".join(DEFAULT_LABELS) == parameter_defaults()["ModelLabels"]
    args = build_parser().parse_args(["--threshold", "0.9", "--data", ".", "--model-dir", "."])
    assert args.labels == DEFAULT_LABELS


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("bicycle", "expected at least two comma-separated, non-empty labels"),
        ("bicycle,,motorcycle", "expected at least two comma-separated, non-empty labels"),
        ("bicycle,bicycle", "labels must be unique"),
        ("bicycle,motor\x1bcycle", "label 'motor\\x1bcycle' is not printable text"),
    ],
)
def test_train_and_the_job_refuse_labels_they_could_not_train(
    labels: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scones.sagemaker.entry_point import check_hyperparameters

    with pytest.raises(SystemExit) as exited:
        main(["train", "--labels", labels])
    assert exited.value.code == 2
    assert f"argument --labels: {labels!r}: {message}" in capsys.readouterr().err
    with pytest.raises(ValueError, match=re.escape(message)):
        check_hyperparameters({"threshold": 0.9, "labels": labels})


def test_labelled_images_merge_under_the_labels_given(tmp_path: Path) -> None:
    """A stack with other ModelLabels retrains on its own folders, in its own order."""
    labels = ("scooter", "bicycle")
    for label in labels:
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / "a.png").write_bytes(_image("bicycle"))
    (tmp_path / "train" / "motorcycle").mkdir()
    (tmp_path / "labelled" / "scooter").mkdir(parents=True)
    (tmp_path / "labelled" / "scooter" / "b.png").write_bytes(_image("motorcycle"))
    merged = merge_channels([tmp_path / "train", tmp_path / "labelled"], labels, tmp_path / "m")
    assert sorted(p.name for p in merged.root.iterdir()) == ["bicycle", "scooter"]
    assert sorted(p.name for p in (merged.root / "scooter").iterdir()) == ["c0-a.png", "c1-b.png"]


def test_retrain_on_other_data_than_productions_is_refused_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate set is production's own validation split. Held out of other data with the
    same seed, it would be mostly images production trained on (114 of 200 with one image
    added), and the gate would favour production."""
    import shutil

    _never_run(monkeypatch)
    data = tmp_path / "data"
    shutil.copytree(BUNDLED / "train", data)
    (data / "bicycle" / "zz-extra.png").write_bytes(_image("motorcycle"))
    assert main(["retrain", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{data} is not the data the production model was trained on" in err
    # The bundled data is production's: not refused by this check (the run is stopped here).
    monkeypatch.setattr("scones.cli.torch_free.torch_installed", lambda: False)
    assert main(["retrain", "--data", str(BUNDLED), "--out", str(tmp_path / "out")]) == 2
    assert "needs torch" in capsys.readouterr().err


def test_the_rehearsal_reports_what_the_program_trained_on_not_what_it_was_given() -> None:
    """The channels held 64 files; the program refused one labelled image and split 63:
    the train step says 63, and that one was left out."""
    from scones.offline.retrain import images_trained

    split = {"train_images": 47, "validation_images": 16}
    assert images_trained({"split": split}, {"train": 60, "labelled": 4}) == (63, 1)
    assert images_trained({"split": split}, {"train": 60, "labelled": 3}) == (63, 0)
    # A model.json without a split (a model of another program): the files it was given.
    assert images_trained({}, {"train": 60, "labelled": 4}) == (64, 0)


def test_a_job_whose_channels_cannot_be_merged_fails_with_its_reason_written(
    tmp_path: Path,
) -> None:
    """Labels the channels have no folders for fail the job as any data it cannot train
    on does: exit 1 and the reason in the failure file (the job's FailureReason, which
    the run's FAILED record then carries), not an exception that leaves no reason."""
    from scones.sagemaker.entry_point import main as job_main

    for label in LABELS:
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / "a.png").write_bytes(_image(label))
    (tmp_path / "labelled" / "bicycle").mkdir(parents=True)
    (tmp_path / "labelled" / "bicycle" / "b.png").write_bytes(_image("bicycle"))
    failure = tmp_path / "failure"
    argv = ["--data", str(tmp_path / "train"), "--labelled", str(tmp_path / "labelled")]
    argv += ["--model-dir", str(tmp_path / "model"), "--threshold", "0.93"]
    argv += ["--labels", "cat,dog", "--failure-file", str(failure)]
    assert job_main(argv) == 1
    reason = failure.read_text()
    assert reason.startswith("DataError: ") and "has no class folders (cat/, dog/)" in reason


def _no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check passed once the run gets as far as the torch check."""
    _never_run(monkeypatch)
    monkeypatch.setattr("scones.cli.torch_free.torch_installed", lambda: False)


def test_retrain_refuses_labels_other_than_the_stacks_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_torch(monkeypatch)
    argv = ["retrain", "--out", str(tmp_path / "out"), "--hyperparameter"]
    for labels in ("cat,dog", "motorcycle,bicycle"):
        assert main([*argv, f"labels={labels}"]) == 2
        err = capsys.readouterr().err
        assert f"labels={labels}: the stack's ModelLabels are bicycle,motorcycle" in err
    assert main([*argv, "labels=bicycle,motorcycle"]) == 2
    assert "needs torch" in capsys.readouterr().err


def test_retrain_reads_every_image_it_is_given_before_the_stack_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file the run's jobs would fail on is named by the path given, before the stack
    starts: a training or gate image is an error; a labelled image the rules refuse is
    left out and named, as the training job leaves it out; one that cannot be read, or
    whose name cannot be an S3 key, is an error."""
    import shutil

    _no_torch(monkeypatch)
    out = ["--out", str(tmp_path / "out")]
    data = tmp_path / "data"
    shutil.copytree(BUNDLED, data)
    broken = sorted((data / "train" / "motorcycle").glob("*.png"))[-1]
    broken.write_bytes(broken.read_bytes()[:60])
    assert main(["retrain", "--data", str(data), *out]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: The PNG data is truncated" in err, err

    labelled = tmp_path / "labelled" / "bicycle"
    labelled.mkdir(parents=True)
    (labelled / "good.png").write_bytes(_image("bicycle"))
    (labelled / "cut.png").write_bytes(_image("bicycle")[:60])
    assert main(["retrain", "--labelled", str(labelled.parent), *out]) == 2
    err = capsys.readouterr().err
    assert f"left out labelled image {labelled / 'cut.png'}: The PNG data is truncated" in err
    assert "needs torch" in err  # every other check passed

    (labelled / "mem.png").symlink_to("/proc/self/mem")  # a regular file that reads EIO
    assert main(["retrain", "--labelled", str(labelled.parent), *out]) == 2
    assert f"{labelled / 'mem.png'}: cannot read it: Input/output error" in capsys.readouterr().err
    (labelled / "mem.png").unlink()

    name = labelled / os.fsdecode(b"caf\xe9.png")
    name.write_bytes(_image("bicycle"))
    assert main(["retrain", "--labelled", str(labelled.parent), *out]) == 2
    assert "caf\\udce9.png: the file name is not UTF-8" in capsys.readouterr().err


def test_retrain_names_a_file_given_as_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.png").write_bytes(_image("bicycle"))
    for option in ("--data", "--labelled"):
        argv = ["retrain", option, str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
        assert main(argv) == 2
        assert f"{option} {tmp_path / 'a.png'}: a file, not a folder" in capsys.readouterr().err


def test_retrain_names_the_labelled_entries_it_will_not_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_torch(monkeypatch)
    bicycles = tmp_path / "labelled" / "bicycle"
    (bicycles / "sub").mkdir(parents=True)
    (bicycles / "good.png").write_bytes(_image("bicycle"))
    (bicycles / "sub" / "nested.png").write_bytes(_image("bicycle"))
    (bicycles / "photo.avif").write_bytes(b"not read")
    (bicycles / ".hidden.png").write_bytes(_image("bicycle"))
    (bicycles / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    argv = ["retrain", "--labelled", str(bicycles.parent), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err  # named, not refused: the run would go on with good.png
    for name, why in (
        ("sub", "a folder (only the files directly in a label's folder are read)"),
        ("photo.avif", "not an image file by its name"),
        (".hidden.png", "a hidden file (its name starts with '.')"),
        ("dangling.png", "not a regular file, or a link to nothing"),
    ):
        assert f"scones: left out {bicycles / name}: {why}" in err, (name, err)
    assert "good.png" not in err


def test_retrain_refuses_options_the_run_could_not_honour(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A canary of more images than the stack sends in minutes, the toolkit's own
    ``sagemaker_*`` settings (the program never reads them), and ModelLabels in another
    order than the production model's answers: each refused, and named."""
    _no_torch(monkeypatch)
    out = ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "--canary-requests", "100000000", *out])
    assert exit_info.value.code == 2
    assert "--canary-requests: 100000000 is more than 10000" in capsys.readouterr().err
    assert main(["retrain", "--canary-requests", "10000", *out]) == 2
    assert "needs torch" in capsys.readouterr().err

    assert main(["retrain", "--hyperparameter", "sagemaker_program=x.py", *out]) == 2
    assert "sagemaker_program: the SageMaker training toolkit's own settings" in (
        capsys.readouterr().err
    )
    assert main(["retrain", "--param", "ModelLabels=motorcycle,bicycle", *out]) == 2
    err = capsys.readouterr().err
    assert (
        "it answers bicycle,motorcycle, in that order, but the stack's ModelLabels is "
        "motorcycle,bicycle"
    ) in err

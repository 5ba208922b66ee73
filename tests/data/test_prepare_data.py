"""``scones prepare-data`` on archives in the official CIFAR-100 format and on PNG folders."""

from __future__ import annotations

import csv
import filecmp
import json
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from cifar_format import (
    BUNDLED,
    FINE_LABEL_NAMES,
    FakeCifar,
    Row,
    batch,
    bundled_rows,
    meta,
    official_members,
    py2_pickle,
    write_tar,
)
from moto import mock_aws
from PIL import Image

from scones.cli.main import main
from scones.model.dataset import (
    DatasetError,
    load_cifar_archive,
    prepare_dataset,
    read_lst,
    sha256_pixels,
    stratified_split,
)
from scones.model.recipe import DEFAULT_LABELS
from scones.sagemaker.channels import upload_prepared
from scones.sagemaker.s3 import S3Uri

Rows = dict[str, list[Row]]
TarFactory = Callable[[dict[str, bytes]], Path]


def read_manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (32, 32)
        return np.asarray(image)


def same_tree(left: Path, right: Path) -> bool:
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(left / d, right / d) for d in comparison.common_dirs)


# --- the official archive -----------------------------------------------------------------


def test_archive_keeps_only_bicycles_and_motorcycles_with_exact_pixels(
    cifar_archive: FakeCifar, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    prepared = prepare_dataset(cifar_archive.path, out, validation_fraction=0.25, seed=7)

    assert prepared.counts == {
        "train": {"bicycle": 9, "motorcycle": 9},
        "validation": {"bicycle": 3, "motorcycle": 3},
        "test": {"bicycle": 3, "motorcycle": 3},
    }
    written = {row["filename"]: row for row in read_manifest(out)}
    for source_split in ("train", "test"):
        for index, row in cifar_archive.kept(source_split):
            entry = written.pop(row.filename)
            class_name = "bicycle" if row.fine_label == 8 else "motorcycle"
            assert entry["class"] == class_name
            assert int(entry["cifar100_row_index"]) == index
            assert (entry["split"] == "test") == (source_split == "test")
            path = out / entry["split"] / class_name / row.filename
            assert np.array_equal(png_pixels(path), row.pixels)
            assert entry["sha256_rgb_pixels"] == sha256_pixels(row.pixels)
    assert written == {}, "images of other fine labels must be dropped"
    assert not list(out.rglob("other_s_*"))


def test_archive_pixels_match_the_bundled_manifest(
    cifar_archive: FakeCifar, tmp_path: Path
) -> None:
    """R, G, B planes -> HWC: the hashes equal those of the bundled (independent) PNG copies."""
    out = tmp_path / "out"
    prepare_dataset(cifar_archive.path, out, validation_fraction=0.25, seed=0)
    bundled = {row["filename"]: row["sha256_rgb_pixels"] for row in bundled_rows()}
    written = read_manifest(out)
    assert len(written) == 30
    for row in written:
        assert row["sha256_rgb_pixels"] == bundled[row["filename"]]
        pixels = png_pixels(out / row["split"] / row["class"] / row["filename"])
        assert sha256_pixels(pixels) == bundled[row["filename"]]


def test_lst_files_follow_the_image_classification_format(
    cifar_archive: FakeCifar, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    prepare_dataset(cifar_archive.path, out, validation_fraction=0.25, seed=3)
    for split in ("train", "validation", "test"):
        text = (out / f"{split}.lst").read_text()
        lines = text.splitlines()
        assert text.endswith("\n") and all(line.count("\t") == 2 for line in lines)
        entries = list(read_lst(out / f"{split}.lst"))
        assert [index for index, _, _ in entries] == sorted(index for index, _, _ in entries)
        for _, label, relative in entries:
            class_name, _, filename = relative.partition("/")
            assert label == DEFAULT_LABELS.index(class_name)
            assert (out / split / class_name / filename).is_file()
        on_disk = sorted(
            p.relative_to(out / split).as_posix() for p in (out / split).rglob("*.png")
        )
        assert sorted(relative for _, _, relative in entries) == on_disk
    test_rows = {index: row for index, row in cifar_archive.kept("test")}
    for index, label, relative in read_lst(out / "test.lst"):
        assert relative.endswith(test_rows[index].filename)
        assert label == (0 if test_rows[index].fine_label == 8 else 1)


def test_extracted_folder_gives_the_same_output(cifar_archive: FakeCifar, tmp_path: Path) -> None:
    extracted = tmp_path / "extracted"
    with tarfile.open(cifar_archive.path) as tar:
        tar.extractall(extracted, filter="data")
    from_archive, from_folder = tmp_path / "a", tmp_path / "b"
    prepare_dataset(cifar_archive.path, from_archive, validation_fraction=0.25, seed=5)
    prepare_dataset(extracted, from_folder, validation_fraction=0.25, seed=5)
    assert same_tree(from_archive, from_folder)


# --- splitting ----------------------------------------------------------------------------


def test_split_is_stratified_disjoint_and_complete(cifar_archive: FakeCifar) -> None:
    samples = [s for s in load_cifar_archive(cifar_archive.path) if s.source_split == "train"]
    train, validation = stratified_split(samples, 0.25, seed=11)
    for class_name in DEFAULT_LABELS:
        assert sum(s.class_name == class_name for s in validation) == 3
        assert sum(s.class_name == class_name for s in train) == 9
    keys = lambda group: {s.row_index for s in group}  # noqa: E731
    assert keys(train).isdisjoint(keys(validation))
    assert keys(train) | keys(validation) == keys(samples)


def test_split_depends_only_on_the_seed(cifar_archive: FakeCifar, tmp_path: Path) -> None:
    samples = [s for s in load_cifar_archive(cifar_archive.path) if s.source_split == "train"]
    held_out = lambda seed, order: {s.filename for s in stratified_split(order, 0.25, seed)[1]}  # noqa: E731
    assert held_out(1, samples) == held_out(1, list(reversed(samples)))
    assert len({frozenset(held_out(seed, samples)) for seed in range(6)}) > 1

    first, second = tmp_path / "first", tmp_path / "second"
    prepare_dataset(cifar_archive.path, first, validation_fraction=0.25, seed=1)
    prepare_dataset(cifar_archive.path, second, validation_fraction=0.25, seed=1)
    assert same_tree(first, second)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, 0.01])
def test_split_rejects_fractions_that_empty_a_split(
    cifar_archive: FakeCifar, fraction: float
) -> None:
    samples = [s for s in load_cifar_archive(cifar_archive.path) if s.source_split == "train"]
    with pytest.raises(
        DatasetError, match=r"validation fraction|too few to hold out|leaves none to train on"
    ):
        stratified_split(samples, fraction, seed=0)


# --- the bundled PNG folder ---------------------------------------------------------------


def test_bundled_png_folder_is_prepared_and_round_trips(tmp_path: Path) -> None:
    out, again = tmp_path / "out", tmp_path / "again"
    prepared = prepare_dataset(BUNDLED, out, validation_fraction=0.2, seed=0)
    assert prepared.counts == {
        "train": {"bicycle": 400, "motorcycle": 400},
        "validation": {"bicycle": 100, "motorcycle": 100},
    }
    bundled = {(r["class"], r["filename"]): r["sha256_rgb_pixels"] for r in bundled_rows()}
    written = {(r["class"], r["filename"]): r["sha256_rgb_pixels"] for r in read_manifest(out)}
    assert written == bundled
    # An output folder is itself a valid input, and preparing it again changes nothing.
    prepare_dataset(out, again, validation_fraction=0.2, seed=0)
    assert same_tree(out, again)


def test_png_folder_with_a_tampered_image_is_rejected(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(BUNDLED, out, validation_fraction=0.2, seed=0)
    victim = next((out / "train" / "bicycle").glob("*.png"))
    Image.new("RGB", (32, 32), "red").save(victim)
    with pytest.raises(DatasetError, match=f"{victim.name}: pixels do not match"):
        prepare_dataset(out, tmp_path / "next", validation_fraction=0.2, seed=0)


# --- bad inputs ---------------------------------------------------------------------------


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="CIFAR-100 archive not found"):
        prepare_dataset(tmp_path / "nope.tar.gz", tmp_path / "o", validation_fraction=0.2, seed=0)


@pytest.mark.parametrize("content", [b"", b"not a tar at all" * 100])
def test_corrupt_archive(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cifar-100-python.tar.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="not a readable tar archive"):
        load_cifar_archive(path)


def test_truncated_archive(cifar_archive: FakeCifar, tmp_path: Path) -> None:
    data = cifar_archive.path.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="not a readable tar archive: Compressed file ended"):
        load_cifar_archive(truncated)


def test_a_truncated_plain_tar_names_its_cut_not_the_compressions_tried(
    cifar_rows: Rows, tmp_path: Path
) -> None:
    """Cut off, an uncompressed tar opens and then ends early: that is what is said, not
    that it is no tar (tarfile's list of every compression it tried stays out)."""
    plain = write_tar(tmp_path / "cifar.tar", official_members(cifar_rows), mode="w")
    data = plain.read_bytes()
    plain.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="not a readable tar archive: unexpected end of data"):
        load_cifar_archive(plain)
    plain.write_bytes(bytes(range(256)))
    with pytest.raises(DatasetError, match="no compression it may have") as raised:
        load_cifar_archive(plain)
    assert "\n" not in str(raised.value)


def test_pickle_without_expected_keys(tar_factory: TarFactory, cifar_rows: Rows) -> None:
    members = official_members(cifar_rows)
    broken = batch(cifar_rows["train"], b"x")
    del broken[b"fine_labels"]
    members["cifar-100-python/train"] = py2_pickle(broken)
    with pytest.raises(
        DatasetError, match=r"cifar-100-python/train lacks the key\(s\) fine_labels"
    ):
        load_cifar_archive(tar_factory(members))


def test_member_that_is_not_a_pickle(tar_factory: TarFactory, cifar_rows: Rows) -> None:
    members = official_members(cifar_rows)
    members["cifar-100-python/test"] = b"\x89PNG definitely not a pickle"
    with pytest.raises(DatasetError, match="cifar-100-python/test is not a CIFAR-100 pickle"):
        load_cifar_archive(tar_factory(members))


def test_pickle_with_a_foreign_global_is_refused(
    tar_factory: TarFactory, cifar_rows: Rows, tmp_path: Path
) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (tmp_path / "pwned",))

    members = official_members(cifar_rows)
    members["cifar-100-python/train"] = pickle.dumps({b"data": Exploit()}, protocol=2)
    with pytest.raises(DatasetError, match="refusing to load global"):
        load_cifar_archive(tar_factory(members))
    assert not (tmp_path / "pwned").exists()


def test_missing_member(tar_factory: TarFactory, cifar_rows: Rows) -> None:
    members = official_members(cifar_rows)
    del members["cifar-100-python/test"]
    with pytest.raises(DatasetError, match="has no member 'cifar-100-python/test'"):
        load_cifar_archive(tar_factory(members))


@pytest.mark.parametrize("name", ["../evil", "cifar-100-python/../../evil", "/etc/evil"])
def test_path_traversal_member_name(tar_factory: TarFactory, cifar_rows: Rows, name: str) -> None:
    members = official_members(cifar_rows)
    members[name] = b"x"
    with pytest.raises(DatasetError, match="unsafe member name"):
        load_cifar_archive(tar_factory(members))


def test_image_rows_of_the_wrong_size(tar_factory: TarFactory, cifar_rows: Rows) -> None:
    members = official_members(cifar_rows)
    broken = batch(cifar_rows["train"], b"x")
    broken[b"data"] = broken[b"data"][:, :3000]
    members["cifar-100-python/train"] = py2_pickle(broken)
    with pytest.raises(DatasetError, match="rows have 3000 bytes, not 3072"):
        load_cifar_archive(tar_factory(members))


def test_meta_that_disagrees_about_the_labels(tar_factory: TarFactory, cifar_rows: Rows) -> None:
    members = official_members(cifar_rows)
    swapped = list(FINE_LABEL_NAMES)
    swapped[8], swapped[48] = swapped[48], swapped[8]
    members["cifar-100-python/meta"] = py2_pickle(meta(swapped))
    with pytest.raises(DatasetError, match="fine label 8 is 'motorcycle', expected 'bicycle'"):
        load_cifar_archive(tar_factory(members))


def test_folder_that_is_no_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a PNG folder"):
        prepare_dataset(tmp_path / "empty", tmp_path / "o", validation_fraction=0.2, seed=0)


# --- upload -------------------------------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
def test_upload_writes_the_builtin_algorithm_layout(
    cifar_archive: FakeCifar, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    prepared = prepare_dataset(cifar_archive.path, out, validation_fraction=0.25, seed=0)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="training-data")
        channels = upload_prepared(s3, prepared.root, S3Uri.parse("s3://training-data/scones/v1/"))
        keys = {
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="training-data")
            for obj in page.get("Contents", [])
        }
        lst = s3.get_object(Bucket="training-data", Key="scones/v1/train_lst/train.lst")
        body = lst["Body"].read().decode()
        png = s3.get_object(Bucket="training-data", Key=f"scones/v1/train/{body.split()[2]}")

    assert channels.as_dict() == {
        "train": "s3://training-data/scones/v1/train/",
        "validation": "s3://training-data/scones/v1/validation/",
        "train_lst": "s3://training-data/scones/v1/train_lst/",
        "validation_lst": "s3://training-data/scones/v1/validation_lst/",
    }
    expected = {
        f"scones/v1/{split}/{p.relative_to(out / split).as_posix()}"
        for split in ("train", "validation")
        for p in (out / split).rglob("*.png")
    } | {"scones/v1/train_lst/train.lst", "scones/v1/validation_lst/validation.lst"}
    assert keys == expected, "test/ stays local; nothing else is uploaded"
    assert body == (out / "train.lst").read_text()
    assert png["ContentType"] == "image/png"


# --- the command --------------------------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
def test_command_prepares_and_uploads(
    cifar_archive: FakeCifar, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["prepare-data", "--source", str(cifar_archive.path), "--out", str(out)]
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bucket")
        assert main([*argv, "--validation-fraction", "0.25", "--upload", "s3://bucket/p"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["validation"] == {"bicycle": 3, "motorcycle": 3}
    assert summary["channels"]["train_lst"] == "s3://bucket/p/train_lst/"

    assert main(argv) == 2
    assert "already holds a prepared dataset" in capsys.readouterr().err
    (out / "train" / "bicycle" / "stale.png").write_bytes(b"old")
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "train" / "bicycle" / "stale.png").exists()


def test_upload_without_credentials_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    out = tmp_path / "out"
    argv = ["prepare-data", "--source", str(BUNDLED), "--out", str(out)]
    assert main([*argv, "--upload", "s3://bucket/p", "--region", "us-east-1"]) == 2
    assert "no AWS credentials are configured" in capsys.readouterr().err
    assert not out.exists()


def test_overwrite_never_deletes_the_source_or_a_dataset_it_cannot_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--overwrite deletes an earlier output only once the source is read and split, and
    refuses an output folder that is, holds or lies inside the source."""
    source = tmp_path / "source"
    prepare_dataset(BUNDLED, source, validation_fraction=0.2, seed=0)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    for out in (source, source / "train", tmp_path):
        argv = ["prepare-data", "--source", str(source), "--out", str(out), "--overwrite"]
        assert main(argv) == 2
        assert "writing there would delete or mix with the images" in capsys.readouterr().err
        assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    # A bad fraction leaves an earlier dataset in the output folder as it was.
    out = tmp_path / "out"
    prepare_dataset(BUNDLED, out, validation_fraction=0.2, seed=0)
    argv = ["prepare-data", "--source", str(BUNDLED), "--out", str(out), "--overwrite"]
    assert main([*argv, "--validation-fraction", "2"]) == 2
    assert "validation fraction must be between 0 and 1" in capsys.readouterr().err
    assert same_tree(out, source)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--upload", "bucket/prefix"], "--upload: not an S3 URI"),
        (["--upload", "s3://Bad_Bucket/x"], "invalid S3 bucket name"),
        (["--validation-fraction", "1.5"], "validation fraction must be between 0 and 1"),
        (["--source", "/nonexistent/cifar-100-python.tar.gz"], "--source not found"),
    ],
)
def test_command_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["prepare-data", "--source", str(BUNDLED), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("aws_env")
def test_command_reports_a_missing_bucket(
    cifar_archive: FakeCifar, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prepare-data", "--source", str(cifar_archive.path), "--out", str(tmp_path / "o")]
    with mock_aws():
        assert main([*argv, "--validation-fraction", "0.25", "--upload", "s3://no-bucket/p"]) == 1
    assert "upload to s3://no-bucket/p failed" in capsys.readouterr().err


def test_the_validation_folder_is_the_shipped_models_own_validation_split(
    tmp_path: Path,
) -> None:
    """`scones evaluate --data <out>/validation --split all` must report on images the model
    never trained on: prepare-data holds out what training holds out, with the same seed and
    fraction (model.json's split, whose fingerprint names the exact images)."""
    from scones.model.folders import class_root, fingerprint, list_images
    from scones.paths import SHIPPED_MODEL_DIR

    manifest = json.loads((SHIPPED_MODEL_DIR / "model.json").read_text())
    split = manifest["split"]
    out = tmp_path / "out"
    prepare_dataset(
        BUNDLED, out, validation_fraction=float(split["validation_fraction"]), seed=split["seed"]
    )
    labels = tuple(manifest["labels"])
    written = [path for path, _ in list_images(out / "validation", labels)]
    held_out = fingerprint(written, class_root(out / "validation", labels))
    assert held_out == split["validation_fingerprint"]

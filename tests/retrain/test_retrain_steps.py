"""The retraining steps' own code: dataset assembly, the gate, outcome items, channel merge,
and the model server's production variants. All fast; no training."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws
from scones_core.errors import SettingsError
from scones_core.records import record_from_item, record_problems
from scones_core.retraining import outcome
from scones_core.retraining.dataset import DatasetError, RunNames, assemble_dataset
from scones_core.retraining.gate import (
    CANDIDATE_BASELINE_FILE,
    MODEL_PACKAGE_DESCRIPTION_MAX,
    EvaluationReportError,
    GateRules,
    judge,
)
from scones_core.retraining.settings import ENVIRONMENT_VARIABLES, RetrainingSettings
from scones_core.training_split import TrainingSplit, min_images_per_class

from scones.model.artifact import OnnxClassifier
from scones.offline.lambda_worker import LambdaContext
from scones.paths import SHIPPED_MODEL_DIR
from scones.sagemaker.entry_point import merge_channels
from scones.serving.app import ProductionVariant, create_app
from scones.serving.capture import CaptureWriter, LocalCaptureSink
from scones.serving.faults import FaultPlan
from scones.template_params import PROJECT_ROOT, load_template, parameter_defaults
from tests.monitoring.conftest import create_table_as_declared
from tests.retrain.conftest import BUCKET

SAMPLES = PROJECT_ROOT / "samples"
RESULTS_TABLE = "scones-test-results"
STARTED = datetime(2026, 12, 1, 12, 30, 5, tzinfo=UTC)


def env(**overrides: str) -> dict[str, str]:
    values = {
        "RETRAINING_BUCKET": BUCKET,
        "ENDPOINT_NAME": "scones-test",
        "LABELS": "bicycle,motorcycle",
        "TRAINING_DATA_PREFIX": "training/train/",
        "LABELLED_DATA_PREFIX": "labelled/",
        "GATE_DATA_PREFIX": "training/gate/",
        "RETRAINING_PREFIX": "retraining/",
        "CONFIDENCE_THRESHOLD": "0.9",
        "GATE_MIN_ACCEPTED_ACCURACY": "0.99",
        "GATE_MAX_COVERAGE_DROP": "0.02",
        "GATE_MAX_RECALL_DROP": "0.05",
        "GATE_MIN_IMAGES_PER_CLASS": "1",
        "RESULTS_TABLE_NAME": RESULTS_TABLE,
        "MODEL_INPUT_SIZE": parameter_defaults()["ModelInputSize"],
    }
    return {**values, **overrides}


def test_the_template_gives_both_functions_every_variable_they_read() -> None:
    resources = load_template()["Resources"]
    for logical_id in ("RetrainDatasetFunction", "RetrainJudgeFunction"):
        variables = resources[logical_id]["Properties"]["Environment"]["Variables"]
        assert set(ENVIRONMENT_VARIABLES) == set(variables), logical_id


def test_settings_refuse_overlapping_prefixes_and_name_every_problem() -> None:
    overlap = "TRAINING_DATA_PREFIX='training/train/' and GATE_DATA_PREFIX"
    with pytest.raises(SettingsError, match=re.escape(overlap)):
        RetrainingSettings.from_env(env(GATE_DATA_PREFIX="training/train/gate/"))
    with pytest.raises(SettingsError) as info:
        RetrainingSettings.from_env(env(LABELS="bicycle", LABELLED_DATA_PREFIX="labelled"))
    assert "LABELS" in str(info.value) and "LABELLED_DATA_PREFIX" in str(info.value)


@pytest.mark.parametrize("variable", ["TRAINING_DATA_PREFIX", "GATE_DATA_PREFIX"])
def test_settings_refuse_a_wildcard_prefix_as_the_template_does(variable: str) -> None:
    """The template's prefix patterns leave out "*" (a wildcard in the IAM grants built
    from them); the steps' own reading of the prefixes holds to the same rule."""
    with pytest.raises(SettingsError, match=variable):
        RetrainingSettings.from_env(env(**{variable: "training/*/"}))


def put(s3: Any, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


@pytest.fixture
def ddb(s3: Any) -> Any:
    """The stack's results table (as template.yaml declares it), in the same moto."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    create_table_as_declared(client, "ResultsTable", RESULTS_TABLE)
    return client


def answered(ddb: Any, key: str, status: str = "REVIEWED") -> None:
    """A record whose answer names the labelled copy ``key`` (REVIEWED: a finished one)."""
    label = key.split("/")[-2]
    ddb.put_item(
        TableName=RESULTS_TABLE,
        Item={
            "pk": {"S": f"{BUCKET}/incoming/{key}#v1"},
            "status": {"S": status},
            "recorded_at": {"S": "2026-12-01T10:00:00.000Z"},
            "review_label": {"S": label},
            "labelled_key": {"S": key},
        },
    )


def put_training_set(s3: Any, bucket: str = BUCKET, name: str = "a") -> None:
    """The fewest images of each class the training program can train on."""
    for label in ("bicycle", "motorcycle"):
        for i in range(min_images_per_class()):
            body = f"{label} training image {name}{i}".encode()
            s3.put_object(Bucket=bucket, Key=f"training/train/{label}/{name}{i}.png", Body=body)


def put_gate_set(s3: Any, per_label: int = 1, bucket: str = BUCKET) -> None:
    for label in ("bicycle", "motorcycle"):
        for i in range(per_label):
            body = f"gate {label} image {i}".encode()
            s3.put_object(Bucket=bucket, Key=f"training/gate/{label}/g{i}.png", Body=body)


def channel_uris(result: dict[str, Any]) -> dict[str, str]:
    """The manifest of each channel the dataset step made, by channel name."""
    return {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in result["input_data_config"]
    }


def read_json(s3: Any, uri: str) -> Any:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_dataset_pins_training_and_labelled_images_as_manifest_channels(s3: Any, ddb: Any) -> None:
    settings = RetrainingSettings.from_env(env())
    for i in range(min_images_per_class()):
        put(s3, f"training/train/bicycle/b{i}.png", f"bike {i}".encode())
        put(s3, f"training/train/motorcycle/m{i}.png", f"moto {i}".encode())
    put(s3, "training/gate/bicycle/g0.png", b"gate image")
    put(s3, "training/gate/motorcycle/g1.png", b"gate motorcycle image")
    put(s3, "training/train/bicycle/copy-of-gate.png", b"gate image")  # left out: a leak
    put(s3, "labelled/motorcycle/reviewed-1.jpg", b"person said motorcycle")
    answered(ddb, "labelled/motorcycle/reviewed-1.jpg")
    # The review page's manifests, today's (with a line that is not JSON) and an earlier
    # version's: not images, and never parsed (the folder is the label).
    put(s3, "labelled/manifest-2026-12-01.jsonl", b"{}\n{truncated\n[1,2]\n")
    put(s3, "labelled/manifest.jsonl", b"{}")
    put(s3, "labelled/scooter/x.png", b"not a label of this model")
    put(s3, "labelled/bicycle/.hidden", b"")

    result = assemble_dataset(s3, ddb, settings, STARTED, "run-1")

    run_hash = hashlib.sha256(b"run-1\n2026-12-01T12:30:05.000000+00:00").hexdigest()[:7]
    base = f"scones-test-rt-261201-{run_hash}"
    assert result["names"] == {
        "base": base,
        "processing_job": f"{base}-gate",
        # The evaluation job's names if SageMaker fails it and the run starts it again.
        "evaluation_reruns": [f"{base}-g2", f"{base}-g3"],
        # CreateModelPackage's ClientToken: the same for the run's retries, at most 36.
        "client_token": hashlib.sha256(base.encode()).hexdigest()[:32],
    }
    channels = {c["ChannelName"]: c for c in result["input_data_config"]}
    assert set(channels) == {"train", "labelled"}
    source = channels["labelled"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile"
    assert read_json(s3, source["S3Uri"]) == [
        {"prefix": f"s3://{BUCKET}/labelled/"},
        "motorcycle/reviewed-1.jpg",
    ]
    train = read_json(s3, channels["train"]["DataSource"]["S3DataSource"]["S3Uri"])
    assert train[0] == {"prefix": f"s3://{BUCKET}/training/train/"}
    assert "bicycle/copy-of-gate.png" not in train and len(train) == 1 + 2 * min_images_per_class()
    summary = read_json(s3, result["dataset_uri"])
    assert summary["training"]["gate_duplicates_left_out"] == 1
    assert summary["labelled"]["per_label"] == {"bicycle": 0, "motorcycle": 1}
    assert summary["labelled"]["skipped_keys"] == 4
    assert summary["labelled"]["skipped_keys_named"] == [
        "bicycle/.hidden: a hidden file (its name starts with '.')",
        "manifest-2026-12-01.jsonl: not in the folder of a label (bicycle, motorcycle)",
        "manifest.jsonl: not in the folder of a label (bicycle, motorcycle)",
        "scooter/x.png: not in the folder of a label (bicycle, motorcycle)",
    ]
    assert summary["training"]["skipped_keys"] == 0
    assert summary["training"]["skipped_keys_named"] == []
    assert result["evaluation_uri"] == (
        f"s3://{BUCKET}/retraining/{base}/evaluation/gate-evaluation.json"
    )
    # CopySource of ReplaceDriftBaseline: where the evaluation step writes the baseline.
    assert f"s3://{result['drift_baseline_source']}" == (
        f"{result['evaluation_output_uri']}/{CANDIDATE_BASELINE_FILE}"
    )


def test_a_stack_serving_another_input_size_is_refused_before_training(s3: Any, ddb: Any) -> None:
    """A candidate trained at 32x32 could be neither judged beside a 64x64 production model
    nor served by the stack: the run fails at its first step, naming why, before it pays
    for a training job."""
    settings = RetrainingSettings.from_env(env(MODEL_INPUT_SIZE="64x64"))
    put_gate_set(s3)
    with pytest.raises(
        DatasetError, match=r"retraining trains 32x32 models, but the stack serves 64x64"
    ):
        assemble_dataset(s3, ddb, settings, STARTED, "run")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="retraining/")["KeyCount"] == 0


def test_dataset_without_labelled_images_has_one_channel_and_a_class_gap_fails(
    s3: Any, ddb: Any
) -> None:
    settings = RetrainingSettings.from_env(env())
    put_gate_set(s3)
    put(s3, "training/train/bicycle/b.png", b"b")
    with pytest.raises(DatasetError, match="no images of motorcycle"):
        assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    put(s3, "training/train/motorcycle/m.png", b"m")
    # Found here, not by the training program after a paid job: it holds out a fifth of
    # each class for validation and folds the rest over the ensemble's members.
    with pytest.raises(DatasetError) as small:
        assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    assert str(small.value) == (
        f"too few images to train on in s3://{BUCKET}/training/train/ and "
        f"s3://{BUCKET}/labelled/: bicycle has 1 image, too few to hold out 0.2 of them for "
        "validation; motorcycle has 1 image, too few to hold out 0.2 of them for validation; "
        "nothing was trained"
    )
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="retraining/")
    for i in range(3):
        put(s3, f"training/train/bicycle/b{i}.png", f"b{i}".encode())
    for i in range(min_images_per_class() - 2):  # one more is labelled by a person
        put(s3, f"training/train/motorcycle/m{i}.png", f"m{i}".encode())
    leaves = "bicycle has 4 images: 1 held out for validation leaves 3, fewer than the 4 folds"
    with pytest.raises(DatasetError, match=leaves):
        assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    put(s3, "training/train/bicycle/b3.png", b"b3")
    with pytest.raises(DatasetError, match="motorcycle has 4 images: 1 held out"):
        assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    put(s3, "labelled/motorcycle/reviewed.png", b"a person said motorcycle")
    answered(ddb, "labelled/motorcycle/reviewed.png")
    assert [
        c["ChannelName"]
        for c in assemble_dataset(s3, ddb, settings, STARTED, "run-1")["input_data_config"]
    ] == ["train", "labelled"]
    s3.delete_object(Bucket=BUCKET, Key="labelled/motorcycle/reviewed.png")
    put(s3, "training/train/motorcycle/m9.png", b"m9")
    result = assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    assert [c["ChannelName"] for c in result["input_data_config"]] == ["train"]
    # A run whose job trains another recipe is held to that recipe's split.
    eight = TrainingSplit(members=8)
    with pytest.raises(DatasetError, match="fewer than the 8 folds"):
        assemble_dataset(s3, ddb, settings, STARTED, "run-1", split=eight)
    s3.delete_object(Bucket=BUCKET, Key="training/train/motorcycle/m9.png")
    two = TrainingSplit(members=2)
    assert assemble_dataset(s3, ddb, settings, STARTED, "run-2", split=two)["input_data_config"]
    with pytest.raises(DatasetError, match="longer than 40"):
        long_name = RetrainingSettings.from_env(env(ENDPOINT_NAME="e" * 41))
        assemble_dataset(s3, ddb, long_name, STARTED, "run-1")


def test_only_copies_that_finished_answers_name_are_trained_on(s3: Any, ddb: Any) -> None:
    """The review page copies an image before the answer is finished. A copy whose answer
    is still held (its last step failed), or that a takeover could not delete, is no label:
    only a REVIEWED record's labelled_key makes a copy training data."""
    settings = RetrainingSettings.from_env(env())
    put_training_set(s3)
    put_gate_set(s3)
    from scones.offline.retrain import reviewed_item

    finished, held, orphan, rehearsed = (
        "labelled/motorcycle/finished.png",
        "labelled/motorcycle/held.png",
        "labelled/bicycle/taken-over.png",
        "labelled/bicycle/given-to-the-rehearsal.png",
    )
    for key in (finished, held, orphan, rehearsed):
        put(s3, key, key.encode())
    answered(ddb, finished)
    answered(ddb, held, status="NEEDS_REVIEW")  # step 3 never happened
    # The offline rehearsal's --labelled images stand for finished answers too.
    rehearsal = reviewed_item(BUCKET, rehearsed, "bicycle")
    assert record_problems(record_from_item(rehearsal)) == []  # as the stack writes them
    ddb.put_item(TableName=RESULTS_TABLE, Item=rehearsal)
    queries: list[dict[str, Any]] = []
    ddb.meta.events.register(
        "before-parameter-build.dynamodb.Query", lambda params, **_: queries.append(params)
    )
    result = assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    # Through the status index, reading each finished answer's copy key and nothing else.
    assert [(q["IndexName"], q["ProjectionExpression"]) for q in queries] == [
        ("status-recorded_at-index", "#a0")
    ]
    assert queries[0]["ExpressionAttributeNames"]["#a0"] == "labelled_key"
    channels = channel_uris(result)
    assert read_json(s3, channels["labelled"])[1:] == [
        "bicycle/given-to-the-rehearsal.png",
        "motorcycle/finished.png",
    ]
    summary = read_json(s3, result["dataset_uri"])
    assert summary["labelled"]["unanswered_left_out"] == 2
    assert result["labelled_images"] == 2


def test_labelled_bytes_that_are_training_data_already_are_left_out(s3: Any, ddb: Any) -> None:
    """One image uploaded and answered twice is one training image, not two; answered
    with two labels it is no label at all; and a copy of a training-channel image adds
    nothing. Only objects whose size another object has are read."""
    settings = RetrainingSettings.from_env(env())
    put_training_set(s3)
    put_gate_set(s3)
    training_image = b"bicycle training image a0"
    copies = {
        "labelled/bicycle/twice-1.png": b"an image answered twice",
        "labelled/bicycle/twice-2.png": b"an image answered twice",
        "labelled/bicycle/torn-1.png": b"an image of two minds!!",
        "labelled/motorcycle/torn-2.png": b"an image of two minds!!",
        "labelled/bicycle/trained-already.png": training_image,
        "labelled/motorcycle/unique.png": b"a one-off, of a size no other object has",
        # A gate image's size: hashed for the gate check, and not again for the repeat.
        "labelled/bicycle/gate-size-1.png": b"gate bicycle image 9",
        "labelled/bicycle/gate-size-2.png": b"gate bicycle image 9",
    }
    for key, body in copies.items():
        put(s3, key, body)
        answered(ddb, key)
    reads = ReadCountingS3(s3)
    result = assemble_dataset(reads, ddb, settings, STARTED, "run-1")
    channels = channel_uris(result)
    assert read_json(s3, channels["labelled"])[1:] == [
        "bicycle/gate-size-1.png",
        "bicycle/twice-1.png",
        "motorcycle/unique.png",
    ]
    labelled = read_json(s3, result["dataset_uri"])["labelled"]
    assert labelled["per_label"] == {"bicycle": 2, "motorcycle": 1}
    assert (
        labelled["training_duplicates_left_out"],
        labelled["repeats_left_out"],
        labelled["conflicting_labels_left_out"],
    ) == (1, 2, 2)
    assert "labelled/motorcycle/unique.png" not in reads.read
    assert sorted(reads.read) == sorted(set(reads.read)), "an object was read twice"


def test_a_gate_set_too_small_to_judge_by_fails_the_run_before_training(s3: Any, ddb: Any) -> None:
    """The gate refuses to judge on fewer than GATE_MIN_IMAGES_PER_CLASS images of a class
    (an empty gate prefix on a new stack, say): found out here, not after a training job."""
    settings = RetrainingSettings.from_env(env(GATE_MIN_IMAGES_PER_CLASS="3"))
    put_training_set(s3)
    with pytest.raises(DatasetError) as empty:
        assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    assert str(empty.value) == (
        f"the gate set s3://{BUCKET}/training/gate/ is too small to judge a candidate by: "
        "bicycle 0, motorcycle 0 images, fewer than the 3 per class the gate needs; "
        "nothing was trained"
    )
    put_gate_set(s3, per_label=3)
    s3.delete_object(Bucket=BUCKET, Key="training/gate/motorcycle/g2.png")
    put(s3, "training/gate/motorcycle/notes.txt", b"not an image")  # not counted
    put(s3, "training/gate/motorcycle/nested/g9.png", b"not in the label folder")
    # Not images to the evaluation, which reads the folder by name: a Windows folder's
    # Thumbs.db, a README, a macOS resource fork. Counted, they let a gate set of 2 pass
    # here and fail the run after its training job.
    for name in ("Thumbs.db", "README.md", "._g0.png", "desktop.ini"):
        put(s3, f"training/gate/motorcycle/{name}", b"not an image")
    with pytest.raises(DatasetError, match="too small to judge a candidate by: motorcycle 2 "):
        assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="retraining/")
    put(s3, "training/gate/motorcycle/g2.png", b"the third motorcycle")
    result = assemble_dataset(s3, ddb, settings, STARTED, "run-1")
    summary = read_json(s3, result["dataset_uri"])
    assert summary["gate_set"]["per_label"] == {"bicycle": 3, "motorcycle": 3}
    assert summary["gate_set"]["images"] == 6  # the notes and thumbnails beside are not


class ReadCountingS3:
    """moto's client, noting each object the dataset step reads whole (``read``) and each
    whose first bytes alone it reads (``heads``: a header, for its image size)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.read, self.heads = inner, [], []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_object(self, **kwargs: Any) -> Any:
        (self.heads if "Range" in kwargs else self.read).append(kwargs["Key"])
        return self.inner.get_object(**kwargs)


def test_dataset_leaves_out_copies_of_gate_images_by_content_whatever_their_etag(
    s3: Any, ddb: Any
) -> None:
    """An ETag is the MD5 of the bytes only for a single-part upload without SSE-KMS: the
    stack's bucket uses SSE-KMS, and SDK transfer managers upload in parts. So copies are
    recognised by a SHA-256 of their bytes, read only for objects of a gate image's size."""
    settings = RetrainingSettings.from_env(env())
    gate_image = next((SAMPLES / "bicycle").glob("*.png")).read_bytes()
    put_training_set(s3)
    put(s3, "training/gate/bicycle/g0.png", gate_image)
    put(s3, "training/gate/motorcycle/g1.png", b"another gate image")
    in_parts = "training/train/bicycle/uploaded-in-parts.png"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=in_parts)["UploadId"]
    part = s3.upload_part(
        Bucket=BUCKET, Key=in_parts, UploadId=upload, PartNumber=1, Body=gate_image
    )
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=in_parts,
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    gate_etag = s3.head_object(Bucket=BUCKET, Key="training/gate/bicycle/g0.png")["ETag"]
    assert s3.head_object(Bucket=BUCKET, Key=in_parts)["ETag"] != gate_etag
    put(s3, "labelled/bicycle/plain-copy.png", gate_image)
    put(s3, "labelled/bicycle/same-size-other-image.png", gate_image[::-1])  # kept
    answered(ddb, "labelled/bicycle/plain-copy.png")
    answered(ddb, "labelled/bicycle/same-size-other-image.png")

    reads = ReadCountingS3(s3)
    result = assemble_dataset(reads, ddb, settings, STARTED, "run-1")

    channels = channel_uris(result)
    assert read_json(s3, channels["train"])[1:] == [
        f"{label}/a{i}.png"
        for label in ("bicycle", "motorcycle")
        for i in range(min_images_per_class())
    ]
    assert read_json(s3, channels["labelled"])[1:] == ["bicycle/same-size-other-image.png"]
    summary = read_json(s3, result["dataset_uri"])
    assert summary["training"]["gate_duplicates_left_out"] == 1
    assert summary["labelled"]["gate_duplicates_left_out"] == 1
    assert summary["gate_set"]["images"] == 2
    # Each gate image of a size some image has is read once; no other image is read.
    assert sorted(reads.read) == sorted(
        [
            "training/gate/bicycle/g0.png",
            in_parts,
            "labelled/bicycle/plain-copy.png",
            "labelled/bicycle/same-size-other-image.png",
        ]
    )


def _saved_as(image: Any, fmt: str, **options: Any) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_a_labelled_copy_of_a_gate_image_saved_again_is_left_out_by_its_pixels(
    s3: Any, ddb: Any
) -> None:
    """The same picture saved again (another encoder setting, a comment added, another
    lossless format, a JPEG at a camera app's quality) has other bytes: training on it
    would let the gate score the candidate on an image it trained on. Its pixels give it
    away; another picture of the same size is kept, and so is a resized copy (documented:
    only copies of the gate image's size are compared)."""
    import io

    from PIL import Image, PngImagePlugin

    settings = RetrainingSettings.from_env(env())
    put_training_set(s3)
    bicycles = sorted((SAMPLES / "bicycle").glob("*.png"))
    gate_bytes = bicycles[0].read_bytes()
    put(s3, "training/gate/bicycle/g0.png", gate_bytes)
    put(
        s3,
        "training/gate/motorcycle/g1.png",
        next((SAMPLES / "motorcycle").glob("*.png")).read_bytes(),
    )
    gate = Image.open(io.BytesIO(gate_bytes))
    gate.load()
    note = PngImagePlugin.PngInfo()
    note.add_text("Comment", "synced from the camera app")
    copies = {
        "labelled/bicycle/resaved.png": _saved_as(gate, "PNG", compress_level=1, pnginfo=note),
        "labelled/motorcycle/as-webp.webp": _saved_as(gate, "WEBP", lossless=True),
        "labelled/bicycle/as-bmp.bmp": _saved_as(gate.convert("RGB"), "BMP"),
        "labelled/bicycle/other-picture.png": bicycles[1].read_bytes(),
        "labelled/bicycle/as-jpeg.jpg": _saved_as(gate.convert("RGB"), "JPEG", quality=95),
        "labelled/motorcycle/as-jpeg-75.jpg": _saved_as(gate.convert("RGB"), "JPEG"),
        "labelled/bicycle/resized.png": _saved_as(gate.resize((64, 64)), "PNG"),
    }
    for key, body in copies.items():
        assert body != gate_bytes
        put(s3, key, body)
        answered(ddb, key)
    reads = ReadCountingS3(s3)
    result = assemble_dataset(reads, ddb, settings, STARTED, "run-1")
    assert read_json(s3, channel_uris(result)["labelled"])[1:] == [
        "bicycle/other-picture.png",
        "bicycle/resized.png",
    ]
    summary = read_json(s3, result["dataset_uri"])
    assert summary["labelled"]["gate_duplicates_left_out"] == 5
    assert "; left out: 5 copies of gate images" in result["summary"]
    # Every labelled copy's header is read; the gate images are read once, whole.
    assert sorted(reads.heads) == sorted(copies)
    assert sorted(set(reads.read)) == sorted(reads.read), "an object was read twice"


def test_runs_started_in_one_second_get_names_and_folders_of_their_own(s3: Any, ddb: Any) -> None:
    """The monitor's run and one started by hand in the same second: neither may reuse the
    other's jobs, model, endpoint config or run folder. A retry of one execution's dataset
    step gets its names again (idempotent SageMaker calls)."""
    settings = RetrainingSettings.from_env(env())
    put_gate_set(s3)
    put_training_set(s3)
    first = assemble_dataset(s3, ddb, settings, STARTED, "scones-test-retrain-20261201-1200")
    second = assemble_dataset(s3, ddb, settings, STARTED, "manual-console-run")
    for name in ("base", "processing_job", "evaluation_reruns", "client_token"):
        assert first["names"][name] != second["names"][name], name
    assert first["dataset_uri"] != second["dataset_uri"]
    assert read_json(s3, first["dataset_uri"])["run_name"] == "scones-test-retrain-20261201-1200"
    assert read_json(s3, second["dataset_uri"])["run_name"] == "manual-console-run"
    retried = assemble_dataset(s3, ddb, settings, STARTED, "scones-test-retrain-20261201-1200")
    assert retried["names"] == first["names"]


def test_run_names_fit_sagemaker_and_the_state_machines_grants_for_the_longest_endpoint() -> None:
    from scones_core.retraining.dataset import MAX_ENDPOINT_NAME
    from scones_core.sagemaker_names import MAX_NAME_LENGTH, is_sagemaker_name

    from tests.workflow.iam_policy import (
        ACCOUNT,
        ALLOW,
        IMPLICIT_DENY,
        REGION,
        Request,
        decide,
        role_statements,
    )
    from tests.workflow.test_workflow_template import resolver_for, transformed

    assert load_template()["Parameters"]["EndpointName"]["MaxLength"] == MAX_ENDPOINT_NAME
    endpoint = "a" * (MAX_ENDPOINT_NAME - 4) + "-b-c"
    names = RunNames.for_run(endpoint, STARTED, "x" * 80)  # Step Functions allows 80
    for name in (names.base, names.processing_job, *names.evaluation_reruns):
        assert len(name) <= MAX_NAME_LENGTH and is_sagemaker_name(name), name
    statements = role_statements(
        resolver_for(transformed(), EndpointName=endpoint), "RetrainingStateMachineRole"
    )
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    for action, resource in (
        ("sagemaker:CreateTrainingJob", f"training-job/{names.base}"),
        ("sagemaker:CreateProcessingJob", f"processing-job/{names.processing_job}"),
        *(
            ("sagemaker:CreateProcessingJob", f"processing-job/{n}")
            for n in names.evaluation_reruns
        ),
        ("sagemaker:CreateModel", f"model/{names.base}"),
        ("sagemaker:CreateEndpointConfig", f"endpoint-config/{names.base}"),
    ):
        assert decide(statements, Request(action, f"{arn}:{resource}")) == ALLOW, action
    other = f"{arn}:training-job/someone-elses-rt-job"
    assert decide(statements, Request("sagemaker:CreateTrainingJob", other)) == IMPLICIT_DENY
    with pytest.raises(DatasetError, match="needs its execution name"):
        RunNames.for_run(endpoint, STARTED, "")


LABELS = ("bicycle", "motorcycle")


def report(
    version: str,
    accuracy: float,
    accepted: float | None,
    images: int = 40,
    coverage: float = 0.5,
    support: dict[str, int] | None = None,
    recall: dict[str, float] | None = None,
    labels: tuple[str, ...] = LABELS,
) -> dict:
    """One model's part of ``gate-evaluation.json``, as ``evaluate_artifact`` writes it
    (by default the images shared evenly by the classes, each with the overall accuracy)."""
    share = images // len(labels)
    support = support or {label: share for label in labels[:-1]} | {
        labels[-1]: images - share * (len(labels) - 1)
    }
    recall = recall or dict.fromkeys(labels, accuracy)
    return {
        "model": {"version": version},
        "images": images,
        "labels": list(labels),
        "accuracy": accuracy,
        "per_class": {
            label: {"support": support[label], "recall": recall[label], "precision": None}
            for label in labels
        },
        # Nothing accepted is a coverage of 0, and the reverse.
        "at_threshold": {
            "accepted_accuracy": accepted,
            "coverage": 0.0 if accepted is None else coverage,
        },
    }


RULES = GateRules(
    threshold=0.9,
    labels=LABELS,
    min_accepted_accuracy=0.99,
    max_coverage_drop=0.02,
    max_recall_drop=0.05,
    min_images_per_class=10,
)


@pytest.mark.parametrize(
    ("candidate", "passed", "reason"),
    [
        (report("new", 0.95, 1.0), True, None),
        (report("new", 0.90, 1.0), True, None),  # equal accuracy is "not worse"
        (report("new", 0.85, 1.0), False, "accuracy 0.8500 is below production's 0.9000"),
        (report("new", 0.95, 0.98), False, "accepted accuracy 0.9800 at threshold 0.9"),
        (report("new", 0.95, None), False, "accepts no gate image"),
        # As accurate, but unsure of far more: most traffic would wait for review.
        (report("new", 0.95, 1.0, coverage=0.48), True, None),  # exactly the allowance
        (
            report("new", 0.95, 1.0, coverage=0.01),
            False,
            "coverage 0.0100 at threshold 0.9 is more than 0.02 below production's 0.5000",
        ),
    ],
)
def test_gate(candidate: dict, passed: bool, reason: str | None) -> None:
    evaluation = {"threshold": 0.9, "candidate": candidate, "production": report("old", 0.9, 1)}
    decision = judge(evaluation, RULES)
    assert decision["passed"] is passed
    if reason:
        assert any(reason in r for r in decision["reasons"]), decision["reasons"]
    assert all(isinstance(v, str) for v in decision["metadata"].values())


def test_a_passing_gate_describes_the_version_within_what_sagemaker_takes() -> None:
    """The summary names each class's recall: at 60 labels it passed ModelPackageDescription's
    1,024 characters, which botocore does not check and SageMaker refuses, so a candidate
    that passed the gate would have failed at RegisterCandidate."""
    labels = tuple(f"label-{n:05d}" for n in range(60))
    rules = dataclasses.replace(RULES, labels=labels, min_images_per_class=1)
    evaluation = {
        "threshold": 0.9,
        "candidate": report("new", 0.95, 1.0, images=600, labels=labels),
        "production": report("old", 0.90, 1.0, images=600, labels=labels),
    }
    decision = judge(evaluation, rules)
    assert decision["passed"] and len(decision["summary"]) > MODEL_PACKAGE_DESCRIPTION_MAX
    assert len(decision["description"]) == MODEL_PACKAGE_DESCRIPTION_MAX
    assert decision["description"].endswith("…")
    assert decision["summary"].startswith(decision["description"][:-1])
    two_labels = {"candidate": report("new", 0.95, 1.0), "production": report("old", 0.9, 1.0)}
    short = judge({**evaluation, **two_labels}, RULES)
    assert short["description"] == short["summary"]


def test_gate_refuses_to_compare_unlike_reports() -> None:
    base = {"candidate": report("new", 1, 1), "production": report("old", 0.5, 1)}
    with pytest.raises(EvaluationReportError, match=r"not the deployed 0\.9"):
        judge({**base, "threshold": 0.8}, RULES)
    with pytest.raises(EvaluationReportError, match="different gate sets"):
        judge({**base, "threshold": 0.9, "production": report("old", 0.5, 1, images=39)}, RULES)
    with pytest.raises(EvaluationReportError, match="candidate report is incomplete"):
        judge({**base, "threshold": 0.9, "candidate": {"model": {}}}, RULES)
    with pytest.raises(EvaluationReportError, match="not the deployed"):
        judge({**base, "threshold": float("nan")}, RULES)
    for bad in (report("new", 7.0, 1), report("new", 1, 1, images=-40)):
        with pytest.raises(EvaluationReportError, match="candidate report"):
            judge({**base, "threshold": 0.9, "candidate": bad}, RULES)
    accepts_half_yet_none = report("new", 1, None)
    accepts_half_yet_none["at_threshold"]["coverage"] = 0.5
    with pytest.raises(EvaluationReportError, match="does not add up"):
        judge({**base, "threshold": 0.9, "candidate": accepts_half_yet_none}, RULES)
    # 40 images, but only 4 of them in its classes: its recalls say nothing of the rest.
    lost = report("new", 1, 1, support={"bicycle": 2, "motorcycle": 2})
    with pytest.raises(EvaluationReportError, match=r"does not add up: 40 images \(4 in its"):
        judge({**base, "threshold": 0.9, "candidate": lost}, RULES)
    for not_a_report, kind in (([base], "list"), ("passed", "str"), (None, "NoneType")):
        with pytest.raises(EvaluationReportError, match=f"a JSON {kind}, not an object"):
            judge(not_a_report, RULES)  # type: ignore[arg-type]
    # The evaluation program writes numbers: a boolean or a string is not a fraction.
    for spelled in (True, "0.95"):
        written = report("new", 1, 1)
        written["accuracy"] = spelled
        with pytest.raises(EvaluationReportError, match="candidate report is incomplete"):
            judge({**base, "threshold": 0.9, "candidate": written}, RULES)


def test_versions_sagemakers_metadata_would_refuse_are_registered_with_safe_characters() -> None:
    """CreateModelPackage's CustomerMetadataProperties values take letters, digits, spaces
    and _.:/=+-@ only (botocore does not check): "v1.2 (baseline)" as production's
    version failed every run at RegisterCandidate, after training. The metadata's copy
    gets "_" for the rest; the summary and the reports keep the version as it is."""
    pattern = re.compile(r"^[\w\s.:/=+\-@]*$")
    for version in ("v1.2 (baseline)", "2024-06-01#3", "release,7", "modèle 2"):
        evaluation = {
            "threshold": 0.9,
            "candidate": report("new", 0.95, 1.0),
            "production": report(version, 0.9, 1.0),
        }
        decision = judge(evaluation, RULES)
        value = decision["metadata"]["production_version"]
        assert pattern.match(value) and len(value) == len(version), value
        assert decision["production"]["version"] == version
    assert (
        judge(
            {
                "threshold": 0.9,
                "candidate": report("new", 0.95, 1.0),
                "production": report("old", 0.9, 1.0),
            },
            RULES,
        )["metadata"]["production_version"]
        == "old"
    )


def scored(
    version: str,
    right: dict[str, int],
    support: dict[str, int],
    accepted: float | None = 0.995,
    coverage: float = 0.9,
) -> dict:
    """A model's report from its right answers per class on a gate set of ``support``."""
    images = sum(support.values())
    return report(
        version,
        round(sum(right.values()) / images, 6),
        accepted,
        images=images,
        coverage=coverage,
        support=support,
        recall={label: round(right[label] / support[label], 6) for label in support},
    )


MOSTLY_MOTORCYCLES = {"bicycle": 10, "motorcycle": 990}
MORE_MOTORCYCLES = {"bicycle": 20, "motorcycle": 180}


@pytest.mark.parametrize(
    ("candidate", "production", "reasons"),
    [
        # Always "motorcycle": more accurate than production overall on a gate set of mostly
        # motorcycles, 0.99 of what it accepts is right, and it never says "bicycle".
        (
            scored(
                "always-motorcycle", {"bicycle": 0, "motorcycle": 990}, MOSTLY_MOTORCYCLES, 0.99, 1
            ),
            scored("old", {"bicycle": 10, "motorcycle": 970}, MOSTLY_MOTORCYCLES, 0.995, 0.95),
            ["recall on bicycle 0.0000 is more than 0.05 below production's 1.0000"],
        ),
        # As accurate as production, by trading half the bicycles for motorcycles.
        (
            scored("new", {"bicycle": 10, "motorcycle": 180}, MORE_MOTORCYCLES),
            scored("old", {"bicycle": 20, "motorcycle": 170}, MORE_MOTORCYCLES),
            ["recall on bicycle 0.5000 is more than 0.05 below production's 1.0000"],
        ),
        # One bicycle of twenty (exactly the allowance) for more motorcycles: passes.
        (
            scored("new", {"bicycle": 19, "motorcycle": 175}, MORE_MOTORCYCLES),
            scored("old", {"bicycle": 20, "motorcycle": 170}, MORE_MOTORCYCLES),
            [],
        ),
    ],
)
def test_gate_refuses_a_candidate_that_gives_up_a_class(
    candidate: dict, production: dict, reasons: list[str]
) -> None:
    decision = judge({"threshold": 0.9, "candidate": candidate, "production": production}, RULES)
    assert (decision["passed"], decision["reasons"]) == (not reasons, reasons)
    assert (
        decision["candidate"]["per_class"]["bicycle"]["recall"]
        == candidate["per_class"]["bicycle"]["recall"]
    )
    assert decision["rules"]["max_recall_drop"] == 0.05


def test_gate_refuses_to_judge_on_a_gate_set_too_small_to_say() -> None:
    """Two images where both models are right is a tie that passed; so is any recall on a
    class of one image. Too few images of a class is the gate set's fault, not the
    candidate's: the run fails (and alerts) instead of rejecting or promoting."""
    two = {"bicycle": 1, "motorcycle": 1}
    tie = {
        "threshold": 0.9,
        "candidate": scored("new", two, two, 1.0, 1.0),
        "production": scored("old", two, two, 1.0, 1.0),
    }
    with pytest.raises(
        EvaluationReportError, match="too small to judge by: bicycle 1, motorcycle 1"
    ):
        judge(tie, RULES)
    short = {"bicycle": 9, "motorcycle": 100}
    with pytest.raises(EvaluationReportError, match=r"bicycle 9 images, fewer than the 10 per"):
        judge(
            {
                "threshold": 0.9,
                "candidate": scored("new", short, short, 1.0, 1.0),
                "production": scored("old", short, short, 1.0, 1.0),
            },
            RULES,
        )
    enough = {"bicycle": 10, "motorcycle": 100}
    passing = {
        "threshold": 0.9,
        "candidate": scored("new", enough, enough, 1.0, 1.0),
        "production": scored("old", enough, enough, 1.0, 1.0),
    }
    assert judge(passing, RULES)["passed"] is True
    with pytest.raises(SettingsError, match="GATE_MIN_IMAGES_PER_CLASS"):
        RetrainingSettings.from_env(env(GATE_MIN_IMAGES_PER_CLASS="0"))


@pytest.mark.parametrize(
    ("candidate_labels", "production_labels", "role", "named"),
    [
        (("cat", "dog"), ("cat", "dog"), "candidate", "['cat', 'dog']"),
        (LABELS, ("motorcycle", "bicycle"), "production", "['motorcycle', 'bicycle']"),
        (("bicycle", "motorcycle", "scooter"), LABELS, "candidate", "'scooter'"),
    ],
)
def test_gate_refuses_a_report_whose_models_name_other_labels(
    candidate_labels: tuple[str, ...], production_labels: tuple[str, ...], role: str, named: str
) -> None:
    """The models' labels, in order, must be the stack's: another order swaps every answer."""
    evaluation = {
        "threshold": 0.9,
        "candidate": report("new", 0.95, 1.0, images=60, labels=candidate_labels),
        "production": report("old", 0.9, 1.0, images=60, labels=production_labels),
    }
    with pytest.raises(EvaluationReportError, match=f"the {role} model's labels .*{named}"):
        judge(evaluation, RULES)


def test_gate_reads_the_report_the_evaluation_program_writes(tmp_path: Path) -> None:
    """The real program (scones_evaluate.py): the shipped model passes against a production
    model that guesses; a candidate that always answers "motorcycle" is refused against the
    shipped model, among other reasons for its recall on bicycles."""
    from scones.sagemaker.evaluate_entry import evaluate_pair
    from tests.retrain.tiny_models import always_motorcycle_model, coin_flip_model

    guesser = coin_flip_model(tmp_path / "guesser")
    motorcycles_only = always_motorcycle_model(tmp_path / "motorcycles-only")
    gate = tmp_path / "gate"
    for label in LABELS:
        (gate / label).mkdir(parents=True)
        source = PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train" / label
        for path in sorted(source.glob("*.png"))[:10]:
            (gate / label / path.name).write_bytes(path.read_bytes())
    shipped_first = json.loads(json.dumps(evaluate_pair(SHIPPED_MODEL_DIR, guesser, gate, 0.9)))
    assert judge(shipped_first, RULES)["passed"] is True
    degenerate = evaluate_pair(motorcycles_only, SHIPPED_MODEL_DIR, gate, 0.9)
    decision = judge(json.loads(json.dumps(degenerate)), RULES)
    assert decision["passed"] is False
    assert any(r.startswith("recall on bicycle 0.0000") for r in decision["reasons"])


def test_the_gate_limits_are_template_parameters_the_functions_read() -> None:
    template = load_template()
    defaults = parameter_defaults()
    variables = template["Resources"]["RetrainJudgeFunction"]["Properties"]["Environment"][
        "Variables"
    ]
    flows = {
        "GATE_MIN_ACCEPTED_ACCURACY": "GateMinAcceptedAccuracy",
        "GATE_MAX_COVERAGE_DROP": "GateMaxCoverageDrop",
        "GATE_MAX_RECALL_DROP": "GateMaxRecallDrop",
        "GATE_MIN_IMAGES_PER_CLASS": "GateMinImagesPerClass",
    }
    for variable, parameter in flows.items():
        assert variables[variable] == {"Ref": parameter}, variable
    settings = RetrainingSettings.from_env(env(**{v: defaults[p] for v, p in flows.items()}))
    assert (settings.gate_max_recall_drop, settings.gate_min_images_per_class) == (0.05, 10)


def test_outcome_items_have_the_layout_the_state_machine_writes() -> None:
    definition = json.loads(_substituted())
    writers = {
        name: state
        for name, state in definition["States"].items()
        if state.get("Resource") == "arn:aws:states:::dynamodb:putItem"
    }
    assert set(writers) == {"RecordPromoted", "RecordRejected", "RecordRolledBack", "RecordFailed"}
    item = outcome.outcome_item(
        outcome=outcome.FAILED,
        endpoint_name="e",
        run_name="r",
        execution_arn="arn",
        recorded_at="t",
        reason="why",
    )
    for name, state in writers.items():
        written = state["Parameters"]["Item"]
        assert set(written) == set(item) == set(outcome.ATTRIBUTES), name
        assert written["record_type"] == {"S": outcome.RECORD_TYPE}
        assert written["outcome"]["S"] in outcome.OUTCOMES
    assert item["pk"] == {"S": "retraining#e#r"}


def _substituted() -> str:
    from scones.asl_check import substitute
    from tests.workflow.test_workflow_template import sample_substitutions, state_machines

    properties = state_machines()["RetrainingStateMachine"]
    text = (PROJECT_ROOT / properties["DefinitionUri"]).read_text()
    return substitute(text, sample_substitutions(properties))


def test_channels_merge_into_one_class_tree_without_name_clashes(tmp_path: Path) -> None:
    image = next(
        (PROJECT_ROOT / "data" / "cifar100-bicycle-motorcycle" / "train" / "bicycle").glob("*.png")
    ).read_bytes()
    for channel, label in (("train", "bicycle"), ("train", "motorcycle"), ("labelled", "bicycle")):
        folder = tmp_path / channel / label
        folder.mkdir(parents=True)
        (folder / "same-name.png").write_bytes(image)
        (folder / "notes.txt").write_text("not an image")
    merged = merge_channels(
        [tmp_path / "train", tmp_path / "labelled", tmp_path / "missing"],
        ("bicycle", "motorcycle"),
        tmp_path / "merged",
    ).root
    assert sorted(p.name for p in (merged / "bicycle").iterdir()) == [
        "c0-same-name.png",
        "c1-same-name.png",
    ]
    assert [p.name for p in (merged / "motorcycle").iterdir()] == ["c0-same-name.png"]


# ------------------------------------------------------------- production variants
@pytest.fixture(scope="module")
def shipped() -> OnnxClassifier:
    return OnnxClassifier(SHIPPED_MODEL_DIR)


def invoke(client: TestClient, body: bytes, target: str | None = None) -> Any:
    headers = {"Content-Type": "image/png"}
    if target:
        headers["X-Amzn-SageMaker-Target-Variant"] = target
    return client.post("/endpoints/ep/invocations", content=body, headers=headers)


def test_two_variants_share_traffic_by_weight_and_capture_apart(
    shipped: OnnxClassifier, tmp_path: Path
) -> None:
    image = next((SAMPLES / "bicycle").glob("*.png")).read_bytes()
    sink = LocalCaptureSink(tmp_path)
    primary_capture = CaptureWriter(sink, endpoint_name="ep", variant_name="AllTraffic")
    app = create_app(shipped, endpoint_name="ep", max_body_bytes=10**6, capture=primary_capture)
    endpoint = app.state.endpoint
    canary_faults = FaultPlan()
    canary = ProductionVariant(
        "model-canary",
        shipped,
        weight=0.25,
        capture=CaptureWriter(sink, endpoint_name="ep", variant_name="model-canary"),
        faults=canary_faults,
    )
    with TestClient(app) as client:
        endpoint.add_variant(canary)
        endpoint.set_weights({"AllTraffic": 0.75})
        endpoint.seed_routing(7)
        answered = [
            invoke(client, image).headers["x-Amzn-Invoked-Production-Variant"] for _ in range(200)
        ]
        assert 25 <= answered.count("model-canary") <= 75, answered.count("model-canary")
        assert set(answered) == {"AllTraffic", "model-canary"}
        targeted = invoke(client, image, "model-canary")
        assert targeted.headers["x-Amzn-Invoked-Production-Variant"] == "model-canary"
        assert invoke(client, image, "nope").status_code == 400
        ping = client.get("/ping").json()
        assert [v["name"] for v in ping["variants"]] == ["AllTraffic", "model-canary"]

        canary_faults.arm({"model_error": 1})
        failed = invoke(client, image, "model-canary")
        assert failed.status_code == 424 and failed.headers["x-amzn-ErrorType"] == "ModelError"
        assert canary.errors_5xx == 1 and endpoint.primary.errors_5xx == 0
        assert canary.invocations == answered.count("model-canary") + 2

        endpoint.set_weights({"model-canary": 1.0})
        endpoint.remove_variant("AllTraffic")
        after = invoke(client, image)
        assert after.headers["x-Amzn-Invoked-Production-Variant"] == "model-canary"
        with pytest.raises(ValueError, match="at least one variant"):
            endpoint.remove_variant("model-canary")
        endpoint.flush_captures()
    captured = {
        variant: sum(
            len(path.read_text().splitlines())
            for path in (tmp_path / "ep" / variant).rglob("*.jsonl")
        )
        for variant in ("AllTraffic", "model-canary")
    }
    assert captured == {
        "AllTraffic": answered.count("AllTraffic"),
        "model-canary": answered.count("model-canary") + 2,  # the targeted one and "after"
    }


# ------------------------------------------------------------------ handlers and events
EVENT_BUCKET = "scones-123456789012-us-east-1-images"


def _event_files_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retraining functions' environment for the stack the ``events/retrain*.json``
    files name, on in-process moto."""
    for name, value in {
        **env(RETRAINING_BUCKET=EVENT_BUCKET, ENDPOINT_NAME="scones-bicycle-motorcycle"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "scones-classifier",
    }.items():
        monkeypatch.setenv(name, value)


def test_the_event_files_run_through_both_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.workflow.conftest import load_handler

    _event_files_environment(monkeypatch)
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "0.93")
    events = PROJECT_ROOT / "events"
    assemble_event = json.loads((events / "retrain.json").read_text())
    judge_event = json.loads((events / "retrain_judge.json").read_text())
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=EVENT_BUCKET)
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_table_as_declared(ddb, "ResultsTable", RESULTS_TABLE)
        put_training_set(s3, bucket=EVENT_BUCKET)
        put_gate_set(s3, bucket=EVENT_BUCKET)
        app = load_handler("retrain")
        lambda_context = LambdaContext("request", 10**13)
        dataset = app.assemble_handler(assemble_event, lambda_context)
        assert dataset["evaluation_uri"] == judge_event["evaluation_uri"]
        scored = {
            "threshold": 0.93,
            "candidate": report("new", 0.97, 1.0),
            "production": report("old", 0.96, 1.0),
        }
        key = judge_event["evaluation_uri"].split("/", 3)[3]
        s3.put_object(Bucket=EVENT_BUCKET, Key=key, Body=json.dumps(scored).encode())
        decision = app.judge_handler(judge_event, lambda_context)
        assert decision["passed"] is True
        # The step's own failure is data, as the state machine reads it (ReadGateFailure).
        outside = {"evaluation_uri": f"s3://{EVENT_BUCKET}/labelled/x"}
        failure = app.judge_handler(outside, lambda_context)["failure"]
        assert failure["Error"] == "EventError"
        assert "not under this stack's retraining prefix" in failure["Cause"]


def test_an_aws_call_the_dataset_step_cannot_make_is_its_failure_with_the_services_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table or a bucket the step cannot read (a missing one, a denied one) is the step's
    failure, returned as data with the service's message: the record says which call
    failed and why, not that the function failed unexpectedly."""
    from tests.workflow.conftest import load_handler

    _event_files_environment(monkeypatch)
    event = json.loads((PROJECT_ROOT / "events" / "retrain.json").read_text())
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=EVENT_BUCKET)
        put_training_set(s3, bucket=EVENT_BUCKET)
        put_gate_set(s3, bucket=EVENT_BUCKET)
        app = load_handler("retrain")  # no results table: its query fails
        failure = app.assemble_handler(event, LambdaContext("request", 10**13))["failure"]
    # Named as Lambda would name the raised error, with the SDK's message.
    assert failure["Error"] == "ResourceNotFoundException", failure
    assert "when calling the Query operation" in failure["Cause"], failure


def test_the_dataset_step_and_the_training_code_count_the_same_files(tmp_path: Path) -> None:
    """One rule for which files of a class folder are images (``scones_core.image_files``):
    the dataset step counts keys in S3 by it, training and evaluation read folders by it."""
    from scones_core.image_files import FILE_SUFFIXES
    from scones_core.image_rules import SUPPORTED_IMAGE_FORMATS
    from scones_core.retraining.dataset import _label_of

    from scones.model.folders import images_in

    assert set(FILE_SUFFIXES) == set(SUPPORTED_IMAGE_FORMATS)
    names = [
        "a.png", "b.JPG", "c.jpeg", "d.webp", "e.bmp", "f.tif", "g.TIFF", "h.gif", "i.HEIC",
        "j.heif", "Thumbs.db", "desktop.ini", "README.md", "notes.txt", "x.avif", "._a.png",
        ".hidden",
        "no-suffix", "manifest.jsonl",
    ]  # fmt: skip
    folder = tmp_path / "bicycle"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"x")
    read = {path.name for path in images_in(folder)}
    counted = {name for name in names if _label_of(f"bicycle/{name}", ("bicycle",))}
    assert (
        read
        == counted
        == {"a.png", "b.JPG", "c.jpeg", "d.webp", "e.bmp", "f.tif", "g.TIFF", "h.gif", "i.HEIC"}
        | {"j.heif"}
    )


def test_the_rehearsal_sends_the_canary_images_of_the_stacks_own_labels(tmp_path: Path) -> None:
    """The held-out samples are bicycles and motorcycles: a stack of other labels (a team's
    own classes) bakes its canary on its gate set's images instead of stopping there."""
    from scones.offline.retrain import OfflineRetrain, RetrainOptions

    run = OfflineRetrain(RetrainOptions())
    run.labels = ("bicycle", "motorcycle")
    samples = run._traffic_images()
    assert samples and all(p.parent.name in run.labels for p in samples)
    gate = [tmp_path / "van" / "a.png", tmp_path / "truck" / "b.png"]
    run.labels, run.gate_images = ("van", "truck"), gate
    assert run._traffic_images() == gate


def test_the_rehearsals_canary_confidence_reads_capture_as_the_monitor_does(s3: Any) -> None:
    """The canary's low-confidence share is read with the monitor's capture reader: base64
    output, a duplicate eventId, a line cut short, a file that is not capture and more
    than one listing page of files are each handled as the monitor handles them."""
    import base64

    from scones.offline.retrain import OfflineRetrain, RetrainOptions
    from scones.serving.capture import build_capture_record

    params = parameter_defaults()
    run = OfflineRetrain(RetrainOptions())
    run.params, run.bucket, run.s3 = params, BUCKET, s3
    run.labels = tuple(params["ModelLabels"].split(","))
    threshold = float(params["ConfidenceThreshold"])
    variant = "model-7"
    folder = f"{params['DataCapturePrefix']}/{params['EndpointName']}/{variant}/2026/12/01/12"

    def line(confidence: float, event_id: str, base64_output: bool = False) -> str:
        output = json.dumps([confidence, round(1 - confidence, 6)])
        record = build_capture_record(
            input_body=b"\x89PNG",
            input_content_type="image/png",
            output_body=output,
            output_content_type="application/json",
            event_id=event_id,
            inference_time=datetime(2026, 12, 1, 12, 5, tzinfo=UTC),
        )
        if base64_output:
            data = base64.b64encode(output.encode()).decode()
            record["captureData"]["endpointOutput"].update(data=data, encoding="BASE64")
        return json.dumps(record)

    sure, unsure = threshold + (1 - threshold) / 2, 0.6
    lines = [
        line(sure, "a"),
        line(unsure, "b", base64_output=True),
        line(unsure, "a"),  # the same request captured twice: counted once
        line(sure, "c")[:80],  # cut short
    ]
    s3.put_object(Bucket=BUCKET, Key=f"{folder}/00-00-000-x.jsonl", Body="\n".join(lines))
    s3.put_object(Bucket=BUCKET, Key=f"{folder}/notes.txt", Body=b"not capture")
    # Past the first listing page (1,000 keys), one more answer.
    for i in range(1000):
        s3.put_object(Bucket=BUCKET, Key=f"{folder}/01-{i:04d}-empty.jsonl", Body=b"")
    s3.put_object(Bucket=BUCKET, Key=f"{folder}/99-99-999-z.jsonl", Body=line(unsure, "d"))

    found = run._low_confidence(SimpleNamespace(name=variant))  # a canary: its name is read
    assert found["share"] == round(2 / 3, 6), found
    assert found["source"].startswith(f"2 of 3 captured canary answers below {threshold:g}; 3 ")
    assert "capture line(s) or file(s) not used (the first: " in found["source"]
    assert len(run._capture_files(variant)) == 1003

"""Assemble a retraining run's training channels from S3, pinned as manifests.

Two sources, both laid out ``<prefix><label>/<name>``:

* the original training channel (``TRAINING_DATA_PREFIX``), what the production
  model was trained on;
* the labelled-data prefix (``LABELLED_DATA_PREFIX``), where the human review page
  writes images a person has labelled. Only ``<label>/`` folders of the model's
  labels are read; the review page's own manifest and any other key are ignored,
  because the folder an image sits in is its label. And only copies that a
  ``REVIEWED`` record names (its ``labelled_key``, read through the status index): the
  page makes the copy before the answer is finished, so a copy whose answer never
  became ``REVIEWED`` (its last step failed, or it was taken over and its copy could
  not be removed) is not a label, and training never reads it. A copy whose bytes are
  already training data (a training-channel image, or another copy: an image uploaded and
  answered twice) is left out too, and bytes answered with two labels are left out
  altogether.

Each source becomes a SageMaker ``ManifestFile`` channel: a JSON list that starts
with ``{"prefix": "s3://bucket/<prefix>"}`` and names every object relative to it.
The training job then sees ``<channel dir>/<label>/<name>``, the layout the
training code reads, and the run is pinned to the objects that existed when it
started (labelling may go on meanwhile). An image whose bytes equal an image of the
fixed gate set is left out, and so is a labelled copy showing a gate image's picture
(the same picture saved again, a JPEG re-encode too: ``gate_pixels``), so the gate never
scores an image the candidate trained on; and a gate set with fewer than
``GATE_MIN_IMAGES_PER_CLASS`` images of a class, which the gate would refuse to judge
by, or a class with fewer images than the training program can split and fold
(``training_split``), fails the run here, before a training job is paid for. Equal bytes
are found by content, not ETag: the ETag of an SSE-KMS object (this stack's bucket) or
of a multipart upload is not the MD5 of its bytes. Only objects whose size equals a gate
image's are read and hashed (SHA-256).
``dataset.json`` beside the manifests says what went in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scones_core.errors import SconesError
from scones_core.image_files import IN_A_SUBFOLDER, not_an_image_file_because
from scones_core.record_queries import records_with_status
from scones_core.records import LABELLED_KEY_ATTRIBUTE, Status
from scones_core.retraining.gate import CANDIDATE_BASELINE_FILE, EVALUATION_FILE, too_few_images
from scones_core.retraining.settings import RetrainingSettings
from scones_core.sagemaker_names import MAX_NAME_LENGTH
from scones_core.settings import ImageLimits
from scones_core.training_split import TrainingSplit, input_size_problem

if TYPE_CHECKING:
    from scones_core.retraining.gate_pixels import GatePixels

# Room left for the endpoint name in "<endpoint>-rt-YYMMDD-<run hash>-gate" (63 characters;
# the template's EndpointName MaxLength and IAM patterns "<EndpointName>-rt-*" follow it).
# The gate's evaluation job reruns as "-g2", "-g3": shorter, so they fit too.
RUN_HASH_LENGTH = 7
NAME_SUFFIX_LENGTH = len("-rt-YYMMDD-") + RUN_HASH_LENGTH + len("-gate")
# How many times the state machine runs the evaluation job again after SageMaker failed it
# (InternalServerError, CapacityError): the candidate's training is not paid for again.
EVALUATION_RERUNS = 2
MAX_ENDPOINT_NAME = MAX_NAME_LENGTH - NAME_SUFFIX_LENGTH
TRAIN_CHANNEL = "train"
LABELLED_CHANNEL = "labelled"
_READ_CHUNK = 1024 * 1024
# How many of a channel's keys that are not read ``dataset.json`` names (it counts them all).
MAX_NAMED_NOT_READ = 50


class DatasetError(SconesError):
    """The training data cannot make a dataset (a class has no images, a name is too long)."""


@dataclass(frozen=True)
class RunNames:
    """SageMaker names for one retraining run: its start date, for people, and a hash of
    the execution's name and start time, so two runs (even in one second) never share a
    job, model or run folder while a retry of the same execution gets the same names."""

    base: str  # training job, model and endpoint config
    processing_job: str

    @property
    def evaluation_reruns(self) -> tuple[str, ...]:
        """The evaluation job's names for its reruns (a failed job's name stays taken)."""
        return tuple(f"{self.base}-g{n}" for n in range(2, EVALUATION_RERUNS + 2))

    @property
    def client_token(self) -> str:
        """CreateModelPackage's idempotency token (at most 36 of ``[a-zA-Z0-9-]``): a retry
        after a lost answer gets the package already made instead of a second version."""
        return hashlib.sha256(self.base.encode("utf-8")).hexdigest()[:32]

    @classmethod
    def for_run(cls, endpoint_name: str, started_at: datetime, run_name: str) -> RunNames:
        if len(endpoint_name) > MAX_ENDPOINT_NAME:
            raise DatasetError(
                f"endpoint name {endpoint_name!r} is longer than {MAX_ENDPOINT_NAME} characters, "
                f"so the retraining job names would pass SageMaker's {MAX_NAME_LENGTH}"
            )
        if not run_name:
            raise DatasetError("the run needs its execution name to name its jobs")
        moment = started_at.astimezone(UTC)
        identity = f"{run_name}\n{moment.isoformat(timespec='microseconds')}"
        run_hash = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:RUN_HASH_LENGTH]
        base = f"{retraining_prefix(endpoint_name)}{moment:%y%m%d}-{run_hash}"
        return cls(base=base, processing_job=f"{base}-gate")


def retraining_prefix(endpoint_name: str) -> str:
    """How every name a retraining run gives its jobs, models and endpoint configs begins:
    an endpoint config so named was deployed by a retraining promotion."""
    return f"{endpoint_name}-rt-"


@dataclass(frozen=True)
class ChannelObjects:
    prefix: str
    keys: tuple[str, ...]  # relative to prefix: "<label>/<name>"
    per_label: dict[str, int]
    skipped: int  # keys outside a label folder, or manifests and hidden files
    sizes: dict[str, int] = field(default_factory=dict)  # relative key -> bytes
    # The first MAX_NAMED_NOT_READ skipped keys (relative), each with why it is not read.
    not_read: tuple[str, ...] = ()


@dataclass(frozen=True)
class RepeatedContent:
    """Labelled copies left out because their bytes are already training data."""

    in_training: int = 0  # equal to an image of the training channel
    repeated: int = 0  # equal to another labelled copy of the same label (one is kept)
    conflicting: int = 0  # equal to a labelled copy of another label: none is kept


def parse_started_at(value: Any) -> datetime:
    """``$$.Execution.StartTime`` (ISO 8601, ``Z`` or an offset)."""
    if not isinstance(value, str) or not value:
        raise DatasetError("the event needs started_at, the execution's start time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DatasetError(f"started_at {value!r} is not an ISO 8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _objects(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """Each key under ``prefix`` with its size in bytes."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"], int(item["Size"])


def _not_read_because(relative: str, labels: tuple[str, ...]) -> str | None:
    """Why a key (relative to its prefix) is not one of the channel's ``<label>/<name>``
    images: outside a label folder, in a folder inside one, or not an image by name
    (manifests, ``Thumbs.db``, hidden files), judged as the training and evaluation code
    reads a folder (``image_files``), or the gate set's minimum could pass here and fail
    after a paid training job. None for an image the channel holds."""
    label, _, name = relative.partition("/")
    if label not in labels or not name:
        return f"not in the folder of a label ({', '.join(labels)})"
    if "/" in name:
        return IN_A_SUBFOLDER
    return not_an_image_file_because(name)


def _label_of(relative: str, labels: tuple[str, ...]) -> str | None:
    """The label of a ``<label>/<name>`` image key; None for a key that is not one."""
    if _not_read_because(relative, labels) is not None:
        return None
    return relative.partition("/")[0]


class Digests:
    """SHA-256 of objects' bytes, each object read at most once in a run (the gate check
    and the labelled copies' check may both need one)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3, self._bucket = s3, bucket
        self._by_key: dict[str, str] = {}

    def of(self, key: str) -> str:
        if key not in self._by_key:
            digest = hashlib.sha256()
            body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_READ_CHUNK):
                digest.update(chunk)
            self._by_key[key] = digest.hexdigest()
        return self._by_key[key]


class GateContent:
    """The gate set's objects, to recognise a byte-identical copy under another key.

    A listing gives each object's size; bytes are read only for an object whose size a
    gate object has, and a gate object only once some object has its size."""

    def __init__(
        self, s3: Any, bucket: str, prefix: str, labels: tuple[str, ...], digests: Digests
    ) -> None:
        self._digests = digests
        self._keys_by_size: dict[int, list[str]] = {}
        self.per_label = dict.fromkeys(labels, 0)  # <label>/<name> images, as channels count
        self.image_keys: list[str] = []
        for key, size in _objects(s3, bucket, prefix):
            self._keys_by_size.setdefault(size, []).append(key)
            label = _label_of(key[len(prefix) :], labels)
            if label is not None:
                self.per_label[label] += 1
                self.image_keys.append(key)
        self._digests_by_size: dict[int, frozenset[str]] = {}

    @property
    def images(self) -> int:
        """The gate images, as the evaluation reads them (not notes or thumbnails beside)."""
        return sum(self.per_label.values())

    def holds_copy_of(self, key: str, size: int) -> bool:
        gate_keys = self._keys_by_size.get(size)
        if not gate_keys:
            return False
        digests = self._digests_by_size.get(size)
        if digests is None:
            digests = frozenset(self._digests.of(k) for k in gate_keys)
            self._digests_by_size[size] = digests
        return self._digests.of(key) in digests


def reviewed_copies(dynamodb: Any, table: str) -> frozenset[str]:
    """The keys of the labelled copies that ``REVIEWED`` records name: the answers that
    were finished. Read through the status index (``REVIEWED`` only), never a scan."""
    return frozenset(
        str(record[LABELLED_KEY_ATTRIBUTE])
        for record in records_with_status(
            dynamodb, table, Status.REVIEWED.value, attributes=(LABELLED_KEY_ATTRIBUTE,)
        )
        if record.get(LABELLED_KEY_ATTRIBUTE)
    )


def read_channel(
    s3: Any,
    bucket: str,
    prefix: str,
    labels: tuple[str, ...],
    gate: GateContent,
    *,
    answered: frozenset[str] | None = None,
    gate_pixels: GatePixels | None = None,
) -> tuple[ChannelObjects, int, int]:
    """The ``<label>/<name>`` objects under ``prefix``; how many were gate duplicates (by
    bytes, and with ``gate_pixels`` by their picture too); and, with ``answered`` (the
    keys finished answers name), how many were named by none."""
    keys: list[str] = []
    sizes: dict[str, int] = {}
    per_label = dict.fromkeys(labels, 0)
    not_read: list[str] = []
    skipped = excluded = unanswered = 0
    to_compare: list[tuple[str, int]] = []
    for key, size in _objects(s3, bucket, prefix):
        relative = key[len(prefix) :]
        why = _not_read_because(relative, labels)
        if why is not None:
            skipped += 1
            if len(not_read) < MAX_NAMED_NOT_READ:
                not_read.append(f"{relative}: {why}")
            continue
        if answered is not None and key not in answered:
            unanswered += 1
            continue
        if gate.holds_copy_of(key, size):
            excluded += 1
            continue
        to_compare.append((key, size))
    copies = gate_pixels.copies_among(to_compare) if gate_pixels is not None else set()
    for key, size in to_compare:
        if key in copies:
            excluded += 1
            continue
        relative = key[len(prefix) :]
        keys.append(relative)
        sizes[relative] = size
        per_label[relative.partition("/")[0]] += 1
    keys.sort()
    channel = ChannelObjects(prefix, tuple(keys), per_label, skipped, sizes, tuple(not_read))
    return channel, excluded, unanswered


def drop_repeated_content(
    digests: Digests, labelled: ChannelObjects, training: ChannelObjects
) -> tuple[ChannelObjects, RepeatedContent]:
    """``labelled`` without copies whose bytes are training data already: equal to a
    training-channel image, or to another labelled copy (an image uploaded twice and
    answered twice). Repeats of one label keep one copy; bytes answered with different
    labels keep none. Only objects whose size another object has are read and hashed."""
    training_by_size: dict[int, list[str]] = {}
    for relative, size in training.sizes.items():
        training_by_size.setdefault(size, []).append(training.prefix + relative)
    labelled_by_size: dict[int, list[str]] = {}
    for relative, size in labelled.sizes.items():
        labelled_by_size.setdefault(size, []).append(relative)
    in_training: set[str] = set()
    by_digest: dict[str, list[str]] = {}
    for size, relatives in labelled_by_size.items():
        if len(relatives) < 2 and size not in training_by_size:
            continue
        known = {digests.of(key) for key in training_by_size.get(size, [])}
        for relative in relatives:
            digest = digests.of(labelled.prefix + relative)
            if digest in known:
                in_training.add(relative)
            else:
                by_digest.setdefault(digest, []).append(relative)
    dropped = set(in_training)
    repeated = conflicting = 0
    for relatives in by_digest.values():
        if len(relatives) < 2:
            continue
        if len({relative.partition("/")[0] for relative in relatives}) > 1:
            dropped.update(relatives)
            conflicting += len(relatives)
        else:
            dropped.update(sorted(relatives)[1:])
            repeated += len(relatives) - 1
    if not dropped:
        return labelled, RepeatedContent()
    keys = tuple(key for key in labelled.keys if key not in dropped)
    per_label = dict.fromkeys(labelled.per_label, 0)
    for key in keys:
        per_label[key.partition("/")[0]] += 1
    sizes = {key: labelled.sizes[key] for key in keys}
    kept = replace(labelled, keys=keys, per_label=per_label, sizes=sizes)
    return kept, RepeatedContent(len(in_training), repeated, conflicting)


def _left_out_summary(gate_copies: int, unanswered: int, repeated: RepeatedContent) -> str:
    """What the dataset left out, for the run's step line (``dataset.json`` has each count)."""
    parts = [
        f"{count} {what}"
        for count, what in (
            (gate_copies, "copies of gate images"),
            (unanswered, "copies no finished answer names"),
            (repeated.in_training, "copies of training images"),
            (repeated.repeated, "repeated copies"),
            (repeated.conflicting, "copies labelled both ways"),
        )
        if count
    ]
    return f"; left out: {', '.join(parts)}" if parts else ""


def manifest_body(bucket: str, channel: ChannelObjects) -> bytes:
    """SageMaker's ``ManifestFile`` format: the common prefix, then relative keys."""
    entries: list[Any] = [{"prefix": f"s3://{bucket}/{channel.prefix}"}, *channel.keys]
    return json.dumps(entries, indent=0).encode("utf-8")


def manifest_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "ManifestFile",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def _fingerprint(bucket: str, channels: list[ChannelObjects]) -> str:
    digest = hashlib.sha256()
    for channel in channels:
        for key in channel.keys:
            digest.update(f"s3://{bucket}/{channel.prefix}{key}\n".encode())
    return digest.hexdigest()


def assemble_dataset(
    s3: Any,
    dynamodb: Any,
    settings: RetrainingSettings,
    started_at: datetime,
    run_name: str,
    *,
    split: TrainingSplit | None = None,
) -> dict[str, Any]:
    """Write the manifests and ``dataset.json``; return what the next states need.
    ``split``: how the run's training job divides each class (its defaults when None)."""
    split = split or TrainingSplit()
    if problem := input_size_problem(settings.model_input_size):
        raise DatasetError(f"{problem}; nothing was trained")
    names = RunNames.for_run(settings.endpoint_name, started_at, run_name)
    bucket, labels = settings.bucket, settings.labels
    digests = Digests(s3, bucket)
    gate = GateContent(s3, bucket, settings.gate_prefix, labels, digests)
    few = too_few_images(gate.per_label, settings.gate_min_images_per_class)
    if few:
        raise DatasetError(
            f"the gate set s3://{bucket}/{settings.gate_prefix} is too small to judge a "
            f"candidate by: {', '.join(few)} images, fewer than the "
            f"{settings.gate_min_images_per_class} per class the gate needs; nothing was trained"
        )
    original, original_excluded, _ = read_channel(
        s3, bucket, settings.training_prefix, labels, gate
    )
    empty = [label for label, count in original.per_label.items() if count == 0]
    if empty:
        raise DatasetError(
            f"the training channel s3://{bucket}/{settings.training_prefix} has no images of "
            f"{', '.join(empty)}"
        )
    answered = reviewed_copies(dynamodb, settings.results_table)
    # The curated training channel is disjoint from the gate set by construction; labelled
    # copies come from uploads, where the same picture may arrive saved again.
    from scones_core.retraining.gate_pixels import GatePixels  # Pillow: only when it runs

    pixels = GatePixels(
        s3, bucket, gate.image_keys, ImageLimits.unrestricted(settings.model_input_size)
    )
    labelled, labelled_excluded, unanswered = read_channel(
        s3, bucket, settings.labelled_prefix, labels, gate, answered=answered, gate_pixels=pixels
    )
    labelled, repeated = drop_repeated_content(digests, labelled, original)
    small = split.too_small(
        {label: original.per_label[label] + labelled.per_label[label] for label in labels}
    )
    if small:
        raise DatasetError(
            f"too few images to train on in s3://{bucket}/{settings.training_prefix} and "
            f"s3://{bucket}/{settings.labelled_prefix}: {'; '.join(small)}; nothing was trained"
        )
    run_prefix = f"{settings.retraining_prefix}{names.base}/"
    channels = [(TRAIN_CHANNEL, original)]
    if labelled.keys:
        channels.append((LABELLED_CHANNEL, labelled))
    input_data_config = []
    for channel_name, channel in channels:
        key = f"{run_prefix}dataset/{channel_name}.manifest"
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=manifest_body(bucket, channel),
            ContentType="application/json",
        )
        input_data_config.append(manifest_channel(channel_name, f"s3://{bucket}/{key}"))
    summary = {
        "run_name": run_name,
        "started_at": started_at.astimezone(UTC).isoformat(timespec="seconds"),
        "labels": list(labels),
        "training": {
            "source": f"s3://{bucket}/{settings.training_prefix}",
            "images": len(original.keys),
            "per_label": original.per_label,
            "skipped_keys": original.skipped,
            "skipped_keys_named": list(original.not_read),
            "gate_duplicates_left_out": original_excluded,
        },
        "labelled": {
            "source": f"s3://{bucket}/{settings.labelled_prefix}",
            "images": len(labelled.keys),
            "per_label": labelled.per_label,
            "skipped_keys": labelled.skipped,
            "skipped_keys_named": list(labelled.not_read),
            "gate_duplicates_left_out": labelled_excluded,
            # Copies no REVIEWED record names: an answer never finished, or taken over.
            "unanswered_left_out": unanswered,
            # Copies whose bytes are training data already (drop_repeated_content).
            "training_duplicates_left_out": repeated.in_training,
            "repeats_left_out": repeated.repeated,
            "conflicting_labels_left_out": repeated.conflicting,
        },
        "gate_set": {
            "source": f"s3://{bucket}/{settings.gate_prefix}",
            "images": gate.images,
            "per_label": gate.per_label,
        },
        "fingerprint": _fingerprint(bucket, [c for _, c in channels]),
        "channels": [c["ChannelName"] for c in input_data_config],
    }
    dataset_key = f"{run_prefix}dataset/dataset.json"
    s3.put_object(
        Bucket=bucket,
        Key=dataset_key,
        Body=json.dumps(summary, indent=2).encode("utf-8"),
        ContentType="application/json",
    )
    evaluation_key = f"{run_prefix}evaluation"
    evaluation_prefix = f"s3://{bucket}/{evaluation_key}"
    return {
        "names": {
            "base": names.base,
            "processing_job": names.processing_job,
            "evaluation_reruns": list(names.evaluation_reruns),
            "client_token": names.client_token,
        },
        "input_data_config": input_data_config,
        "dataset_uri": f"s3://{bucket}/{dataset_key}",
        "training_output_uri": f"s3://{bucket}/{run_prefix}training",
        "evaluation_output_uri": evaluation_prefix,
        "evaluation_uri": f"{evaluation_prefix}/{EVALUATION_FILE}",
        # S3 CopyObject's CopySource ("bucket/key"): a promotion copies it to BaselineKey.
        "drift_baseline_source": f"{bucket}/{evaluation_key}/{CANDIDATE_BASELINE_FILE}",
        "training_images": len(original.keys),
        "labelled_images": len(labelled.keys),
        "summary": (
            f"{len(original.keys)} training images and {len(labelled.keys)} labelled images "
            f"({', '.join(f'{k} {v}' for k, v in labelled.per_label.items())})"
            + _left_out_summary(original_excluded + labelled_excluded, unanswered, repeated)
        ),
    }

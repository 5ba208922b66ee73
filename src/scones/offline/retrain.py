"""``scones retrain``: the retraining state machine's steps, offline, on the offline stack.

moto's Step Functions interpreter cannot run the ``.sync`` SageMaker integrations the
retraining state machine (``statemachine/retrain.asl.json``) uses, so this module runs
its steps itself, against the deployed stack, with the same code wherever there is code:

1. **dataset**: the deployed ``RetrainDatasetFunction`` (through the Lambda Invoke API)
   pins the original training channel plus the labelled-data prefix as manifests;
2. **train**: the channels are downloaded as SageMaker's File mode lays them out and the
   training job's program (``scones.sagemaker.entry_point``) runs locally with the
   hyperparameters of the deployed definition's ``TrainCandidate`` state, overridden by a
   short recipe; ``model.tar.gz`` goes where the job would put it;
3. **evaluate**: the processing job's program (``scones.sagemaker.evaluate_entry``) scores
   the candidate and the production model on the fixed gate set, with the
   ``ContainerArguments`` of the ``EvaluateCandidate`` state;
4. **gate**: the deployed ``RetrainJudgeFunction`` decides;
5. **register**: ``CreateModelPackage`` in the stack's model package group (moto);
6. **deploy**: the model server gets the candidate as a second production variant with
   ``CanaryCapacityPercent`` of the traffic; images go through the real workflow while it
   bakes; the rollback alarms the deployed definition's ``DeployCanary`` names
   (``EndpointErrorAlarm``) are evaluated on the canary's own numbers (its 5XX count from
   the endpoint); the canary is promoted (the only variant, 100 % of traffic) or removed.
   Its low-confidence share (from its data capture) is reported beside them: on AWS
   ``LowConfidenceShare`` is the whole endpoint's, still high from the production model
   that started the retraining, so it cannot judge a canary and rolls nothing back.

Every outcome leaves the item the state machine writes (``scones_core.retraining.outcome``)
in ``MonitorStateTable`` and a message on ``AlertTopic``. Offline the variants are named
after their model version (``model-<version>``), so records (``endpoint_variant``) and the
capture layout show which model answered while the canary bakes; once promoted, the
candidate serves as ``EndpointVariantName``, as blue/green leaves it on AWS.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from scones_core.bucket_layout import labelled_copy_key
from scones_core.monitoring.capture import capture_prefix, read_capture_objects
from scones_core.monitoring.locations import S3Location, list_objects
from scones_core.monitoring.statistics import ConfidenceSummary
from scones_core.monitoring.timestamps import format_millis
from scones_core.records import (
    BUCKET_ATTRIBUTE,
    KEY_ATTRIBUTE,
    LABELLED_KEY_ATTRIBUTE,
    MODEL_VERSION_ATTRIBUTE,
    PARTITION_KEY,
    RECORDED_AT_ATTRIBUTE,
    REVIEW_LABEL_ATTRIBUTE,
    REVIEWED_AT_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    VARIANT_ATTRIBUTE,
    Status,
)
from scones_core.retraining import outcome as outcomes
from scones_core.retraining.gate import EVALUATION_FILE
from scones_core.settings import parse_labels
from scones_core.training_split import VALIDATION_FRACTION

from scones.offline.retrain_recipe import DEFAULT_DATA, short_recipe
from scones.offline.stack import OfflineStack, StackOptions
from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import PROJECT_ROOT

if TYPE_CHECKING:
    from scones.serving.capture import CaptureWriter

TRAFFIC_DIR = PROJECT_ROOT / "samples"

Log = Callable[[str], None]


class RetrainError(RuntimeError):
    """A retraining step could not run; the message says which and why."""


@dataclass
class RetrainOptions:
    data_dir: Path = DEFAULT_DATA
    production_model: Path = SHIPPED_MODEL_DIR
    labelled_dir: Path | None = None
    # The training hyperparameters over the job's; None: the short recipe of the network
    # the deployed job trains (RetrainingNetwork).
    recipe: dict[str, Any] | None = None
    # Limits for quick runs (tests): images per label of the training channel / gate set.
    max_train_per_label: int | None = None
    max_gate_per_label: int | None = None
    # A deliberately broken training channel: labels shuffled across the images.
    shuffle_training_labels: bool = False
    canary_requests: int = 40
    after_promotion_requests: int = 6
    # Faults of the canary variant only, e.g. {"model_error": -1}: a model that fails.
    canary_faults: dict[str, int] | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    work_dir: Path | None = None


@dataclass
class Step:
    name: str
    decision: str
    detail: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "decision": self.decision,
            "seconds": round(self.seconds, 2),
            **self.detail,
        }


@dataclass
class RetrainResult:
    outcome: str
    run_name: str
    steps: list[Step]
    record: dict[str, Any]
    alert: dict[str, str] | None
    parameters: dict[str, str]
    started_at: str
    seconds: float = 0.0

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "run_name": self.run_name,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 1),
            "steps": [step.to_json() for step in self.steps],
            "record": self.record,
            "alert": self.alert,
            "parameters": self.parameters,
        }


def gate_split(
    data_dir: Path, labels: tuple[str, ...], production_manifest: dict[str, Any]
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(training channel, gate set): the production model's own validation split is the
    gate set, so production never trained on it and neither will the candidate.

    ``ValueError`` when ``data_dir`` is not the data production was trained on (the held
    out images are not the ones its ``model.json`` fingerprints): the same seed would then
    hold out images production trained on, and the gate would favour it."""
    import numpy as np

    from scones.model.folders import class_root, fingerprint, list_images, stratified_split

    items = list_images(data_dir, labels)
    recorded = production_manifest.get("split") or {}
    seed = int(recorded.get("seed", 0))
    fraction = float(recorded.get("validation_fraction", VALIDATION_FRACTION))
    targets = np.array([index for _, index in items], dtype=np.int64)
    kept, held = stratified_split(targets, fraction, seed)
    gate = [items[int(i)] for i in held]
    expected = recorded.get("validation_fingerprint")
    if expected and fingerprint([p for p, _ in gate], class_root(data_dir, labels)) != expected:
        raise ValueError(
            f"{data_dir} is not the data the production model was trained on (its validation "
            "split differs), so no gate set can be held out of it that production never saw: "
            "retrain on the production model's data (its model.json names the split)"
        )
    return [items[int(i)] for i in kept], gate


def images_trained(manifest: dict[str, Any], channels: dict[str, int]) -> tuple[int, int]:
    """How many images the training program used (its split's two sides, from the
    candidate's ``model.json``) and how many of the channels' files it left out (a
    labelled image the image rules refuse, say): the channels' files are what it was
    given, not what it trained on."""
    given = sum(channels.values())
    recorded = manifest.get("split")
    split: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    used = int(split.get("train_images", 0)) + int(split.get("validation_images", 0))
    if not used:
        return given, 0
    return used, max(0, given - used)


def reviewed_item(bucket: str, labelled_key: str, label: str) -> dict[str, Any]:
    """A REVIEWED record for a labelled image the rehearsal was given (``--labelled``): what
    a person's finished answer on the review page leaves, naming its copy (which is also
    the image it is about: no upload was classified, so it has no score)."""

    now = format_millis(datetime.now(UTC))
    return {
        PARTITION_KEY: {"S": f"rehearsal/{labelled_key}"},
        BUCKET_ATTRIBUTE: {"S": bucket},
        KEY_ATTRIBUTE: {"S": labelled_key},
        STATUS_ATTRIBUTE: {"S": Status.REVIEWED.value},
        RECORDED_AT_ATTRIBUTE: {"S": now},
        REVIEWED_AT_ATTRIBUTE: {"S": now},
        REVIEW_LABEL_ATTRIBUTE: {"S": label},
        LABELLED_KEY_ATTRIBUTE: {"S": labelled_key},
    }


def _limit(items: list[tuple[Path, int]], per_label: int | None) -> list[tuple[Path, int]]:
    if per_label is None:
        return items
    counts: dict[int, int] = {}
    kept = []
    for path, index in items:
        if counts.get(index, 0) < per_label:
            counts[index] = counts.get(index, 0) + 1
            kept.append((path, index))
    return kept


def model_tarball(model_dir: Path) -> bytes:
    """``model.tar.gz`` as a training job writes it: the artifact's files at the root.

    At gzip's usual level 6: level 9, tarfile's default, takes five times as long on the
    model's weights for under 1 % less."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(model_dir.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return buffer.getvalue()


def toolkit_arguments(hyperparameters: dict[str, str]) -> list[str]:
    """What the SageMaker training toolkit passes to the program for a job's JSON-encoded
    hyperparameters: ``--name value``."""
    from scones.sagemaker.entry_point import toolkit_argv

    return toolkit_argv({name: json.loads(encoded) for name, encoded in hyperparameters.items()})


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class OfflineRetrain:
    """One retraining run on a fresh offline stack whose endpoint serves ``production_model``."""

    def __init__(
        self,
        options: RetrainOptions,
        log: Log | None = None,
        stopping: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.options = options
        self.log = log or (lambda message: None)
        # Around the stack's stop: a command guards it there from its stop signals, which
        # would otherwise cut it short (its model server and workers left running).
        self.stopping = stopping
        self.steps: list[Step] = []
        self._started = time.perf_counter()
        self.gate_images: list[Path] = []  # the gate set's files, once published

    # -- the run ------------------------------------------------------------------
    def run(self) -> RetrainResult:
        options = self.options
        work = Path(options.work_dir or tempfile.mkdtemp(prefix="scones-retrain-"))
        stack: OfflineStack | None = None
        try:
            stack = OfflineStack(
                StackOptions(
                    model_dir=options.production_model,
                    overrides={
                        "RetryIntervalSeconds": "1",
                        "RetryMaxDelaySeconds": "1",
                        "RetryMaxAttempts": "1",
                        **options.overrides,
                    },
                    work_dir=work / "stack",
                    # The canary is a second production variant of the running endpoint.
                    model_in_process=True,
                )
            )
            stack.start()
            return self._run(stack, work)
        finally:
            if stack is not None:
                with self.stopping():
                    stack.stop()
            if options.work_dir is None:  # also when the stack did not start
                shutil.rmtree(work, ignore_errors=True)

    def _run(self, stack: OfflineStack, work: Path) -> RetrainResult:
        started_at = datetime.now(UTC).replace(microsecond=0)
        self.stack, self.work = stack, work
        self.params = stack.parameters
        self.bucket = stack.bucket
        self.s3 = stack.client("s3")
        self.labels = parse_labels(self.params["ModelLabels"])
        run_name = f"{self.params['EndpointName']}-retrain-{started_at:%Y%m%d-%H%M%S}"
        self.run_name = run_name
        definition = json.loads(
            stack.client("stepfunctions").describe_state_machine(
                stateMachineArn=stack.stack.outputs["RetrainStateMachineArn"]
            )["definition"]
        )
        self.asl_states: dict[str, Any] = definition["States"]
        try:
            production_url = self._publish()
            dataset = self._dataset(run_name, started_at)
            model_data_url, candidate_dir = self._train(dataset)
            self._evaluate(dataset, model_data_url, production_url)
            gate = self._judge(dataset)
            if not gate["passed"]:
                return self._finish(outcomes.REJECTED, gate["summary"], started_at)
            package_arn = self._register(dataset, gate, model_data_url)
            promoted, reason = self._deploy(candidate_dir, package_arn, dataset)
        except RetrainError as exc:
            # As the state machine's RecordFailed and AlertFailed: a FAILED item and an alert.
            return self._finish(outcomes.FAILED, str(exc), started_at)
        return self._finish(
            outcomes.PROMOTED if promoted else outcomes.ROLLED_BACK, reason, started_at
        )

    def _step(self, name: str, decision: str, started: float, **detail: Any) -> None:
        step = Step(name, decision, detail, time.perf_counter() - started)
        self.steps.append(step)
        self.log(f"[{name}] {decision}")

    # -- 0: what a deployed stack would already hold --------------------------------
    def _publish(self) -> str:
        started = time.perf_counter()
        options, params = self.options, self.params
        from scones.model.artifact import ModelManifest

        manifest = ModelManifest.load(options.production_model).to_json()
        training, gate = gate_split(options.data_dir, self.labels, manifest)
        training = _limit(training, options.max_train_per_label)
        gate = _limit(gate, options.max_gate_per_label)
        train_labels = [index for _, index in training]
        if options.shuffle_training_labels:
            random.Random(options.seed).shuffle(train_labels)
        for (path, _), index in zip(training, train_labels, strict=True):
            key = f"{params['TrainingDataPrefix']}{self.labels[index]}/{path.name}"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())
        for path, index in gate:
            key = f"{params['GateDataPrefix']}{self.labels[index]}/{path.name}"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())
        self.gate_images = [path for path, _ in gate]
        labelled = 0
        if options.labelled_dir is not None:
            from scones.model.folders import list_labelled

            files, others = list_labelled(options.labelled_dir, self.labels)
            if others:
                self.log(
                    f"left out folders of {options.labelled_dir} that name no label: "
                    + ", ".join(others)
                )
            dynamodb = self.stack.client("dynamodb")
            table = self.stack.stack.outputs["ResultsTableName"]
            for path, index in files:
                key = labelled_copy_key(params["LabelledDataPrefix"], self.labels[index], path.name)
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())
                # As the review page leaves a finished answer: the record that names the
                # copy, without which the dataset step does not train on it.
                dynamodb.put_item(
                    TableName=table, Item=reviewed_item(self.bucket, key, self.labels[index])
                )
                labelled += 1
        version = str(manifest["version"])
        production_key = f"models/production/{version}/model.tar.gz"
        self.s3.put_object(
            Bucket=self.bucket, Key=production_key, Body=model_tarball(options.production_model)
        )
        self._step(
            "publish",
            f"bucket holds {len(training)} training images"
            + (" (labels shuffled)" if options.shuffle_training_labels else "")
            + f", {len(gate)} gate images, {labelled} labelled images; production model "
            f"{version}",
            started,
            training_images=len(training),
            gate_images=len(gate),
            labelled_images=labelled,
            shuffled_labels=options.shuffle_training_labels,
            production_model=f"s3://{self.bucket}/{production_key}",
        )
        return f"s3://{self.bucket}/{production_key}"

    # -- 1: dataset -----------------------------------------------------------------
    def _invoke(self, logical_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = self.stack.client("lambda").invoke(
            FunctionName=self.stack.function_name(logical_id),
            Payload=json.dumps(payload).encode(),
        )
        body = json.loads(response["Payload"].read() or b"null")
        if "FunctionError" in response:
            message = body.get("errorMessage") if isinstance(body, dict) else body
            raise RetrainError(f"{logical_id} failed: {message}")
        if isinstance(body, dict) and "failure" in body:  # the step's own, as data
            failure = body["failure"]
            raise RetrainError(f"{logical_id} failed: {failure['Error']}: {failure['Cause']}")
        return dict(body)

    def _job_hyperparameters(self) -> dict[str, str]:
        """The deployed TrainCandidate's hyperparameters with this run's recipe over them,
        JSON-encoded as a CreateTrainingJob request carries them."""
        hyperparameters = dict(self.asl_states["TrainCandidate"]["Parameters"]["HyperParameters"])
        recipe = self.options.recipe
        if recipe is None:
            recipe = short_recipe(json.loads(hyperparameters["network"]))
        hyperparameters.update({k: json.dumps(v) for k, v in recipe.items()})
        return hyperparameters

    def _training_split(self) -> dict[str, Any]:
        """How the training program will split each class, read as it reads the job's
        hyperparameters (``members=08`` is 8 to it)."""
        from scones.sagemaker.entry_point import check_hyperparameters

        decoded = {k: json.loads(v) for k, v in self._job_hyperparameters().items()}
        try:
            recipe = check_hyperparameters(decoded)
        except ValueError as exc:
            raise RetrainError(f"the training program refuses the recipe: {exc}") from exc
        return {"validation_fraction": recipe.validation_fraction, "members": recipe.members}

    def _dataset(self, run_name: str, started_at: datetime) -> dict[str, Any]:
        started = time.perf_counter()
        dataset = self._invoke(
            "RetrainDatasetFunction",
            {
                "run_name": run_name,
                "started_at": started_at.isoformat().replace("+00:00", "Z"),
                # This run trains its own recipe (short_recipe, --hyperparameter), not the
                # training program's defaults the state machine's job uses.
                "training_split": self._training_split(),
            },
        )
        self._step(
            "dataset",
            dataset["summary"],
            started,
            dataset_uri=dataset["dataset_uri"],
            channels=[c["ChannelName"] for c in dataset["input_data_config"]],
            training_job=dataset["names"]["base"],
        )
        return dataset

    # -- 2: training ----------------------------------------------------------------
    def _download_channel(self, channel: dict[str, Any], into: Path) -> int:
        source = channel["DataSource"]["S3DataSource"]
        bucket, key = _split_uri(source["S3Uri"])
        entries = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        prefix_bucket, prefix = _split_uri(entries[0]["prefix"])
        for relative in entries[1:]:
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            body = self.s3.get_object(Bucket=prefix_bucket, Key=prefix + relative)["Body"]
            target.write_bytes(body.read())
        return len(entries) - 1

    def _train(self, dataset: dict[str, Any]) -> tuple[str, Path]:
        from scones.sagemaker import entry_point

        started = time.perf_counter()
        hyperparameters = self._job_hyperparameters()
        data_root = self.work / "opt/ml/input/data"
        channels = {}
        for channel in dataset["input_data_config"]:
            name = channel["ChannelName"]
            channels[name] = self._download_channel(channel, data_root / name)
        model_dir = self.work / "opt/ml/model"
        failure = self.work / "opt/ml/output/failure"
        argv = [*toolkit_arguments(hyperparameters), "--model-dir", str(model_dir)]
        argv += ["--data", str(data_root / "train"), "--failure-file", str(failure)]
        if "labelled" in channels:
            argv += ["--labelled", str(data_root / "labelled")]
        # What the program prints is the job's log (CloudWatch, on SageMaker): the
        # command's log, on stderr, never its stdout (``--json`` prints one document there).
        with contextlib.redirect_stdout(sys.stderr):
            status = entry_point.main(argv)
        if status != 0:
            # As TrainCandidate fails on AWS: the job's FailureReason is the program's.
            reason = failure.read_text(encoding="utf-8") if failure.is_file() else ""
            raise RetrainError(
                f"the training job failed: {reason or f'the program exited with {status}'}"
            )
        job = dataset["names"]["base"]
        bucket, prefix = _split_uri(dataset["training_output_uri"])
        key = f"{prefix}/{job}/output/model.tar.gz"
        self.s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(model_dir))
        from scones.model.artifact import ModelManifest

        manifest = ModelManifest.load(model_dir).to_json()
        metrics = manifest["metrics"]
        self.candidate_version = manifest["version"]
        used, left_out = images_trained(manifest, channels)
        self._step(
            "train",
            f"candidate {self.candidate_version} trained on {used} images "
            f"({', '.join(f'{k} {v}' for k, v in channels.items())} in its channels"
            + (f", {left_out} left out by the program: its log says why" if left_out else "")
            + f"); its own validation accuracy {metrics['accuracy']:.4f}",
            started,
            training_job=job,
            hyperparameters={k: json.loads(v) for k, v in hyperparameters.items()},
            model_data_url=f"s3://{bucket}/{key}",
            channels=channels,
            images_trained=used,
            left_out=left_out,
        )
        return f"s3://{bucket}/{key}", model_dir

    # -- 3: evaluation ----------------------------------------------------------------
    def _download_prefix(self, uri: str, into: Path) -> None:
        bucket, prefix = _split_uri(uri)
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(
                    self.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                )

    def _evaluate(self, dataset: dict[str, Any], candidate_url: str, production_url: str) -> None:
        from scones.sagemaker import evaluate_entry

        started = time.perf_counter()
        state = self.asl_states["EvaluateCandidate"]["Parameters"]
        inputs = {item["InputName"]: item["S3Input"] for item in state["ProcessingInputs"]}
        sources = {
            "candidate": candidate_url,
            "production": production_url,
            "gate": inputs["gate"]["S3Uri"],
        }
        root = self.work / "opt/ml/processing"
        for name, uri in sources.items():
            self._download_prefix(uri, root / "input" / name)
        out = root / "output"
        argv = [
            *state["AppSpecification"]["ContainerArguments"],
            *("--candidate", str(root / "input/candidate")),
            *("--production", str(root / "input/production")),
            *("--gate", str(root / "input/gate")),
            *("--out", str(out)),
        ]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the processing job's log, as above
                evaluate_entry.main(argv)
        except Exception as exc:
            # As EvaluateCandidate fails on AWS (the job's FailureReason is the program's
            # exit message): a FAILED run with its record, alert and report. A gate image
            # is named by its S3 object, not by the job's copy of it.
            reason = str(exc).replace(str(root / "input/gate"), sources["gate"].rstrip("/"))
            raise RetrainError(
                f"the evaluation job failed: {type(exc).__name__}: {reason}"
            ) from exc
        bucket, prefix = _split_uri(dataset["evaluation_output_uri"])
        for path in sorted(out.iterdir()):
            self.s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
        result = json.loads((out / EVALUATION_FILE).read_text())
        self.evaluation = result
        self._step(
            "evaluate",
            f"{result['gate_set']['images']} gate images: candidate accuracy "
            f"{result['candidate']['accuracy']:.4f}, production "
            f"{result['production']['accuracy']:.4f}",
            started,
            processing_job=dataset["names"]["processing_job"],
            evaluation_uri=dataset["evaluation_uri"],
            candidate=_scores(result["candidate"]),
            production=_scores(result["production"]),
            candidate_baseline=result.get("candidate_baseline"),
        )

    # -- 4: gate ----------------------------------------------------------------------
    def _judge(self, dataset: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        gate = self._invoke("RetrainJudgeFunction", {"evaluation_uri": dataset["evaluation_uri"]})
        self.gate = gate
        self._step(
            "gate",
            ("PASSED: " if gate["passed"] else "REFUSED: ") + gate["summary"],
            started,
            passed=gate["passed"],
            reasons=gate["reasons"],
            rules=gate["rules"],
        )
        return gate

    # -- 5: registry --------------------------------------------------------------------
    def _register(self, dataset: dict[str, Any], gate: dict[str, Any], model_url: str) -> str:
        started = time.perf_counter()
        state = self.asl_states["RegisterCandidate"]["Parameters"]
        spec = json.loads(json.dumps(state["InferenceSpecification"]))
        # The state machine declares the instance type the candidate runs on: production's,
        # and the offline endpoint has none, so EndpointInstanceType, as Prepare names it.
        del spec["SupportedRealtimeInferenceInstanceTypes.$"]
        spec["SupportedRealtimeInferenceInstanceTypes"] = [
            self.asl_states["Prepare"]["Parameters"]["instance_type"]
        ]
        spec["Containers"] = [
            {
                "Image": spec["Containers"][0]["Image"] or "scones-offline-model-server",
                "ModelDataUrl": model_url,
            }
        ]
        response = self.stack.client("sagemaker").create_model_package(
            ModelPackageGroupName=state["ModelPackageGroupName"],
            ModelPackageDescription=gate["description"],
            ModelApprovalStatus=state["ModelApprovalStatus"],
            InferenceSpecification=spec,
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": dataset["evaluation_uri"],
                    }
                }
            },
            CustomerMetadataProperties=gate["metadata"],
        )
        arn = str(response["ModelPackageArn"])
        self._step(
            "register",
            f"model package {arn}",
            started,
            model_package_arn=arn,
            group=state["ModelPackageGroupName"],
            metadata=gate["metadata"],
        )
        return arn

    # -- 6: canary ------------------------------------------------------------------------
    def _capture_writer(self, variant_name: str) -> CaptureWriter:
        """A variant's capture into the stack's bucket, at the stack's share: the candidate's
        endpoint config keeps DataCaptureSamplingPercentage on AWS."""
        from scones.serving.capture import CaptureWriter, S3CaptureSink

        params = self.params
        return CaptureWriter(
            S3CaptureSink(self.bucket, params["DataCapturePrefix"], self.stack.client("s3")),
            endpoint_name=params["EndpointName"],
            variant_name=variant_name,
            sampling_percentage=float(params["DataCaptureSamplingPercentage"]),
            flush_interval_s=1.0,
        )

    def _deploy(
        self, candidate_dir: Path, package_arn: str, dataset: dict[str, Any]
    ) -> tuple[bool, str]:
        from scones.model.artifact import OnnxClassifier
        from scones.serving.app import ProductionVariant
        from scones.serving.faults import FaultPlan

        started = time.perf_counter()
        options, params = self.options, self.params
        endpoint = self.stack.model_endpoint
        production = endpoint.primary
        classifier = OnnxClassifier(candidate_dir)
        variant_name = f"model-{classifier.manifest.version}"
        share = float(params["CanaryCapacityPercent"]) / 100.0
        faults = None
        if options.canary_faults:
            faults = FaultPlan()
            faults.arm(options.canary_faults)
        canary = ProductionVariant(
            variant_name,
            classifier,
            weight=share,
            capture=self._capture_writer(variant_name),
            faults=faults,
        )
        endpoint.seed_routing(options.seed)
        endpoint.add_variant(canary)
        endpoint.set_weights({production.name: 1.0 - share})
        self.log(
            f"[deploy] canary {variant_name} takes {share:.0%} of the traffic beside "
            f"{production.name}; baking with {options.canary_requests} images"
        )
        rows = self._traffic(options.canary_requests, "canary")
        self.stack.flush_capture()
        alarms = self._alarms(canary, rows)
        breached = [alarm for alarm in alarms if alarm["state"] == "ALARM"]
        by_variant = _records_by_variant(rows)
        detail: dict[str, Any] = {
            "canary_variant": variant_name,
            "production_variant": production.name,
            "canary_share": share,
            "model_package_arn": package_arn,
            "alarms": alarms,
            "canary_low_confidence": self._low_confidence(canary),
            "records_by_variant": by_variant,
            "invocations": {v.name: v.describe() for v in endpoint.variants()},
        }
        unproven = canary.invocations == 0
        if breached or unproven:
            # An alarm on a canary that served nothing cannot fire: a model failing every
            # request would be promoted (a small CanaryCapacityPercent over a short bake).
            endpoint.remove_variant(variant_name)
            endpoint.set_weights({production.name: 1.0})
            detail["model_package_status"] = self._reject_package(package_arn)
            if breached:
                names = ", ".join(alarm["name"] for alarm in breached)
                why = f"an alarm rolled the canary back ({names})"
            else:
                why = (
                    f"the canary served none of the {len(rows)} requests of its bake at "
                    f"{share:.0%} (CanaryCapacityPercent), so nothing shows it serves; bake "
                    "with more requests (--canary-requests) or a larger share"
                )
            reason = (
                f"{why}: the endpoint serves {production.name} again, not the candidate "
                f"{variant_name}"
            )
            self._step("deploy", "ROLLED BACK: " + reason, started, **detail)
            return False, reason
        # As blue/green on AWS: the new fleet takes all traffic under the endpoint's one
        # variant (EndpointVariantName), whose capture the monitor reads and whose errors
        # EndpointErrorAlarm watches; the canary's own variant goes.
        endpoint.set_weights({variant_name: 1.0})
        endpoint.remove_variant(production.name)
        capture = self._capture_writer(production.name)
        endpoint.add_variant(ProductionVariant(production.name, classifier, capture=capture))
        endpoint.remove_variant(variant_name)
        after = self._traffic(options.after_promotion_requests, "promoted")
        self.stack.flush_capture()
        detail["after_promotion"] = {
            "records_by_variant": _records_by_variant(after),
            "model_versions": sorted({str(row.get(MODEL_VERSION_ATTRIBUTE)) for row in after}),
            "capture_percent": capture.sampling_percentage,
            "capture_files": self._capture_files(production.name),
        }
        baseline = self._replace_baseline(dataset)
        detail["drift_baseline"] = {"status": baseline, "model_version": self._baseline_version()}
        reason = (
            f"candidate {classifier.manifest.version} (model package {package_arn}) serves all "
            f"traffic as variant {production.name}; {baseline}"
        )
        self._step("deploy", "PROMOTED: " + reason, started, **detail)
        return True, reason

    def _baseline_version(self) -> str | None:
        """The model the monitor's drift baseline now describes (None: there is none)."""
        state = self.asl_states["ReplaceDriftBaseline"]["Parameters"]
        try:
            body = self.s3.get_object(Bucket=state["Bucket"], Key=state["Key"])["Body"].read()
        except ClientError:
            return None
        return str(json.loads(body).get("model_version"))

    def _replace_baseline(self, dataset: dict[str, Any]) -> str:
        """What the definition's ``ReplaceDriftBaseline`` does once the candidate serves:
        its own baseline (from the evaluation step's output) becomes the monitor's."""
        state = self.asl_states["ReplaceDriftBaseline"]["Parameters"]
        source = dataset["drift_baseline_source"]
        target = f"s3://{state['Bucket']}/{state['Key']}"
        try:
            self.s3.copy_object(
                Bucket=state["Bucket"],
                Key=state["Key"],
                CopySource=source,
                ContentType=state["ContentType"],
                MetadataDirective=state["MetadataDirective"],
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            return (
                f"the drift baseline still describes the previous model: copying it failed "
                f"({code}), copy s3://{source} (the evaluation step writes it only when the "
                "candidate archive holds a baseline.json the monitor can use for the "
                f"candidate, and the candidate_baseline of {dataset['evaluation_uri']} says "
                f"why it did not) to {target} by hand"
            )
        return "the drift baseline is now the candidate's own, from its validation split"

    def _reject_package(self, package_arn: str) -> str:
        """What the definition's ``RejectRolledBackCandidate`` does: the registry keeps the
        rolled-back candidate, Rejected with the state's description."""
        state = self.asl_states["RejectRolledBackCandidate"]["Parameters"]
        sagemaker = self.stack.client("sagemaker")
        try:
            sagemaker.update_model_package(
                ModelPackageArn=package_arn,
                ModelApprovalStatus=state["ModelApprovalStatus"],
                ApprovalDescription=state["ApprovalDescription"],
            )
            described = sagemaker.describe_model_package(ModelPackageName=package_arn)
        except (ClientError, BotoCoreError) as exc:
            # As the state's Catch: the rollback is still recorded and alerted.
            self.log(f"[deploy] the model package could not be marked Rejected: {exc}")
            return f"not updated: {type(exc).__name__}: {exc}"
        return str(described["ModelApprovalStatus"])

    def _traffic_images(self) -> list[Path]:
        """What the canary and the promoted model are sent: the held-out samples when they
        have a folder of every label, else the gate set's images (a stack of other labels:
        held out from production's training as well)."""
        from scones.model.folders import DataError, list_images

        try:
            return [path for path, _ in list_images(TRAFFIC_DIR, self.labels)]
        except DataError:
            return list(self.gate_images)

    def _traffic(self, count: int, tag: str) -> list[dict[str, Any]]:
        if count <= 0:
            return []

        images = self._traffic_images()
        api = self.stack.api()
        uploads = [
            api.upload_file(
                images[i % len(images)], f"retrain-{tag}-{i:03d}-{images[i % len(images)].name}"
            )
            for i in range(count)
        ]
        records = api.wait_for_records(uploads, timeout=300)
        return [records[upload] for upload in uploads]

    def _capture_keys(self, variant_name: str) -> list[str]:
        """Every key of the variant's capture, where the monitor looks for it."""
        capture = S3Location(self.bucket, self.params["DataCapturePrefix"])
        prefix = capture_prefix(capture, self.params["EndpointName"], variant_name)
        return [item.key for item in list_objects(self.s3, self.bucket, prefix.as_prefix())]

    def _capture_files(self, variant_name: str) -> list[str]:
        return [f"s3://{self.bucket}/{key}" for key in self._capture_keys(variant_name)]

    def _low_confidence(self, canary: Any) -> dict[str, Any]:
        """The canary's share of answers below the threshold, from its own data capture,
        read as the monitor reads capture: reported beside the alarms, never a rollback
        (see the module's note)."""
        threshold = float(self.params["ConfidenceThreshold"])
        batch = read_capture_objects(
            self.s3, self.bucket, self._capture_keys(canary.name), self.labels
        )
        summary = ConfidenceSummary.of([r.confidence for r in batch.records], threshold)
        if summary is None:
            source = "no captured canary answer"
        else:
            low = round(summary.low_confidence_share * summary.count)
            source = f"{low} of {summary.count} captured canary answers below {threshold:g}"
        if batch.warnings:
            first = batch.warnings[0]
            where = first.source + ("" if first.line is None else f" line {first.line}")
            source += (
                f"; {len(batch.warnings)} capture line(s) or file(s) not used "
                f"(the first: {where}: {first.reason})"
            )
        share = None if summary is None else round(summary.low_confidence_share, 6)
        return {"share": share, "source": source}

    def _alarms(self, canary: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rollback alarms of the deployed ``DeployCanary`` state, as the stack defines
        them, evaluated on the canary's own numbers."""
        deploy = self.asl_states["DeployCanary"]["Parameters"]["DeploymentConfig"]
        names = [a["AlarmName"] for a in deploy["AutoRollbackConfiguration"]["Alarms"]]
        cloudwatch = self.stack.client("cloudwatch")
        alarms = {
            a["AlarmName"]: a for a in cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]
        }
        missing = sorted(set(names) - set(alarms))
        if missing:
            raise RetrainError(f"the stack has no alarm {', '.join(missing)}")
        by_metric = {
            "Invocation5XXErrors": (
                float(canary.errors_5xx),
                f"{canary.errors_5xx} 5XX answers of {canary.invocations} canary invocations "
                "(the endpoint's per-variant count)",
            ),
        }
        evaluated = []
        for name in names:
            alarm = alarms[name]
            if alarm["MetricName"] not in by_metric:
                raise RetrainError(
                    f"the rehearsal cannot evaluate {name} ({alarm['MetricName']}) offline"
                )
            value, source = by_metric[alarm["MetricName"]]
            breached = _compare(value, alarm["ComparisonOperator"], float(alarm["Threshold"]))
            state = "ALARM" if breached else "OK"
            cloudwatch.set_alarm_state(
                AlarmName=name,
                StateValue=state,
                StateReason=f"scones retrain: {alarm['MetricName']} of the canary = {value:g}",
            )
            evaluated.append(
                {
                    "name": name,
                    "metric": f"{alarm['Namespace']}/{alarm['MetricName']}",
                    "value": round(value, 6),
                    "comparison": alarm["ComparisonOperator"],
                    "threshold": float(alarm["Threshold"]),
                    "state": state,
                    "source": source,
                }
            )
        return evaluated

    # -- the outcome --------------------------------------------------------------------
    def _finish(self, outcome: str, reason: str, started_at: datetime) -> RetrainResult:
        started = time.perf_counter()
        params = self.params
        endpoint_name = params["EndpointName"]
        execution_arn = f"offline:scones-retrain:{self.run_name}"
        item = outcomes.outcome_item(
            outcome=outcome,
            endpoint_name=endpoint_name,
            run_name=self.run_name,
            execution_arn=execution_arn,
            recorded_at=datetime.now(UTC).isoformat(),
            reason=reason,
        )
        table = self.stack.stack.physical_id("MonitorStateTable")
        self.stack.client("dynamodb").put_item(TableName=table, Item=item)
        subject = outcomes.alert_subject(outcome, endpoint_name)
        message = f"Retraining {self.run_name}: {reason}"
        self.stack.client("sns").publish(
            TopicArn=self.stack.stack.outputs["AlertTopicArn"], Subject=subject, Message=message
        )
        record = {name: value["S"] for name, value in item.items()}
        self._step(
            "record",
            f"{outcome} recorded in {table} and sent to the alert topic",
            started,
            table=table,
        )
        return RetrainResult(
            outcome=outcome,
            run_name=self.run_name,
            steps=list(self.steps),
            record=record,
            alert={"subject": subject, "message": message},
            parameters={
                name: params[name]
                for name in (
                    "ConfidenceThreshold",
                    "GateMinAcceptedAccuracy",
                    "GateMaxCoverageDrop",
                    "GateMaxRecallDrop",
                    "GateMinImagesPerClass",
                    "CanaryCapacityPercent",
                    "LowConfidenceAlertShare",
                    "EndpointName",
                )
            },
            started_at=started_at.isoformat(),
            seconds=time.perf_counter() - self._started,
        )


def _scores(report: dict[str, Any]) -> dict[str, Any]:
    at = report["at_threshold"]
    return {
        "version": report["model"]["version"],
        "accuracy": report["accuracy"],
        "coverage": at["coverage"],
        "accepted_accuracy": at["accepted_accuracy"],
        "accepted": at["accepted"],
    }


def _records_by_variant(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    summary: dict[str, dict[str, int]] = {}
    for row in rows:
        variant = str(row.get(VARIANT_ATTRIBUTE) or "(none)")
        status = str(row.get(STATUS_ATTRIBUTE))
        summary.setdefault(variant, {})
        summary[variant][status] = summary[variant].get(status, 0) + 1
    return summary


def _compare(value: float, operator: str, threshold: float) -> bool:
    if operator == "GreaterThanThreshold":
        return value > threshold
    if operator == "GreaterThanOrEqualToThreshold":
        return value >= threshold
    if operator == "LessThanThreshold":
        return value < threshold
    if operator == "LessThanOrEqualToThreshold":
        return value <= threshold
    raise RetrainError(f"alarm comparison {operator} is not supported offline")

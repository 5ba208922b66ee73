"""The retraining gate's evaluation, as a SageMaker processing job runs it.

The processing job mounts (``ProcessingInputs`` of the retraining state machine):

* ``/opt/ml/processing/input/candidate/model.tar.gz``: the training job's output;
* ``/opt/ml/processing/input/production/model.tar.gz``: what the endpoint serves;
* ``/opt/ml/processing/input/gate/<label>/*``: the fixed gate set;
* ``/opt/ml/processing/input/code/sourcedir.tar.gz``: this package (the same bundle
  the training job runs).

Both models are scored through onnxruntime on the same images by
:func:`scones.model.evaluate.evaluate_artifact`, the code ``scones evaluate`` uses, and
``gate-evaluation.json`` (plus each model's own ``evaluation.json``) goes to
``/opt/ml/processing/output``. So does ``candidate-baseline.json``: the ``baseline.json``
training wrote into the candidate's archive (its answers on its own validation split, made
as the shipped model's), which a promotion makes the monitor's drift baseline, but only
when it is one the monitor can use for the candidate (``model_baseline``: the candidate's
labels and version); otherwise the report's ``candidate_baseline`` says why there is none.
``scones retrain`` calls :func:`main` with the same arguments on local folders.

A processing job whose program fails gets a generic ``FailureReason`` that points at the
logs; so in a processing job (``/opt/ml/config/processingjobconfig.json`` exists) the error
also goes to ``/opt/ml/output/message``, which SageMaker returns as the job's
``ExitMessage`` in the job's description, the cause the retraining run records.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from scones_core.monitoring.drift import BaselineError, model_baseline
from scones_core.retraining.gate import CANDIDATE_BASELINE_FILE, EVALUATION_FILE

from scones.paths import BASELINE_FILE, MANIFEST_NAME, ONNX_NAME
from scones.sagemaker.exit_message import (
    PROCESSING_EXIT_MESSAGE,
    PROCESSING_JOB_CONFIG,
    write_exit_message,
)

T = TypeVar("T")

PROCESSING_ROOT = Path("/opt/ml/processing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scones_evaluate.py", description=__doc__)
    parser.add_argument("--candidate", type=Path, default=PROCESSING_ROOT / "input/candidate")
    parser.add_argument("--production", type=Path, default=PROCESSING_ROOT / "input/production")
    parser.add_argument("--gate", type=Path, default=PROCESSING_ROOT / "input/gate")
    parser.add_argument("--out", type=Path, default=PROCESSING_ROOT / "output")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument(
        "--exit-message",
        type=Path,
        default=PROCESSING_EXIT_MESSAGE if PROCESSING_JOB_CONFIG.is_file() else None,
        help="where a failure's reason is written (in a processing job: its ExitMessage)",
    )
    return parser


# An archive is read up to this many bytes unpacked (headers included) and this many
# members: 256 MiB is 9x the largest model the project ships (the 28.5 MB reference
# ensemble) and over 3x a default four-member EfficientNet-Lite2 ensemble (about 77 MB of
# weights), the largest default recipe; a training job's archive holds five files.
MAX_UNPACKED_BYTES = 256 << 20
MAX_ARCHIVE_MEMBERS = 64


def unpack_model(source: Path, into: Path) -> Path:
    """A model folder from ``source``: a folder holding the model's archive, the archive
    itself, or an already unpacked artifact (``model.json`` beside ``model.onnx``).

    A processing job's ``S3Prefix`` input keeps an object's own name, and an endpoint's
    ``ModelDataUrl`` may name any key: a folder's one ``*.tar.gz`` is the archive,
    ``model.tar.gz`` when there are several.

    Only the files the gate reads are written, each a regular file: ``model.json``,
    ``model.onnx`` and ``baseline.json`` at the archive's root. Nothing else in it (the
    evaluation report, a link, a device, a path outside ``into``) is, and an archive that
    unpacks to more than :data:`MAX_UNPACKED_BYTES` is refused before that much is read."""
    if source.is_dir() and (source / MANIFEST_NAME).is_file():
        return source
    archive = _archive_in(source) if source.is_dir() else source
    if not archive.is_file():
        raise FileNotFoundError(f"no model.tar.gz or model.json in {source}")
    into.mkdir(parents=True, exist_ok=True)
    try:
        _extract_model_files(archive, into)
    except (EOFError, zlib.error) as exc:  # gzip's and zlib's, not tarfile's own errors
        raise ValueError(f"{archive} is cut short or corrupt: {exc}") from exc
    return into


def _extract_model_files(archive: Path, into: Path) -> None:
    wanted = {MANIFEST_NAME, ONNX_NAME, BASELINE_FILE}
    with tarfile.open(archive, "r:gz") as tar:
        for count, member in enumerate(tar, start=1):
            if count > MAX_ARCHIVE_MEMBERS:
                raise ValueError(
                    f"{archive} holds more than {MAX_ARCHIVE_MEMBERS} files: not a model's "
                    f"archive (one holds {', '.join(sorted(wanted))} and its evaluation report)"
                )
            if member.offset_data + member.size > MAX_UNPACKED_BYTES:
                raise ValueError(
                    f"{archive} unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB "
                    f"({member.name} alone is {member.size} bytes): not a model's archive"
                )
            name = posixpath.normpath(member.name)  # ./model.json as tar -C folder . writes it
            if name not in wanted:
                continue
            if not member.isreg():
                raise ValueError(f"{member.name} in {archive} is not a file (a link or a device)")
            content = tar.extractfile(member)
            assert content is not None  # a regular file's
            with content, (into / name).open("wb") as target:
                shutil.copyfileobj(content, target)


def _archive_in(folder: Path) -> Path:
    archives = sorted(p for p in folder.glob("*.tar.gz") if p.is_file())
    if len(archives) == 1:
        return archives[0]
    named = folder / "model.tar.gz"
    if not archives or named.is_file():
        return named
    names = ", ".join(p.name for p in archives)
    raise FileNotFoundError(f"several archives and no model.tar.gz in {folder}: {names}")


def evaluate_pair(
    candidate_dir: Path, production_dir: Path, gate_dir: Path, threshold: float
) -> dict[str, Any]:
    """Both reports on the same gate images, plus what the gate set was."""
    from scones.model.artifact import ModelArtifactError, OnnxClassifier
    from scones.model.evaluate import check_threshold, evaluate_artifact
    from scones.model.folders import class_root, fingerprint, load_images

    threshold = check_threshold(threshold)
    candidate = _named(OnnxClassifier, candidate_dir, "candidate")
    production = _named(OnnxClassifier, production_dir, "production")
    if candidate.labels != production.labels:
        raise ValueError(
            f"candidate labels {candidate.labels} differ from production {production.labels}"
        )
    data = load_images(gate_dir, candidate.labels, candidate.input_size)
    gate_set = {
        "method": "every image of the fixed gate set",
        "images": len(data),
        "per_class": data.class_counts(),
        "fingerprint": fingerprint(data.paths, class_root(gate_dir, candidate.labels)),
    }
    reports = {"threshold": threshold, "gate_set": gate_set}
    for role, model in (("candidate", candidate), ("production", production)):
        try:
            reports[role], _ = evaluate_artifact(model, data, threshold, gate_set)
        except ModelArtifactError as exc:
            # A graph that fails on the gate images, or answers one with no probabilities.
            raise ModelUnusable(f"the {role} model cannot be evaluated: {exc}") from exc
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result, drift_baseline = _evaluate_models(args)
    except Exception as exc:
        if args.exit_message is not None:
            write_exit_message(args.exit_message, f"{type(exc).__name__}: {exc}")
        raise
    args.out.mkdir(parents=True, exist_ok=True)
    if drift_baseline is None:
        # A promotion then leaves the previous baseline in place and says so.
        print(
            f"no {CANDIDATE_BASELINE_FILE}: {result['candidate_baseline']['problem']}",
            flush=True,
        )
    else:
        (args.out / CANDIDATE_BASELINE_FILE).write_bytes(drift_baseline)
    (args.out / EVALUATION_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for role in ("candidate", "production"):
        (args.out / f"{role}-evaluation.json").write_text(
            json.dumps(result[role], indent=2) + "\n", encoding="utf-8"
        )
    print(
        f"gate set {result['gate_set']['images']} images: candidate accuracy "
        f"{result['candidate']['accuracy']:.4f}, production {result['production']['accuracy']:.4f}",
        flush=True,
    )
    return 0


def _evaluate_models(args: argparse.Namespace) -> tuple[dict[str, Any], bytes | None]:
    """The gate's report, and the candidate's own drift baseline when it has a usable one
    (the report's ``candidate_baseline`` says which, and why not)."""
    with tempfile.TemporaryDirectory(prefix="scones-gate-") as tmp:
        candidate = _named(unpack_model, args.candidate, "candidate", Path(tmp) / "candidate")
        production = _named(unpack_model, args.production, "production", Path(tmp) / "production")
        result = evaluate_pair(candidate, production, args.gate, args.threshold)
        baseline, problem = candidate_baseline(candidate)
        result["candidate_baseline"] = {
            "file": None if baseline is None else CANDIDATE_BASELINE_FILE,
            "problem": problem,
        }
        return result, baseline


def candidate_baseline(candidate_dir: Path) -> tuple[bytes | None, str | None]:
    """The candidate's ``baseline.json`` when a promotion may make it the monitor's drift
    baseline, else ``None`` and why not. Copied unjudged, a file the monitor cannot use
    would stop drift monitoring without a failure, and another model's would compare the
    traffic with that model's mix; either way the gate's decision stands."""
    from scones.model.artifact import ModelManifest

    path = candidate_dir / BASELINE_FILE
    if not path.is_file():
        return None, f"the candidate's archive holds no {BASELINE_FILE}"
    body = path.read_bytes()
    manifest = ModelManifest.load(candidate_dir)  # evaluate_pair has loaded it already
    try:
        model_baseline(body, manifest.labels, manifest.version)
    except BaselineError as exc:
        return None, f"the candidate's {BASELINE_FILE} cannot be its drift baseline: {exc}"
    return body, None


class ModelUnusable(ValueError):
    """A model the gate's evaluation cannot load (not this project's ONNX artifact)."""


def _named(load: Callable[..., T], source: Path, role: str, *rest: Path) -> T:
    """``load(source, *rest)``; an error says which model it is about."""
    try:
        return load(source, *rest)
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise ModelUnusable(f"the {role} model cannot be loaded: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())

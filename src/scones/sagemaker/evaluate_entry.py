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
``/opt/ml/processing/output``. ``scones retrain`` calls :func:`main` with the same
arguments on local folders.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GATE_FILE = "gate-evaluation.json"
PROCESSING_ROOT = Path("/opt/ml/processing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scones_evaluate.py", description=__doc__)
    parser.add_argument("--candidate", type=Path, default=PROCESSING_ROOT / "input/candidate")
    parser.add_argument("--production", type=Path, default=PROCESSING_ROOT / "input/production")
    parser.add_argument("--gate", type=Path, default=PROCESSING_ROOT / "input/gate")
    parser.add_argument("--out", type=Path, default=PROCESSING_ROOT / "output")
    parser.add_argument("--threshold", type=float, required=True)
    return parser


def unpack_model(source: Path, into: Path) -> Path:
    """A model folder from ``source``: a folder holding ``model.tar.gz``, the archive
    itself, or an already unpacked artifact (``model.json`` beside ``model.onnx``)."""
    archive = source / "model.tar.gz" if source.is_dir() else source
    if source.is_dir() and (source / "model.json").is_file():
        return source
    if not archive.is_file():
        raise FileNotFoundError(f"no model.tar.gz or model.json in {source}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")
    return into


def evaluate_pair(
    candidate_dir: Path, production_dir: Path, gate_dir: Path, threshold: float
) -> dict[str, Any]:
    """Both reports on the same gate images, plus what the gate set was."""
    from scones.model.artifact import OnnxClassifier
    from scones.model.evaluate import check_threshold, evaluate_artifact
    from scones.model.folders import class_root, fingerprint, load_images

    threshold = check_threshold(threshold)
    candidate = OnnxClassifier(candidate_dir)
    production = OnnxClassifier(production_dir)
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
    candidate_report, _ = evaluate_artifact(candidate, data, threshold, gate_set)
    production_report, _ = evaluate_artifact(production, data, threshold, gate_set)
    return {
        "threshold": threshold,
        "gate_set": gate_set,
        "candidate": candidate_report,
        "production": production_report,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scones-gate-") as tmp:
        candidate = unpack_model(args.candidate, Path(tmp) / "candidate")
        production = unpack_model(args.production, Path(tmp) / "production")
        result = evaluate_pair(candidate, production, args.gate, args.threshold)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / GATE_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
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


if __name__ == "__main__":
    sys.exit(main())

"""Write the model artifact: ``model.onnx`` plus ``model.json``, as ``artifact.py`` defines.

The export is checked before it is accepted: ONNX Runtime must reproduce the
torch probabilities on real images and on a batch size the tracer never saw.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from scones.model.artifact import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelManifest,
    OnnxClassifier,
    sha256_file,
)
from scones.model.quantize import (
    FP16_TOLERANCE,
    PROBABILITY_TOLERANCE,
    QUANTISED_OPS,
    convert_fp16,
    quantize_int8,
)
from scones.paths import MANIFEST_NAME, ONNX_NAME

OPSET = 17
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not behave like the torch model it came from."""


def export_onnx(model: torch.nn.Module, path: Path, input_size: tuple[int, int]) -> None:
    """Trace ``model`` (RGB [0, 1] in, probabilities out) into one self-contained ONNX file.

    The TorchScript-based exporter is used on purpose: for this plain CNN it is
    fast, writes no external data and gives byte-identical files for identical
    weights, so a retrained model's sha256 shows whether anything changed.
    """
    model.eval()
    example = torch.rand(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        # The backbone's SAME padding is computed from the feature-map size, which the
        # graph fixes (every image is resized to the recipe's size first), so the
        # tracer is right to record it as a constant.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # A Slice with steps is left unfolded: the graph is the same, a node larger.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def write_manifest(directory: Path, manifest: ModelManifest) -> Path:
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def verify_against_torch(
    directory: Path, model: torch.nn.Module, pixels: np.ndarray, tolerance: float = TOLERANCE
) -> float:
    """Largest |onnxruntime - torch| on ``pixels`` and an odd batch size; raises past tolerance."""
    classifier = OnnxClassifier(directory)
    batches = [pixels, pixels[: max(1, min(len(pixels), 3))]]
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            expected = model(torch.from_numpy(batch)).numpy()
            actual = classifier.predict_tensor(batch)
            worst = max(worst, float(np.abs(actual - expected).max()))
            if not np.allclose(actual.sum(axis=1), 1.0, atol=1e-5):
                raise ExportError("exported probabilities do not sum to 1")
    if worst > tolerance:
        raise ExportError(f"onnxruntime differs from torch by {worst:.2e} (> {tolerance:.0e})")
    return worst


def save_artifact(
    directory: Path,
    model: torch.nn.Module,
    *,
    name: str,
    labels: tuple[str, ...],
    input_size: tuple[int, int],
    extra: dict[str, Any],
    check_pixels: np.ndarray,
    int8_calibration: np.ndarray | None = None,
    fp16: bool = False,
) -> ModelManifest:
    """Export, hash, write ``model.json`` and verify; returns the manifest written.

    With ``int8_calibration`` (RGB [0, 1] training images) the graph is quantised to
    int8 with those images as the calibration set; with ``fp16`` its weights and
    activations become float16. Either is checked against torch with its own tolerance
    instead of the float one.
    """
    if fp16 and int8_calibration is not None:
        raise ValueError("choose int8 or fp16, not both")
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / ONNX_NAME
    tolerance = TOLERANCE
    if int8_calibration is None and not fp16:
        export_onnx(model, onnx_path, input_size)
    else:
        float_path = directory / "float.onnx"
        export_onnx(model, float_path, input_size)
        try:
            if fp16:
                convert_fp16(float_path, onnx_path)
            else:
                assert int8_calibration is not None
                quantize_int8(float_path, onnx_path, int8_calibration)
        finally:
            float_path.unlink(missing_ok=True)
        tolerance = FP16_TOLERANCE if fp16 else PROBABILITY_TOLERANCE
    digest = sha256_file(onnx_path)
    manifest = ModelManifest(
        name=name,
        version=digest[:12],
        labels=labels,
        input_size=input_size,
        onnx_sha256=digest,
        extra=dict(extra),
    )
    write_manifest(directory, manifest)
    worst = verify_against_torch(directory, model, check_pixels, tolerance)
    manifest.extra["export_check"] = {
        "images": len(check_pixels),
        "max_abs_diff_vs_torch": float(f"{worst:.3g}"),
        "tolerance": tolerance,
        "opset": OPSET,
    }
    if int8_calibration is not None:
        manifest.extra["quantization"] = {
            "method": "onnxruntime static quantisation: QDQ, int8 weights per channel "
            "(symmetric), int8 activations (MinMax ranges)",
            "ops": list(QUANTISED_OPS),
            "calibration_images": len(int8_calibration),
            "calibration_source": "training images only",
        }
    if fp16:
        manifest.extra["quantization"] = {
            "method": "float16 weights and activations (onnxruntime's float16 converter); "
            "float32 input and output",
        }
    write_manifest(directory, manifest)
    return manifest

"""Smaller weights for an exported graph, with onnxruntime's own tools: int8 static
quantisation, or float16.

Convolution and linear weights become int8 per output channel; their input
activations are int8, with ranges measured on calibration images (MinMax over real
training images, never validation ones). The graph keeps its float32 input and
output, so the artifact contract does not change. The export checks the quantised
graph against torch: probabilities within ``PROBABILITY_TOLERANCE`` on the check
images.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scones.model.artifact import INPUT_NAME

PROBABILITY_TOLERANCE = 0.05
FP16_TOLERANCE = 0.01
"""float16 rounds every weight and activation to 11 significant bits: the probabilities
stay within this of torch's float32 ones (measured: about 1e-3)."""
QUANTISED_OPS = ("Conv", "Gemm", "MatMul")
"""The ops with weights: their weights and inputs go int8. Everything after them (the
calibration's scale and bias, the softmax) stays float, so the output still sums to 1."""
CALIBRATION_BATCH = 16


class _Reader:
    """Feeds calibration images to onnxruntime's calibrater, one batch at a time."""

    def __init__(self, pixels: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [
                np.ascontiguousarray(pixels[i : i + CALIBRATION_BATCH], dtype=np.float32)
                for i in range(0, len(pixels), CALIBRATION_BATCH)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # pragma: no cover - only used by entropy/percentile methods
        raise NotImplementedError


def quantize_int8(float_path: Path, out_path: Path, calibration_pixels: np.ndarray) -> None:
    """Write the int8 (QDQ, per-channel) version of ``float_path`` to ``out_path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_pixels) == 0:
        raise ValueError("int8 quantisation needs calibration images")

    class Reader(_Reader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(calibration_pixels),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            calibration_cache_path=str(Path(scratch) / "calibration.cache"),
        )


def convert_fp16(float_path: Path, out_path: Path) -> None:
    """Write ``float_path`` with float16 weights and activations to ``out_path``.

    The input and output stay float32 (``keep_io_types``), so the artifact contract does
    not change; onnxruntime inserts the casts.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True), out_path)

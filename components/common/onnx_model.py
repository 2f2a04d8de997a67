"""Run a Model's ONNX export with ONNX Runtime on the CPU, and check it against torch.

Torch-free: the serving bento runs models through this module alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.common.spec import ONNX_INPUT

# evaluate fails when the ONNX model's logits differ from torch's by more than this, relative to the
# logits' magnitude once it exceeds 1: float32 keeps about 7 significant digits, so logits of 300
# (a briefly trained network's BatchNorm can make them) legitimately differ by ~1e-4 in absolute terms.
PARITY_TOLERANCE = 1e-4


class OnnxParityError(RuntimeError):
    """The ONNX export does not compute what the torch network computes."""


class OnnxClassifier:
    """An ONNX Runtime session over ``model.onnx``: normalised float32 N x C x H x W in, logits out."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name or ONNX_INPUT

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def check_parity(expected: np.ndarray, actual: np.ndarray, where: str, tolerance: float = PARITY_TOLERANCE) -> float:
    """The largest difference between torch's and ONNX's logits, relative to ``max(1, largest |logit|)``;
    raise ``OnnxParityError`` when it exceeds ``tolerance``."""
    if expected.shape != actual.shape:
        raise OnnxParityError(f"ONNX model returns shape {actual.shape}, torch {expected.shape}, on {where}")
    if not expected.size:
        return 0.0
    expected64, actual64 = expected.astype(np.float64), actual.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(expected64))))
    difference = float(np.max(np.abs(expected64 - actual64))) / scale
    if not difference <= tolerance:  # also catches NaN
        raise OnnxParityError(
            f"the ONNX export's logits differ from torch's by up to {difference * scale:.3g} on {where} "
            f"(logits up to {scale:.3g}; allowed: {tolerance:g} x max(1, |logit|)); the exported model would "
            "not answer what the trained one answers"
        )
    return difference

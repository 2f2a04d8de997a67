"""Serve a Model with PyTorch, on the GPU: the backend of bentos built with ``accelerator="cuda"``.

Same API as ``components.common.onnx_model.OnnxClassifier`` (normalised float32
N x C x H x W in, logits out), over ``components.common.model.load_model``: the
network rebuilt from its weights (``small_cnn``, torchvision architectures) or
loaded from its ``torch.export`` program (a ``model_factory``'s or a custom
script's network). torch is imported when the backend is made, never by importing
this module, so that the CPU (ONNX Runtime) service does not need it.

The device is CUDA; when CUDA is not available the backend refuses to start
rather than serve slowly on the CPU. ``KFP_TORCH_LIFECYCLE_SERVING_DEVICE``
overrides the device (``cpu``, ``cuda`` or ``cuda:<index>``), e.g. ``cpu`` to
try the torch path on a machine without a GPU.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

DEVICE_ENV = "KFP_TORCH_LIFECYCLE_SERVING_DEVICE"
DEFAULT_DEVICE = "cuda"
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")


class ServingDeviceError(RuntimeError):
    """The torch backend cannot run on the device asked for; the message says why and what to do."""


def serving_device(requested: str | None = None) -> str:
    """The device to run on: ``requested``, else ``KFP_TORCH_LIFECYCLE_SERVING_DEVICE``, else ``cuda``; checked."""
    import torch

    device = requested or os.environ.get(DEVICE_ENV) or DEFAULT_DEVICE
    if not DEVICE_PATTERN.match(device):
        raise ServingDeviceError(f"serving device {device!r} ({DEVICE_ENV}) is not one of cpu, cuda, cuda:<index>")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ServingDeviceError(
                f"CUDA was asked for (device {device!r}: the bento was built with accelerator 'cuda', which serves "
                f"with torch on the GPU) but CUDA is not available to torch {torch.__version__} here (no GPU, or no "
                f"driver); run the image on a GPU node, build the bento with accelerator 'cpu' (ONNX Runtime), or set "
                f"{DEVICE_ENV}=cpu to run torch on the CPU"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ServingDeviceError(
                f"serving device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s) here"
            )
    return device


class TorchClassifier:
    """A Model directory's network in torch, in eval mode: normalised float32 N x C x H x W in, logits out."""

    def __init__(self, model_dir: str | Path, device: str | None = None, threads: int | None = None):
        import torch

        from components.common.model import load_model
        from components.common.resources import usable_cpus

        self.device = torch.device(serving_device(device))
        torch.set_num_threads(threads or usable_cpus())
        self.model, self.spec = load_model(model_dir, self.device)
        self.model.eval()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            output = self.model(inputs.to(self.device, non_blocking=False))
            return output.float().cpu().numpy()

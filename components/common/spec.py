"""``spec.json``: what a ``Model`` artifact is, readable without torch.

A model directory holds ``spec.json`` and, beside it:
- ``weights.pt``: the ``state_dict``, rebuilt into the network by ``components.common.model``;
- ``model.onnx``: the same network exported with a dynamic batch dimension, what
  serving runs (ONNX Runtime, neither torch nor torchvision);
- ``program.pt2``: for a network the library cannot rebuild (a ``model_factory``'s, a
  custom script's), the ``torch.export`` program, so it runs without that code.

The spec records everything needed to feed the network correctly (architecture,
classes in output order, preprocessing with its normalisation, the split rule
that chose the test files) and where the model came from (library and torch
versions, dataset commit and md5, training parameters and history).

``input_range`` (format 3) records the pixel values the network was trained on,
measured over the training images during the decode pass::

    {"scale": [0, 255],            # what the network reads: every image decodes to uint8
     "min": 0, "max": 255,         # the smallest and largest pixel over the training images
     "typical_max": 239,           # the 1st percentile of each training image's largest pixel
     "typical_max_percentile": 1,
     "images": 1257}               # training images measured

Serving uses it to refuse JSON arrays on another scale (0..1, scikit-learn's 0..16
digits; see ``serving.validation.ScaleCheck``). ``{}`` means not recorded.

Formats 1 and 2 are read too, and upgraded in memory: format 1 records neither
preprocessing nor a split rule (its images have one fixed size and its test split
comes from ``labels.csv``); format 2 records no ``input_range``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
ONNX_FILE = "model.onnx"
PROGRAM_FILE = "program.pt2"
SPEC_FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
FACTORY_PREFIX = "factory:"
# The Dataset artifact's metadata (dvc_pull's) that a training step records in spec.json's ``dataset``:
# where the data came from, and how much of it there was (the report compares them with the baseline's).
DATASET_LINEAGE_KEYS = ("repo_url", "commit", "md5", "file_count", "total_bytes")
# The ONNX graph's input and output names, and the batch dimension's name.
ONNX_INPUT, ONNX_OUTPUT, ONNX_BATCH = "images", "logits", "batch"
MODEL_FORMAT = "kfp-torch-lifecycle"  # a Model artifact's ``format`` metadata: a directory this module describes


class ModelFormatError(ValueError):
    """A directory that is not a model this library can read; the message says what is missing."""


@dataclass
class ModelSpec:
    """What ``spec.json`` holds."""

    architecture: str  # "small_cnn", a torchvision name, or "factory:package.module:function"
    classes: list[str]
    input_shape: list[int]  # C, H, W: what the network takes after preprocessing
    normalization: dict[str, list[float]]  # per-channel "mean" and "std" on the 0..1 scale
    preprocessing: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)  # the rule that chose train, val and test files
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # "weights", "onnx", "program" -> file name
    dataset: dict[str, Any] = field(default_factory=dict)  # DATASET_LINEAGE_KEYS, where known
    training: dict[str, Any] = field(default_factory=dict)  # parameters and history
    versions: dict[str, str] = field(default_factory=dict)  # library, torch, torchvision
    # The training images' pixel values (see the module docstring); {} when not measured (format 1
    # and 2, or a custom script's model).
    input_range: dict[str, Any] = field(default_factory=dict)
    format_version: int = SPEC_FORMAT_VERSION

    @property
    def channels(self) -> int:
        return int(self.input_shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.input_shape[1]), int(self.input_shape[2])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def load_spec(directory: str | Path) -> ModelSpec:
    """Read ``spec.json`` from a model directory; formats 1 and 2 are upgraded in memory."""
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise ModelFormatError(
            f"{path} not found: {directory} is not a model in this library's format "
            f"(spec.json, {WEIGHTS_FILE}, {ONNX_FILE}); a custom training script writes it with "
            "components.train.contract.save_model"
        )
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelFormatError(f"{path} is not valid JSON: {error}") from None
    version = payload.get("format_version")
    if version not in READABLE_FORMATS:
        raise ModelFormatError(
            f"{path} has format_version {version!r}; this library reads {', '.join(map(str, READABLE_FORMATS))}"
        )
    if version == 1:
        payload.setdefault("files", {"weights": WEIGHTS_FILE})
        payload.setdefault("split", {"method": "given", "given": ["train", "test"]})
    if version in (1, 2):
        payload["format_version"] = SPEC_FORMAT_VERSION  # input_range stays {}: not measured
    known = set(ModelSpec.__dataclass_fields__)
    unknown = sorted(set(payload) - known)
    if unknown:
        raise ModelFormatError(f"{path} has unknown field(s) {', '.join(unknown)}")
    try:
        return ModelSpec(**payload)
    except TypeError as error:
        raise ModelFormatError(f"{path} lacks a required field: {error}") from None


def write_spec(directory: str | Path, spec: ModelSpec) -> None:
    (Path(directory) / SPEC_FILE).write_text(spec.to_json())


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    """What every training step records about the model it wrote in its ``Model`` artifact's metadata (the
    Kubeflow UI shows it): the format, the network and its classes and input, the dataset's commit."""
    return {
        "format": MODEL_FORMAT,
        "architecture": spec.architecture,
        "classes": spec.classes,
        "input_shape": spec.input_shape,
        "dataset_commit": spec.dataset.get("commit", ""),
    }

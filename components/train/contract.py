"""The contract between ``pytorchjob_train`` and your own training script.

Run your own image and command on every replica (``pytorchjob_train(command=[...])``,
or ``launcher="local"`` for ``torchrun`` on one machine). The step keeps the
lifecycle: honest status, deletion on every exit, re-attach on retry, logs. Your
script gets:

- the distributed environment as ``torchrun`` sets it: ``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``;
- ``KFP_TORCH_DATASET_DIR``: the dataset, as a local directory (``--dataset-dir`` too);
- ``KFP_TORCH_OUTPUT_DIR``: where to write the model files and ``metrics.json``
  (``--output-dir`` too); what rank 0's node holds there when every process exited 0
  is published as the step's ``Model``, ``metrics.json`` as its ``Metrics``;
- ``KFP_TORCH_HYPERPARAMETERS``: the hyperparameters as a JSON object, and each one
  as ``--<name> <value>`` (use ``argparse``'s ``parse_known_args`` to take only some);
- ``KFP_TORCH_DATASET_INFO``: the dataset's lineage (commit, md5), JSON.

A script that wants the rest of the pipeline (evaluate, build_bento, serving) calls
``save_model`` once on rank 0: it writes the library's format (``weights.pt``,
``spec.json``, ``model.onnx`` and the ``torch.export`` program, so nothing of the
script's code is needed later). A script that does not is still trained and
published; the step then warns that the later steps need that format.

See ``components/pytorchjob_train/examples/custom_train.py``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASET_DIR_ENV = "KFP_TORCH_DATASET_DIR"
OUTPUT_DIR_ENV = "KFP_TORCH_OUTPUT_DIR"
HYPERPARAMETERS_ENV = "KFP_TORCH_HYPERPARAMETERS"
DATASET_INFO_ENV = "KFP_TORCH_DATASET_INFO"
METRICS_FILE = "metrics.json"
CUSTOM_ARCHITECTURE = "custom"
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class ContractError(ValueError):
    """The script's environment or outputs do not follow the contract; the message says how."""


@dataclass(frozen=True)
class ScriptEnvironment:
    dataset_dir: Path
    output_dir: Path
    hyperparameters: dict[str, Any]
    dataset_info: dict[str, Any]
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def script_environment(env: dict[str, str] | None = None) -> ScriptEnvironment:
    """What the step gave this process; fails clearly when not started by ``pytorchjob_train``."""
    env = dict(os.environ if env is None else env)
    missing = [name for name in (DATASET_DIR_ENV, OUTPUT_DIR_ENV) if not env.get(name)]
    if missing:
        raise ContractError(
            f"{', '.join(missing)} not set: this script follows the pytorchjob_train contract and is started by "
            "the step (command=[...]), which sets the dataset and output directories"
        )
    return ScriptEnvironment(
        dataset_dir=Path(env[DATASET_DIR_ENV]),
        output_dir=Path(env[OUTPUT_DIR_ENV]),
        hyperparameters=json.loads(env.get(HYPERPARAMETERS_ENV) or "{}"),
        dataset_info=json.loads(env.get(DATASET_INFO_ENV) or "{}"),
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
    )


def save_model(
    model,
    output_dir: str | Path,
    classes: list[str],
    image_size: int | tuple[int, int],
    channels: int = 3,
    normalization: dict[str, list[float]] | None = None,
    architecture: str = CUSTOM_ARCHITECTURE,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    dataset_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` in the library's format into ``output_dir``, so evaluate, build_bento and serving take it.

    Args:
        model: the trained ``nn.Module`` (unwrapped from DDP), taking normalised float
            N x ``channels`` x H x W and returning logits in the order of ``classes``.
        classes: class names in output order; evaluate requires the dataset's order
            (``components.common.dataset.index_dataset(dir).classes``: sorted folder names or
            ``classes.txt``).
        image_size: what the network takes; evaluation and serving resize each image to cover
            it and crop the centre (``components.common.images.preprocess``).
        channels: 1 or 3.
        normalization: per-channel ``mean`` and ``std`` on the 0..1 scale the model was trained
            with; default ImageNet's (torchvision's pretrained weights).
        test_fraction, validation_fraction: the split rule evaluate applies to files the dataset
            puts in no split (see ``components.common.dataset``); the library's defaults.
        dataset_info: lineage for ``spec.json``; default ``KFP_TORCH_DATASET_INFO``.
    """
    import torch

    from components import __version__
    from components.common.loader import Preprocessing
    from components.common.model import save_model as write_model
    from components.common.spec import ModelSpec

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if channels not in (1, 3) or len(size) != 2 or min(size) < 1:
        raise ContractError(f"channels must be 1 or 3 and image_size positive, got {channels} and {image_size}")
    normalization = normalization or IMAGENET_NORMALIZATION
    if dataset_info is None:
        dataset_info = json.loads(os.environ.get(DATASET_INFO_ENV) or "{}")
    spec = ModelSpec(
        architecture=architecture,
        classes=list(classes),
        input_shape=[channels, *size],
        normalization={key: [float(v) for v in normalization[key]] for key in ("mean", "std")},
        preprocessing=Preprocessing(channels, size).record("the training script"),
        split={"method": "library rule", "test_fraction": test_fraction, "validation_fraction": validation_fraction},
        dataset=dict(dataset_info),
        training={"script": True},
        versions={"library": __version__, "torch": torch.__version__},
    )
    # Traced by the export and checked against the ONNX model; a network the library cannot rebuild
    # is saved with its torch.export program too, which evaluate runs instead of the script's code.
    example = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(0))
    write_model(output_dir, model, spec, example)
    return Path(output_dir)


def write_metrics(output_dir: str | Path, metrics: dict[str, float]) -> Path:
    """Write ``metrics.json``: a flat mapping of metric names to finite numbers."""
    check_metrics(metrics, "metrics")
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def check_metrics(metrics: object, where: str) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise ContractError(f"{where} must be a JSON object of metric names to numbers, got {type(metrics).__name__}")
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or len(name) > 128:
            raise ContractError(f"{where}: metric name {name!r} must be a non-empty string of at most 128 characters")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ContractError(f"{where}: metric {name!r} must be a finite number, got {value!r}")
    return metrics


def read_metrics(output_dir: str | Path) -> dict[str, float] | None:
    """``metrics.json`` from a script's output, checked; None when the script wrote none."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ContractError(f"{path} is not valid JSON: {error}") from None
    return check_metrics(payload, str(path))

"""Every pipeline argument a later step would fail on, checked at once; and where the train step runs.

Plain Python, no KFP. ``check_values`` is what ``kfp-torch run`` and ``make run`` call before
submitting, and what the ``check_arguments`` step runs first in every pipeline, so a run started
from the Kubeflow UI or a notebook fails in seconds on ``epochs=0`` instead of after the data pull.

``train_placement`` makes the training pipeline's GPU defaults fit a CPU-only cluster: with
``gpus=0`` the GPU node selector and toleration the pipeline gives by default are dropped (the pod
would wait forever for a GPU node), while ones the user chose are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.common.distributed_step import check_command, script_hyperparameters
from components.common.kube.values import is_label_value
from components.containerize.buildah import validate_image
from components.deploy.inputs import check_deploy_place
from components.distributed_train.dispatch import LAUNCHERS
from components.evaluate.gate import validate_threshold
from components.find_baseline.choices import baseline_kind
from components.pytorchjob_train.manifest import PyTorchJobConfig
from components.train.config import TrainConfig

GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # the label NVIDIA's GPU feature discovery sets
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
JOB_SETTINGS = (
    "num_workers",
    "nproc_per_node",
    "gpus",
    "accelerator_type",
    "cpu",
    "memory",
    "node_selector",
    "tolerations",
    "shm_size",
)
TRAIN_STEP_PLACEMENT = ("gpus", "accelerator_type", "node_selector", "tolerations")


def check_values(values: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first bad value among ``values`` (pipeline argument names) and what is valid."""
    config = TrainConfig.from_parameters(dict(values))
    config.validate()
    if values.get("command"):
        check_command(values["command"], script_hyperparameters(config, values.get("script_hyperparameters") or {}))
    if "accuracy_threshold" in values:
        validate_threshold(values["accuracy_threshold"])
    if "baseline" in values:
        baseline_kind(values["baseline"])
    if values.get("build_image", True) and values.get("image_repository"):
        validate_image(values["image_repository"] + ":tag", "image_repository")
    if values.get("build_image", True) and values.get("image_repository") and values.get("serving_base_image"):
        validate_image(values["serving_base_image"], "serving_base_image")
    if "deploy_target" in values:
        check_deploy_place(values)
    if "launcher" in values:  # the distributed pipeline: its job's pods, whichever kind runs them
        if values["launcher"] not in LAUNCHERS:
            raise ValueError(
                f"launcher must be one of {', '.join(LAUNCHERS)} (kubeflow: pytorchjob's earlier name), "
                f"got {values['launcher']!r}"
            )
        if not is_label_value(values.get("queue_name", "")):
            raise ValueError(f"queue_name must be a Kueue LocalQueue's name, got {values['queue_name']!r}")
        queue_timeout = values.get("queue_timeout_seconds", 1)
        if not isinstance(queue_timeout, int) or isinstance(queue_timeout, bool) or queue_timeout <= 0:
            raise ValueError(f"queue_timeout_seconds must be > 0 seconds, got {queue_timeout!r}")
        settings = {name: values[name] for name in JOB_SETTINGS if name in values}
    else:  # the single-node train step: its placement takes the same checks as a PyTorchJob replica's
        settings = {name: values[name] for name in TRAIN_STEP_PLACEMENT if name in values}
    PyTorchJobConfig(image=values.get("image") or "image", command=["python"], **settings).validate()


def train_placement(gpus: int, node_selector: dict, tolerations: list) -> tuple[dict, list]:
    """The train step's node selector and tolerations: the GPU defaults dropped when no GPU is asked for."""
    if gpus == 0:
        node_selector = {} if node_selector == GPU_NODE_SELECTOR else node_selector
        tolerations = [] if tolerations == GPU_TOLERATIONS else tolerations
    return dict(node_selector), list(tolerations)

"""KFP component: check the pipeline's arguments first, and place the train step on a CPU-only cluster."""

from typing import NamedTuple

from kfp import dsl

from components.check_arguments.parameters import DISTRIBUTED_PARAMETERS, PIPELINE_PARAMETERS
from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described(PIPELINE_PARAMETERS, DISTRIBUTED_PARAMETERS)
def check_arguments(
    gpus: int,
    accelerator_type: str,
    node_selector: dict,
    tolerations: list,
    epochs: int = 12,
    batch_size: int = 64,
    learning_rate: float = 0.003,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    architecture: str = "small_cnn",
    model_factory: str = "",
    image_size: int = -1,
    channels: int = -1,
    augment: bool = True,
    normalization: str = "auto",
    optimizer: str = "adamw",
    momentum: float = 0.9,
    weight_decay: float = 0.01,
    lr_schedule: str = "constant",
    warmup_epochs: float = 0.0,
    label_smoothing: float = 0.0,
    early_stopping_patience: int = 0,
    gradient_accumulation_steps: int = 1,
    fine_tune: str = "full",
    workers: int = -1,
    memory_budget: str = "",
    accuracy_threshold: float = 0.95,
    image_repository: str = "",
    serving_base_image: str = "docker.io/library/python:3.11-slim",
    build_image: bool = True,
    baseline: str = "none",
    push_image: bool = True,
    deploy_target: str = "kserve",
    deploy_namespace: str = "",
    distributed: bool = False,
    launcher: str = "auto",
    num_workers: int = 2,
    nproc_per_node: int = 1,
    cpu: str = "4",
    memory: str = "16Gi",
    shm_size: str = "2Gi",
    command: list = [],
    script_hyperparameters: dict = {},
    queue_name: str = "",
    queue_timeout_seconds: int = 21600,
) -> NamedTuple("Placement", node_selector=dict, tolerations=list):
    """Checks every argument a later step would fail on, before any data is pulled.

    Each input is the pipeline's parameter of the same name, checked as the step that takes it would check it.

    Args:
        gpus: GPUs for training: the training pipeline's train step, or each of the distributed pipeline's pods.
        accelerator_type: The extended resource the GPUs are counted in, e.g. nvidia.com/gpu or amd.com/gpu.
        node_selector: Node labels training must run on.
        tolerations: Tolerations of the training pods, as Kubernetes writes them.
        distributed: True in the distributed pipeline: its job's settings (launcher, num_workers, nproc_per_node,
            cpu, memory, shm_size, command, script_hyperparameters, queue_name, queue_timeout_seconds) are
            checked too. False (the training pipeline, which has no such job): they are not checked.

    Returns:
        node_selector: The train step's node selector: with gpus 0 the GPU node selector the training pipeline
            gives by default is dropped, so a CPU-only cluster can schedule the step; one the user chose is kept.
        tolerations: The train step's tolerations: with gpus 0 the GPU toleration the training pipeline gives by
            default is dropped; ones the user chose are kept.
    """
    from collections import namedtuple

    from components.check_arguments.checks import check_values, train_placement

    values = dict(locals())
    if not values.pop("distributed"):
        for name in ("launcher", "num_workers", "nproc_per_node", "cpu", "memory", "shm_size", "queue_name",
                     "queue_timeout_seconds"):  # fmt: skip
            values.pop(name)
    check_values(values)
    placement = namedtuple("Placement", ["node_selector", "tolerations"])
    return placement(*train_placement(gpus, node_selector, tolerations))

"""KFP component: check the pipeline's arguments first, and place the train step on a CPU-only cluster."""

from typing import NamedTuple

from kfp import dsl

from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def check_arguments(
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    architecture: str,
    model_factory: str,
    image_size: int,
    channels: int,
    augment: bool,
    normalization: str,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    lr_schedule: str,
    warmup_epochs: float,
    label_smoothing: float,
    early_stopping_patience: int,
    gradient_accumulation_steps: int,
    fine_tune: str,
    workers: int,
    memory_budget: str,
    accuracy_threshold: float,
    gpus: int,
    accelerator_type: str,
    node_selector: dict,
    tolerations: list,
    image_repository: str = "",
    serving_base_image: str = "",
    build_image: bool = True,
    baseline: str = "none",
    push_image: bool = True,
    deploy_target: str = "kserve",
    deploy_namespace: str = "",
    distributed: bool = False,
    launcher: str = "auto",
    num_workers: int = 1,
    nproc_per_node: int = 1,
    cpu: str = "1",
    memory: str = "1Gi",
    shm_size: str = "",
    command: list = [],
    script_hyperparameters: dict = {},
    queue_name: str = "",
    queue_timeout_seconds: int = 21600,
) -> NamedTuple("Placement", node_selector=dict, tolerations=list):
    """Checks every argument a later step would fail on, before any data is pulled.

    Args:
        epochs ... memory_budget: the training parameters (see ``train``).
        accuracy_threshold: the promotion gate's threshold, in [0, 1].
        gpus, accelerator_type, node_selector, tolerations: where training runs.
        image_repository, serving_base_image, build_image: the serving image (checked when one is built).
        baseline: what evaluate compares with: ``production``, ``none`` or a model's URI.
        push_image: whether the image is pushed (a cluster deployment pulls it).
        deploy_target, deploy_namespace: where a promoted model is deployed: a known target; a namespace only
            for the cluster targets, which need the image built and pushed.
        distributed: true in the distributed pipeline, whose job settings follow
            (launcher, num_workers, nproc_per_node, cpu, memory, shm_size, command,
            script_hyperparameters, queue_name, queue_timeout_seconds).
        launcher: The distributed pipeline's launcher: auto, trainjob, pytorchjob (kubeflow), or local.
        queue_name: The Kueue LocalQueue the distributed job is queued in (a label value); empty for none.
        queue_timeout_seconds: How long the distributed job may wait suspended in its queue; > 0.

    Returns:
        node_selector, tolerations: the train step's placement; with ``gpus=0`` the GPU node
        selector and toleration the pipeline gives by default are dropped, so a CPU-only cluster
        can schedule it; ones the user chose are kept.
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

"""KFP component: the distributed pipeline's training, as a TrainJob or a PyTorchJob (whichever the cluster serves)
or under torchrun locally. Its inputs are described where they are defined: the pods' in ``TrainJobConfig`` (and
its base ``ReplicaConfig``, which a PyTorchJob shares), the training's in ``TrainConfig``, the step's in
``components.common.distributed_step.STEP_INPUTS``."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.descriptions import described, field_descriptions
from components.common.distributed_step import STEP_INPUTS
from components.container_images import COMPONENTS_IMAGE
from components.train.config import TrainConfig
from components.trainjob_train.manifest import TrainJobConfig


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described(STEP_INPUTS, field_descriptions(TrainJobConfig), field_descriptions(TrainConfig))
def distributed_train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    job: Output[Artifact],
    run_id: str,
    task_name: str,
    task_id: str = "",
    launcher: str = "auto",
    trainer_release: str = "2.3",
    runtime: str = "torch-distributed",
    runtime_kind: str = "ClusterTrainingRuntime",
    queue_name: str = "",
    image: str = "",
    command: List[str] = [],
    script_hyperparameters: dict = {},
    pretrained_weights: str = "",
    num_workers: int = 2,
    nproc_per_node: int = 1,
    cpu: str = "4",
    memory: str = "16Gi",
    gpus: int = 0,
    accelerator_type: str = "nvidia.com/gpu",
    node_selector: Dict[str, str] = {},
    tolerations: List[dict] = [],
    shm_size: str = "2Gi",
    env: Dict[str, str] = {},
    secret_volumes: Dict[str, str] = {},
    optional_secret_volumes: Dict[str, str] = {},
    namespace: str = "",
    timeout_seconds: int = 86400,
    scheduling_timeout_seconds: int = 600,
    queue_timeout_seconds: int = 21600,
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
):
    """Trains with DistributedDataParallel on num_workers pods x nproc_per_node processes, as the cluster runs it.

    Args:
        launcher: "auto" (the kind the cluster's API discovery lists; TrainJob when it serves both), "trainjob"
            (Kubeflow Trainer v2), "pytorchjob" (the Training Operator v1; "kubeflow" is an alias) or "local"
            (torchrun on this machine, with num_workers x nproc_per_node processes: what kfp.local uses).
        num_workers: Training pods (a TrainJob's numNodes; a PyTorchJob's Master and Workers).
    """
    import logging

    from components.common.distributed_step import ArtifactLocation
    from components.common.step_outputs import publish_outputs
    from components.container_images import TRAINING_IMAGE
    from components.distributed_train.dispatch import run
    from components.train.config import TrainConfig

    parameters = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset_info = {key: dataset.metadata[key] for key in ("commit", "md5", "repo_url") if key in dataset.metadata}
    step = dict(run_id=run_id, task_name=task_name, task_id=task_id, dataset_info=dataset_info, namespace=namespace)
    step |= dict(timeout_seconds=timeout_seconds, scheduling_timeout_seconds=scheduling_timeout_seconds)
    step |= dict(queue_timeout_seconds=queue_timeout_seconds, command=command, hyperparameters=script_hyperparameters)
    step |= dict(pretrained_weights=pretrained_weights)
    result = run(
        launcher=launcher,
        dataset=ArtifactLocation(dataset.path, dataset.uri),
        model=ArtifactLocation(model.path, model.uri),
        job_output_path=job.path,
        train=TrainConfig.from_parameters(parameters),
        image=image or TRAINING_IMAGE,
        job=parameters,
        step=step,
    )
    publish_outputs(result, model, metrics, dataset_info, command, image or TRAINING_IMAGE)

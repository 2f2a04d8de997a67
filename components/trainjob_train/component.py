"""KFP component: distributed data-parallel training as a Kubeflow Trainer v2 TrainJob (or torchrun locally). Its inputs
are described where they are defined: the job's in ``TrainJobConfig``, the training's in ``TrainConfig``, the step's
in ``components.common.distributed_step.STEP_INPUTS``."""

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
def trainjob_train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    job: Output[Artifact],
    run_id: str,
    task_name: str,
    task_id: str = "",
    launcher: str = "trainjob",
    trainer_release: str = "2.3",
    runtime: str = "torch-distributed",
    runtime_kind: str = "ClusterTrainingRuntime",
    image: str = "",
    command: List[str] = [],
    script_hyperparameters: dict = {},
    pretrained_weights: str = "",
    num_nodes: int = 2,
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
    service_account: str = "",
    namespace: str = "",
    queue_name: str = "",
    active_deadline_seconds: int = 0,
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
    checkpoint_dir: str = "",
):
    """Trains with DistributedDataParallel across num_nodes pods x nproc_per_node processes, as a TrainJob.

    Args:
        launcher: "trainjob" (a Kubeflow Trainer v2 TrainJob) or "local" (torchrun on this machine with
            num_nodes x nproc_per_node processes: what kfp.local uses).
    """
    import logging

    from components.common.distributed_step import ArtifactLocation
    from components.common.step_outputs import publish_outputs
    from components.container_images import TRAINING_IMAGE
    from components.train.config import TrainConfig
    from components.trainjob_train.manifest import TrainJobConfig, training_command
    from components.trainjob_train.step import run_step

    parameters = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset_info = {key: dataset.metadata[key] for key in ("commit", "md5", "repo_url") if key in dataset.metadata}
    result = run_step(
        launcher=launcher,
        dataset=ArtifactLocation(dataset.path, dataset.uri),
        model=ArtifactLocation(model.path, model.uri),
        job_output_path=job.path,
        train=TrainConfig.from_parameters(parameters),
        job=TrainJobConfig.from_parameters(parameters, image=image or TRAINING_IMAGE, command=training_command()),
        run_id=run_id,
        task_name=task_name,
        task_id=task_id,
        dataset_info=dataset_info,
        namespace=namespace,
        checkpoint_dir=checkpoint_dir,
        timeout_seconds=timeout_seconds,
        scheduling_timeout_seconds=scheduling_timeout_seconds,
        queue_timeout_seconds=queue_timeout_seconds,
        command=command,
        hyperparameters=script_hyperparameters,
        pretrained_weights=pretrained_weights,
    )
    publish_outputs(result, model, metrics, dataset_info, command, image or TRAINING_IMAGE)

"""KFP component: the distributed pipeline's training, as a TrainJob or a PyTorchJob (whichever the cluster serves)
or under torchrun locally."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
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
        dataset: A dataset directory (dvc_pull's output); the pods read it by URI.
        model: The trained model, written by rank 0 straight to this artifact's URI; same format as train's.
        metrics: Per-epoch and final train/validation loss and accuracy, or a custom script's metrics.json.
        job: The job handle (launcher, kind, name, namespace, uid): which kind ran, written once it exists.
        run_id: Pass dsl.PIPELINE_JOB_ID_PLACEHOLDER: the job's name derives from it at run time.
        task_name: Pass dsl.PIPELINE_TASK_NAME_PLACEHOLDER: part of the job's name, stable across retries.
        task_id: Pass dsl.PIPELINE_TASK_ID_PLACEHOLDER: tells the iterations of a ParallelFor apart.
        launcher: "auto" (the kind the cluster's API discovery lists; TrainJob when it serves both), "trainjob"
            (Kubeflow Trainer v2), "pytorchjob" (the Training Operator v1; "kubeflow" is its earlier name) or
            "local" (torchrun on this machine, what kfp.local uses).
        trainer_release: The Kubeflow Trainer release the cluster runs, "2.3" or "2.1" (a cluster setting).
        runtime: The training runtime a TrainJob refers to (a cluster setting).
        runtime_kind: "ClusterTrainingRuntime" or "TrainingRuntime" (a cluster setting).
        queue_name: A Kueue LocalQueue to queue the job in (the kueue.x-k8s.io/queue-name label); empty for none.
        image: The pods' image; empty for this library's CUDA training image.
        command: Empty for the library's training; else your own command, run on every pod under torchrun.
        script_hyperparameters: Extra hyperparameters for a custom command.
        pretrained_weights: A checkpoint file or Model directory to start from, by a path or URI the pods can read.
        num_workers: Training pods (a TrainJob's numNodes; a PyTorchJob's Master and Workers).
        nproc_per_node: Processes per pod; at most gpus when GPUs are asked for.
        cpu: CPU request per pod (a Kubernetes quantity).
        memory: Memory request and limit per pod (a Kubernetes quantity).
        gpus: GPUs per pod, counted in accelerator_type.
        accelerator_type: The extended resource the GPUs are counted in, e.g. nvidia.com/gpu or amd.com/gpu.
        node_selector: Node labels the pods must run on.
        tolerations: Tolerations of the pods, as Kubernetes writes them.
        shm_size: Size of the /dev/shm emptyDir (medium Memory); "" for none.
        env: Environment variables of the training container (no credentials).
        secret_volumes: Secrets mounted into the pods as volumes (name -> mount path).
        optional_secret_volumes: Secrets mounted when they exist (the artifact store's credentials).
        namespace: Where the job runs; empty for this step's own namespace.
        timeout_seconds: Wall-clock limit of the step; on timeout the job is deleted and the step fails.
        scheduling_timeout_seconds: How long the pods may wait to start; then the step fails with their reasons.
        queue_timeout_seconds: How long the job may stay suspended in a Kueue queue at a stretch; then it fails.
        epochs: As for train.
        batch_size: Per process, as for train.
        learning_rate: As for train.
        seed: As for train.
        validation_fraction: As for train.
        test_fraction: As for train.
        architecture: As for train.
        model_factory: As for train.
        image_size: As for train.
        channels: As for train.
        augment: As for train.
        normalization: As for train.
        optimizer: As for train.
        momentum: As for train.
        weight_decay: As for train.
        lr_schedule: As for train.
        warmup_epochs: As for train.
        label_smoothing: As for train.
        early_stopping_patience: As for train.
        gradient_accumulation_steps: As for train.
        fine_tune: As for train.
        workers: As for train.
        memory_budget: As for train.
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
    replica = dict(cpu=cpu, memory=memory, gpus=gpus, accelerator_type=accelerator_type, node_selector=node_selector)
    replica |= dict(tolerations=tolerations, shm_size=shm_size, env=env, secret_volumes=secret_volumes)
    replica |= dict(optional_secret_volumes=optional_secret_volumes)
    trainjob = dict(trainer_release=trainer_release, runtime=runtime, runtime_kind=runtime_kind, queue_name=queue_name)
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
        nproc_per_node=nproc_per_node,
        num_workers=num_workers,
        replica=replica,
        trainjob=trainjob,
        step=step,
    )
    publish_outputs(result, model, metrics, dataset_info, command, image or TRAINING_IMAGE)

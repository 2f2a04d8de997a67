"""KFP component: distributed data-parallel training as a Kubeflow Trainer v2 TrainJob (or torchrun locally)."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
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
    """Trains with DistributedDataParallel across ``num_nodes`` pods x ``nproc_per_node`` processes, as a TrainJob.

    Args:
        dataset: A dataset directory (dvc_pull's output); the nodes read it by URI.
        model: The trained model, written by rank 0 straight to this artifact's URI; same format as train's.
        metrics: Per-epoch and final train/validation loss and accuracy, or a custom script's metrics.json.
        job: The job handle (launcher, kind, name, namespace, uid), written right after the TrainJob is created.
        run_id: Pass dsl.PIPELINE_JOB_ID_PLACEHOLDER: the TrainJob's name derives from it at run time.
        task_name: Pass dsl.PIPELINE_TASK_NAME_PLACEHOLDER: part of the TrainJob's name, stable across retries.
        task_id: Pass dsl.PIPELINE_TASK_ID_PLACEHOLDER: tells the iterations of a ParallelFor apart.
        launcher: "trainjob" (a Kubeflow Trainer v2 TrainJob) or "local" (torchrun on this machine with
            num_nodes x nproc_per_node processes: what kfp.local uses).
        trainer_release: The Kubeflow Trainer release the cluster runs, "2.3" or "2.1": it decides the field that
            carries placement and mounts (runtimePatches, podTemplateOverrides) and the deadline.
        runtime: The training runtime the TrainJob refers to; torch-distributed is the one Trainer installs.
        runtime_kind: "ClusterTrainingRuntime" (cluster-wide) or "TrainingRuntime" (in the TrainJob's namespace).
        image: The nodes' image; empty for this library's CUDA training image.
        command: Empty for the library's training; else your own command, run on every node under torchrun in
            image (which must hold this library); the contract is components.train.contract's.
        script_hyperparameters: Extra hyperparameters for a custom command (beside epochs, batch_size,
            learning_rate, seed and the split fractions).
        pretrained_weights: A checkpoint file or Model directory to start from, by a path or URI the nodes can read.
        num_nodes: Training pods (the TrainJob's numNodes).
        nproc_per_node: Processes per pod (numProcPerNode); at most gpus when GPUs are asked for.
        cpu: CPU request per pod (a Kubernetes quantity).
        memory: Memory request and limit per pod (a Kubernetes quantity).
        gpus: GPUs per pod, counted in accelerator_type (resourcesPerNode).
        accelerator_type: The extended resource the GPUs are counted in, e.g. nvidia.com/gpu or amd.com/gpu.
        node_selector: Node labels the pods must run on.
        tolerations: Tolerations of the pods, as Kubernetes writes them.
        shm_size: Size of the /dev/shm emptyDir (medium Memory) for DataLoader workers and NCCL; "" for none.
        env: Environment variables of the node container (no credentials; never PET_*, which Trainer sets).
        secret_volumes: Secrets mounted into the pods as volumes (name -> mount path), never passed as values.
        optional_secret_volumes: Secrets mounted when they exist (the artifact store's credentials, needed only for
            minio:// and s3:// URIs); a pod starts without them.
        service_account: The pods' ServiceAccount; empty for the namespace's default.
        namespace: Where the TrainJob runs; empty for this step's own namespace.
        queue_name: A Kueue LocalQueue to queue the TrainJob in (the kueue.x-k8s.io/queue-name label); empty for
            none.
        active_deadline_seconds: The backstop that stops the pods if this step is killed before its cleanup;
            0 sets timeout_seconds plus 10 minutes.
        timeout_seconds: Wall-clock limit of the step; on timeout the TrainJob is deleted and the step fails.
        scheduling_timeout_seconds: How long the pods may wait to start (unschedulable, image not pulled); then the
            step fails with the pods' own reasons and Events, and the TrainJob is deleted.
        queue_timeout_seconds: How long the TrainJob may stay suspended (waiting in a Kueue queue) at a stretch;
            then the step fails naming the queue, and the TrainJob is deleted.
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
        checkpoint_dir: A shared path (such as a PVC) where rank 0 keeps its checkpoint, to resume across retries.
    """
    import logging

    from components.common.distributed_step import ArtifactLocation
    from components.common.step_outputs import publish_outputs
    from components.container_images import TRAINING_IMAGE
    from components.train.config import TrainConfig
    from components.trainjob_train.step import default_job_config, run_step

    parameters = dict(locals())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset_info = {key: dataset.metadata[key] for key in ("commit", "md5", "repo_url") if key in dataset.metadata}
    result = run_step(
        launcher=launcher,
        dataset=ArtifactLocation(dataset.path, dataset.uri),
        model=ArtifactLocation(model.path, model.uri),
        job_output_path=job.path,
        train=TrainConfig.from_parameters(parameters),
        job=default_job_config(
            image or TRAINING_IMAGE,
            nproc_per_node,
            num_nodes=num_nodes,
            cpu=cpu,
            memory=memory,
            gpus=gpus,
            accelerator_type=accelerator_type,
            node_selector=node_selector,
            tolerations=tolerations,
            shm_size=shm_size,
            env=env,
            secret_volumes=secret_volumes,
            optional_secret_volumes=optional_secret_volumes,
            service_account=service_account,
            runtime=runtime,
            runtime_kind=runtime_kind,
            trainer_release=trainer_release,
            queue_name=queue_name,
            active_deadline_seconds=active_deadline_seconds,
        ),
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

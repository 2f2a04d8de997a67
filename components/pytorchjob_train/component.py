"""KFP component: distributed data-parallel training as a Kubeflow PyTorchJob (or torchrun locally)."""

from typing import Dict, List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def pytorchjob_train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    job: Output[Artifact],
    run_id: str,
    task_name: str,
    task_id: str = "",
    launcher: str = "kubeflow",
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
    service_account: str = "",
    namespace: str = "",
    restart_policy: str = "OnFailure",
    clean_pod_policy: str = "All",
    ttl_seconds_after_finished: int = 3600,
    active_deadline_seconds: int = 0,
    backoff_limit: int = 0,
    timeout_seconds: int = 86400,
    scheduling_timeout_seconds: int = 600,
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
    """Trains with DistributedDataParallel across ``num_workers`` pods x ``nproc_per_node`` processes.

    Args:
        dataset: a dataset directory (``dvc_pull``'s output); replicas read it by URI.
        model: the trained model, written by rank 0 straight to this artifact's URI
            (a ``gs://`` pipeline root or a shared path); same format as ``train``'s.
        metrics: per-epoch and final train/validation loss and accuracy, or a custom
            script's ``metrics.json``.
        job: the job handle (kind, name, namespace, uid), written right after creation.
        run_id, task_name, task_id: pass ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``,
            ``dsl.PIPELINE_TASK_NAME_PLACEHOLDER`` and ``dsl.PIPELINE_TASK_ID_PLACEHOLDER``; the
            job's name derives from them at run time, so recurring runs and the iterations of a
            ParallelFor never collide, and a retried step re-attaches.
        launcher: "pytorchjob" (a PyTorchJob; "kubeflow", its earlier name, too) or "local" (``torchrun`` on
            this machine, with num_workers x nproc_per_node processes: what ``kfp.local`` uses).
        image: the replicas' image; empty for this library's CUDA training image.
        command: empty for the library's training; else your own command, run on every
            replica under torchrun in ``image`` (which must hold this library: its
            ``script_runner`` fetches the dataset and publishes the output). The contract
            (environment, arguments, outputs) is ``components.train.contract``'s.
        script_hyperparameters: extra hyperparameters for a custom command (beside epochs,
            batch_size, learning_rate, seed and the split fractions).
        pretrained_weights: a checkpoint file or Model directory to start from, by path or URI
            the replicas can read (see ``train``).
        num_workers, nproc_per_node, cpu, memory, gpus, accelerator_type, node_selector, tolerations,
        shm_size, env, secret_volumes, service_account, restart_policy, clean_pod_policy,
        ttl_seconds_after_finished, active_deadline_seconds, backoff_limit: the PyTorchJob's
            spec per replica; secrets are mounted as volumes (name -> path), never passed as values.
        optional_secret_volumes: secrets mounted when they exist (the artifact store's credentials,
            needed only for minio:// and s3:// URIs); a pod starts without them.
            active_deadline_seconds 0 sets timeout_seconds plus 10 minutes: the operator stops the
            job even when this step was killed before it could.
        namespace: where the job runs; empty for this pod's own namespace.
        timeout_seconds: wall-clock limit; on timeout the job is deleted and the step fails.
        scheduling_timeout_seconds: how long the job's pods may wait to start (unschedulable, image
            not pulled); then the step fails with the pods' own reasons and the job is deleted.
        epochs ... memory_budget: as for ``train`` (``batch_size`` is per process);
        checkpoint_dir: a shared path such as a PVC.
    """
    import logging

    from components.common.step_outputs import publish_outputs
    from components.container_images import TRAINING_IMAGE
    from components.pytorchjob_train.step import ArtifactLocation, default_job_config, run_step
    from components.train.config import TrainConfig

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
            num_workers=num_workers,
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
            restart_policy=restart_policy,
            clean_pod_policy=clean_pod_policy,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
            active_deadline_seconds=active_deadline_seconds,
            backoff_limit=backoff_limit,
        ),
        run_id=run_id,
        task_name=task_name,
        task_id=task_id,
        dataset_info=dataset_info,
        namespace=namespace,
        checkpoint_dir=checkpoint_dir,
        timeout_seconds=timeout_seconds,
        scheduling_timeout_seconds=scheduling_timeout_seconds,
        command=command,
        hyperparameters=script_hyperparameters,
        pretrained_weights=pretrained_weights,
    )
    publish_outputs(result, model, metrics, dataset_info, command, image or TRAINING_IMAGE)

"""DVC pull → distributed training (a Kubeflow Trainer TrainJob or a PyTorchJob, whichever the cluster serves, or
torchrun locally) → evaluate against production → gate → register, package → report."""

from typing import Dict, List

from kfp import dsl

from components.check_arguments.parameters import DISTRIBUTED_PARAMETERS, PIPELINE_PARAMETERS
from components.common.descriptions import described
from components.distributed_train.component import distributed_train
from pipelines.kubernetes_settings import ClusterSettings, configure_step
from pipelines.training_tasks import (
    check_first,
    deployment_arguments,
    evaluate_and_gate,
    find_baseline_first,
    job_arguments,
    packaging_arguments,
    pull_data,
    training_arguments,
)

PIPELINE_NAME = "pytorch-distributed-training"


def build_distributed_training_pipeline(settings: ClusterSettings | None = None):
    """The distributed training pipeline with ``settings`` (compile-time Kubernetes settings) applied."""
    settings = settings or ClusterSettings()
    settings.validate()
    default_baseline = settings.default_baseline  # production where the cluster has a model registry

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Pull a DVC-versioned image dataset, train with DistributedDataParallel as a Kubeflow Trainer "
        "TrainJob or a PyTorchJob (the library's training, or your own image and command), evaluate on the fixed "
        "test split against the model in production and, when it passes the gate, register and package it; a "
        "report says why.",
    )
    @described(PIPELINE_PARAMETERS, DISTRIBUTED_PARAMETERS)
    def distributed_training_pipeline(
        repo_url: str,
        rev: str = "main",
        data_path: str = "data/raw",
        dvc_remote: str = "",
        dvc_remote_config: Dict[str, str] = {},
        dvc_jobs: int = 4,
        launcher: str = "auto",
        image: str = "",
        command: List[str] = [],
        script_hyperparameters: dict = {},
        num_workers: int = 2,
        nproc_per_node: int = 1,
        gpus: int = 0,
        accelerator_type: str = "nvidia.com/gpu",
        cpu: str = "4",
        memory: str = "16Gi",
        node_selector: Dict[str, str] = {},
        tolerations: List[dict] = [],
        shm_size: str = "2Gi",
        timeout_seconds: int = 86400,
        scheduling_timeout_seconds: int = 600,
        queue_name: str = "",
        queue_timeout_seconds: int = 21600,
        epochs: int = 12,
        batch_size: int = 64,
        learning_rate: float = 0.003,
        seed: int = 0,
        validation_fraction: float = 0.1,
        test_fraction: float = 0.2,
        architecture: str = "small_cnn",
        model_factory: str = "",
        pretrained_weights: str = "",
        fine_tune: str = "full",
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
        workers: int = -1,
        memory_budget: str = "",
        accuracy_threshold: float = 0.95,
        baseline: str = default_baseline,
        image_repository: str = "",
        serving_base_image: str = "docker.io/library/python:3.11-slim",
        build_image: bool = True,
        push_image: bool = True,
        deploy_target: str = "kserve",
        deploy_namespace: str = "",
    ):
        """Pull the data, train it distributed on the cluster's kind of job, evaluate against production, gate,
        register, package, deploy and report."""
        values = dict(locals())
        checked = check_first(values, settings, distributed=True)
        pulled = pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings, checked)
        trained = distributed_train(
            dataset=pulled.outputs["dataset"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
            trainer_release=settings.trainer_release,
            runtime=settings.trainjob_runtime,
            runtime_kind=settings.trainjob_runtime_kind,
            # The pods read the dataset and write the model by URI (gs://, minio:// or s3://).
            env=settings.replica_environment,
            secret_volumes=settings.gcs_secret_volumes,
            optional_secret_volumes=settings.artifact_store_secret_volumes,
            **job_arguments(values),
            **training_arguments(values),
        ).set_display_name("distributed training")
        configure_step(trained, "distributed-train", settings)
        found = find_baseline_first(baseline, settings, after=checked)
        evaluate_and_gate(
            trained.outputs["model"],
            pulled.outputs["dataset"],
            found.outputs["baseline_model"],
            accuracy_threshold,
            packaging_arguments(values),
            settings,
            deployment_arguments(values),
        )

    return distributed_training_pipeline


distributed_training_pipeline = build_distributed_training_pipeline()

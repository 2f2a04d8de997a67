"""DVC pull → distributed training (a Kubeflow Trainer TrainJob or a PyTorchJob, whichever the cluster serves, or
torchrun locally) → evaluate against production → gate → register, package → report."""

from typing import Dict, List

from kfp import dsl

from components.distributed_train.component import distributed_train
from pipelines.kubernetes_settings import ClusterSettings, configure_step
from pipelines.training_tasks import check_first, evaluate_and_gate, find_baseline_first, pull_data

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
        register, package and report.

        Args:
            repo_url: The git repository that tracks the data with DVC.
            rev: The branch, tag or commit of the data; resolved to a commit first, so caching keys on the data.
            data_path: The DVC-tracked path of the dataset in the repository.
            dvc_remote: The DVC remote to pull from; empty for the repository's default.
            dvc_remote_config: Settings of that remote (no credentials).
            dvc_jobs: Parallel downloads.
            launcher: "auto" (the kind of job the cluster's API discovery lists; TrainJob when it serves both),
                "trainjob" (Kubeflow Trainer v2), "pytorchjob" (the Training Operator v1; "kubeflow", its earlier
                name, is accepted) or "local" (torchrun in the step's own pod, what kfp.local uses).
            image: The training pods' image; empty for this library's CUDA training image.
            command: Empty for the library's training; else your own command, run on every pod under torchrun.
            script_hyperparameters: Extra hyperparameters for a custom command.
            num_workers: Training pods.
            nproc_per_node: Processes per pod.
            gpus: GPUs per pod.
            accelerator_type: The extended resource the GPUs are counted in.
            cpu: CPU request per pod.
            memory: Memory request and limit per pod.
            node_selector: Node labels the training pods must run on.
            tolerations: Tolerations of the training pods.
            shm_size: The training pods' /dev/shm size; "" for none.
            timeout_seconds: Wall-clock limit of the training step; the job is deleted when it runs out.
            scheduling_timeout_seconds: How long the training pods may wait to start; then the step fails with their
                own reasons.
            queue_name: A Kueue LocalQueue to queue the training job in; empty for none.
            queue_timeout_seconds: How long the training job may wait suspended in that queue at a stretch.
            epochs: The training parameters, as for train (every field of TrainConfig), from here to memory_budget.
            batch_size: Per process.
            learning_rate: As for train.
            seed: As for train.
            validation_fraction: As for train.
            test_fraction: As for train.
            architecture: As for train.
            model_factory: As for train.
            pretrained_weights: A checkpoint file or Model directory to start from, by path or URI.
            fine_tune: As for train.
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
            workers: As for train.
            memory_budget: As for train.
            accuracy_threshold: The promotion gate's threshold on test accuracy, in [0, 1].
            image_repository: Where the serving image goes; empty for no image.
            serving_base_image: The serving image's base.
            build_image: Whether to build the serving image.
            push_image: Whether to push it.
            baseline: what evaluate compares the new model with: ``production`` (the version the cluster's model
                registry says serves; the default where the cluster has a registry: a first model, with none in
                production yet, is compared with nothing and says so), ``none``, or a model's URI (``gs://``,
                ``s3://``, ``minio://`` or an absolute path to a model directory this library wrote).
            deploy_target: where a promoted model is deployed and verified: ``kserve`` (an InferenceService) or
                ``deployment`` (a Deployment, Service and HorizontalPodAutoscaler), both in ``deploy_namespace``;
                or ``local`` (``bentoml serve`` on the machine running the step: what ``kfp.local`` and
                ``make run`` use).
            deploy_namespace: the namespace the cluster targets deploy to (staging); "" deploys nothing to a
                cluster. Target ``local`` takes none.
        """
        checked = check_first(dict(locals()), settings, distributed=True)
        pulled = pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings, checked)
        trained = distributed_train(
            dataset=pulled.outputs["dataset"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
            launcher=launcher,
            image=image,
            command=command,
            script_hyperparameters=script_hyperparameters,
            num_workers=num_workers,
            nproc_per_node=nproc_per_node,
            gpus=gpus,
            accelerator_type=accelerator_type,
            cpu=cpu,
            memory=memory,
            node_selector=node_selector,
            tolerations=tolerations,
            shm_size=shm_size,
            timeout_seconds=timeout_seconds,
            scheduling_timeout_seconds=scheduling_timeout_seconds,
            queue_name=queue_name,
            queue_timeout_seconds=queue_timeout_seconds,
            trainer_release=settings.trainer_release,
            runtime=settings.trainjob_runtime,
            runtime_kind=settings.trainjob_runtime_kind,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            architecture=architecture,
            model_factory=model_factory,
            pretrained_weights=pretrained_weights,
            fine_tune=fine_tune,
            image_size=image_size,
            channels=channels,
            augment=augment,
            normalization=normalization,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs,
            label_smoothing=label_smoothing,
            early_stopping_patience=early_stopping_patience,
            gradient_accumulation_steps=gradient_accumulation_steps,
            workers=workers,
            memory_budget=memory_budget,
            # The pods read the dataset and write the model by URI (gs://, minio:// or s3://).
            env=settings.replica_environment,
            secret_volumes=settings.gcs_secret_volumes,
            optional_secret_volumes=settings.artifact_store_secret_volumes,
        ).set_display_name("distributed training")
        configure_step(trained, "distributed-train", settings)
        packaging = {
            "image_repository": image_repository,
            "base_image": serving_base_image,
            "build_image": build_image,
            "push_image": push_image,
        }
        found = find_baseline_first(baseline, settings, after=checked)
        evaluate_and_gate(
            trained.outputs["model"],
            pulled.outputs["dataset"],
            found.outputs["baseline_model"],
            accuracy_threshold,
            packaging,
            settings,
            {"target": deploy_target, "namespace": deploy_namespace},
        )

    return distributed_training_pipeline


distributed_training_pipeline = build_distributed_training_pipeline()

"""DVC pull → distributed training (a Kubeflow PyTorchJob, or torchrun locally) → evaluate → gate."""

from typing import Dict, List

from kfp import dsl

from components.pytorchjob_train.component import pytorchjob_train
from pipelines.kubernetes_settings import ClusterSettings, configure_step
from pipelines.stages import check_first, evaluate_and_gate, pull_data

PIPELINE_NAME = "pytorch-distributed-training"


def build_distributed_training_pipeline(settings: ClusterSettings | None = None):
    """The distributed training pipeline with ``settings`` (compile-time Kubernetes settings) applied."""
    settings = settings or ClusterSettings()
    settings.validate()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Pull a DVC-versioned image dataset, train with DistributedDataParallel as a Kubeflow "
        "PyTorchJob (the library's training, or your own image and command), evaluate on the fixed test split and "
        "record the promotion when it passes the gate.",
    )
    def distributed_training_pipeline(
        repo_url: str,
        rev: str = "main",
        data_path: str = "data/raw",
        dvc_remote: str = "",
        dvc_remote_config: Dict[str, str] = {},
        dvc_jobs: int = 4,
        launcher: str = "kubeflow",
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
        image_repository: str = "",
        serving_base_image: str = "docker.io/library/python:3.11-slim",
        build_image: bool = True,
        push_image: bool = True,
        deploy_target: str = "kserve",
        deploy_namespace: str = "",
    ):
        """The pipeline's parameters for the deploy step (the others are described in the README's Pipelines section).

        Args:
            deploy_target: where a promoted model is deployed and verified: ``kserve`` (an InferenceService) or
                ``deployment`` (a Deployment, Service and HorizontalPodAutoscaler), both in ``deploy_namespace``;
                or ``local`` (``bentoml serve`` on the machine running the step: what ``kfp.local`` and
                ``make run`` use).
            deploy_namespace: the namespace the cluster targets deploy to (staging); "" deploys nothing to a
                cluster. Target ``local`` takes none.
        """
        checked = check_first(dict(locals()), settings, distributed=True)
        pulled = pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings, checked)
        trained = pytorchjob_train(
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
            # The replicas read the dataset and write the model by URI (gs://, minio:// or s3://).
            env=settings.replica_environment,
            secret_volumes=settings.gcs_secret_volumes,
            optional_secret_volumes=settings.artifact_store_secret_volumes,
        ).set_display_name("distributed training")
        configure_step(trained, "pytorchjob-train", settings)
        packaging = {
            "image_repository": image_repository,
            "base_image": serving_base_image,
            "build_image": build_image,
            "push_image": push_image,
        }
        deployment = {"target": deploy_target, "namespace": deploy_namespace}
        evaluate_and_gate(
            trained.outputs["model"], pulled.outputs["dataset"], accuracy_threshold, packaging, settings, deployment
        )

    return distributed_training_pipeline


distributed_training_pipeline = build_distributed_training_pipeline()

"""resolve data revision → DVC pull → train (on a GPU node) → evaluate against production → (if promoted)
register, package → report."""

from typing import Dict, List

from kfp import dsl

from components.check_arguments.checks import GPU_NODE_SELECTOR, GPU_TOLERATIONS
from components.check_arguments.parameters import PIPELINE_PARAMETERS, TRAIN_STEP_PLACEMENT
from components.common.descriptions import described
from components.train.component import train
from pipelines.kubernetes_settings import ClusterSettings, configure_accelerator, configure_step
from pipelines.training_tasks import (
    check_first,
    deployment_arguments,
    evaluate_and_gate,
    find_baseline_first,
    packaging_arguments,
    pull_data,
    training_arguments,
)

PIPELINE_NAME = "pytorch-training"


def build_training_pipeline(settings: ClusterSettings | None = None):
    """The training pipeline with ``settings`` (compile-time Kubernetes settings) applied to its steps."""
    settings = settings or ClusterSettings()
    settings.validate()
    default_baseline = settings.default_baseline  # production where the cluster has a model registry

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Pull a DVC-versioned image dataset, train a PyTorch classifier (small_cnn, a torchvision "
        "architecture, optionally fine-tuned from pretrained weights, or your own model_factory) on a GPU, evaluate "
        "it and its ONNX export on the fixed test split against the model in production and, when it passes the gate, "
        "register it in the model registry and package it as a BentoML service image; a report says why.",
    )
    @described(PIPELINE_PARAMETERS, TRAIN_STEP_PLACEMENT)
    def training_pipeline(
        repo_url: str,
        rev: str = "main",
        data_path: str = "data/raw",
        dvc_remote: str = "",
        dvc_remote_config: Dict[str, str] = {},
        dvc_jobs: int = 4,
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
        gpus: int = 1,
        accelerator_type: str = "nvidia.com/gpu",
        node_selector: Dict[str, str] = GPU_NODE_SELECTOR,
        tolerations: List[dict] = GPU_TOLERATIONS,
        accuracy_threshold: float = 0.95,
        baseline: str = default_baseline,
        image_repository: str = "",
        serving_base_image: str = "docker.io/library/python:3.11-slim",
        build_image: bool = True,
        push_image: bool = True,
        deploy_target: str = "kserve",
        deploy_namespace: str = "",
    ):
        """Pull the data, train on a GPU, evaluate against production, gate, register, package, deploy, report."""
        values = dict(locals())
        checked = check_first(values, settings)
        pulled = pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings, checked)
        trained = train(
            dataset=pulled.outputs["dataset"], pretrained_weights_uri=pretrained_weights, **training_arguments(values)
        ).set_display_name("train")
        configure_step(trained, "train", settings)
        placement = checked.outputs
        configure_accelerator(trained, gpus, accelerator_type, placement["node_selector"], placement["tolerations"])
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

    return training_pipeline


training_pipeline = build_training_pipeline()

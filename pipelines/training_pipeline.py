"""resolve data revision → DVC pull → train (on a GPU node) → evaluate → (if promoted) record, package."""

from typing import Dict, List

from kfp import dsl

from components.train.component import train
from pipelines.kubernetes_settings import ClusterSettings, configure_accelerator, configure_step
from pipelines.stages import evaluate_and_gate, pull_data

PIPELINE_NAME = "pytorch-training"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # the label NVIDIA's GPU feature discovery sets
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def build_training_pipeline(settings: ClusterSettings | None = None):
    """The training pipeline with ``settings`` (compile-time Kubernetes settings) applied to its steps."""
    settings = settings or ClusterSettings()
    settings.validate()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Pull a DVC-versioned image dataset, train a PyTorch classifier on a GPU, evaluate it "
        "on the fixed test split and, when it passes the gate, record its promotion and package it "
        "as a BentoML service image.",
    )
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
        gpus: int = 1,
        accelerator_type: str = "nvidia.com/gpu",
        node_selector: Dict[str, str] = GPU_NODE_SELECTOR,
        tolerations: List[dict] = GPU_TOLERATIONS,
        accuracy_threshold: float = 0.95,
        image_repository: str = "localhost/kfp-torch-lifecycle/image-classifier",
        serving_base_image: str = "docker.io/library/python:3.11-slim",
        build_image: bool = True,
        push_image: bool = True,
    ):
        pulled = pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings)
        trained = train(
            dataset=pulled.outputs["dataset"],
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            validation_fraction=validation_fraction,
        ).set_display_name("train")
        configure_step(trained, "train", settings)
        configure_accelerator(trained, gpus, accelerator_type, node_selector, tolerations)
        packaging = {
            "image_repository": image_repository,
            "base_image": serving_base_image,
            "build_image": build_image,
            "push_image": push_image,
        }
        evaluate_and_gate(trained.outputs["model"], pulled.outputs["dataset"], accuracy_threshold, packaging, settings)

    return training_pipeline


training_pipeline = build_training_pipeline()

"""DVC pull → train → evaluate → (if promoted) record the promotion."""

from typing import Dict

from kfp import dsl

from components.train.component import train
from pipelines.stages import evaluate_and_gate, pull_data

PIPELINE_NAME = "pytorch-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Pull a DVC-versioned image dataset, train a PyTorch classifier, evaluate it on the "
    "fixed test split and record its promotion when it passes the gate.",
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
    accuracy_threshold: float = 0.95,
    image_repository: str = "localhost/kfp-torch-lifecycle/image-classifier",
    serving_base_image: str = "docker.io/library/python:3.11-slim",
    build_image: bool = True,
    push_image: bool = True,
):
    pulled = pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs)
    trained = train(
        dataset=pulled.outputs["dataset"],
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        validation_fraction=validation_fraction,
    ).set_display_name("train")
    packaging = {
        "image_repository": image_repository,
        "base_image": serving_base_image,
        "build_image": build_image,
        "push_image": push_image,
    }
    evaluate_and_gate(trained.outputs["model"], pulled.outputs["dataset"], accuracy_threshold, packaging)

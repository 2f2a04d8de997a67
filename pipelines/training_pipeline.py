"""DVC pull → train → evaluate → (if promoted) record the promotion."""

from typing import Dict

from kfp import dsl

from components.dvc_pull.component import dvc_pull
from components.evaluate.component import evaluate
from components.promotion.component import record_promotion
from components.train.component import train

PIPELINE_NAME = "pytorch-training"


def check_arguments(arguments: dict) -> None:
    """Reject bad pipeline arguments before a run is submitted, naming the value and what is valid."""
    from components.dvc_pull.pull import validate_inputs
    from components.evaluate.evaluation import validate_threshold
    from components.train.trainer import TrainConfig

    known = set(training_pipeline.component_spec.inputs)
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; the pipeline takes {', '.join(sorted(known))}")
    values = {name: spec.default for name, spec in training_pipeline.component_spec.inputs.items()}
    values.update(arguments)
    if values.get("repo_url") is None:
        raise ValueError("repo_url is required: the git repository that tracks the data with DVC")
    validate_inputs(
        values["repo_url"], values["rev"], [values["data_path"]], values["dvc_remote_config"], values["dvc_jobs"]
    )
    TrainConfig(
        epochs=values["epochs"],
        batch_size=values["batch_size"],
        learning_rate=values["learning_rate"],
        seed=values["seed"],
        validation_fraction=values["validation_fraction"],
    ).validate()
    validate_threshold(values["accuracy_threshold"])


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
):
    pulled = dvc_pull(
        repo_url=repo_url,
        rev=rev,
        paths=[data_path],
        remote=dvc_remote,
        remote_config=dvc_remote_config,
        jobs=dvc_jobs,
    ).set_display_name("dvc pull")
    trained = train(
        dataset=pulled.outputs["dataset"],
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        validation_fraction=validation_fraction,
    ).set_display_name("train")
    evaluated = evaluate(
        model=trained.outputs["model"],
        dataset=pulled.outputs["dataset"],
        accuracy_threshold=accuracy_threshold,
    ).set_display_name("evaluate")
    with dsl.If(evaluated.outputs["Output"] == True, name="promotion-gate"):  # noqa: E712 (KFP condition)
        record_promotion(
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["metrics"],
        ).set_display_name("record promotion")

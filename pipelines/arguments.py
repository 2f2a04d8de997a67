"""Check pipeline arguments before a run is submitted, naming the bad value and what is valid."""

from __future__ import annotations

from typing import Any

from components.containerize.buildah import validate_image
from components.dvc_pull.pull import validate_inputs
from components.evaluate.evaluation import validate_threshold
from components.pytorchjob_train.manifest import PyTorchJobConfig
from components.pytorchjob_train.step import LAUNCHERS, check_command, script_hyperparameters
from components.train.trainer import TrainConfig

JOB_SETTINGS = (
    "num_workers",
    "nproc_per_node",
    "gpus",
    "accelerator_type",
    "cpu",
    "memory",
    "node_selector",
    "tolerations",
    "shm_size",
)
TRAIN_STEP_PLACEMENT = ("gpus", "accelerator_type", "node_selector", "tolerations")


def check_arguments(pipeline, arguments: dict[str, Any]) -> None:
    inputs = pipeline.component_spec.inputs
    unknown = sorted(set(arguments) - set(inputs))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; the pipeline takes {', '.join(sorted(inputs))}")
    values = {name: spec.default for name, spec in inputs.items()} | arguments
    if values.get("repo_url") is None:
        raise ValueError("repo_url is required: the git repository that tracks the data with DVC")
    validate_inputs(
        values["repo_url"], values["rev"], [values["data_path"]], values["dvc_remote_config"], values["dvc_jobs"]
    )
    config = TrainConfig.from_parameters(values)
    config.validate()
    if "command" in values:
        check_command(values["command"], script_hyperparameters(config, values["script_hyperparameters"]))
    validate_threshold(values["accuracy_threshold"])
    if values.get("build_image"):
        validate_image(values["image_repository"] + ":tag", "image_repository")
        validate_image(values["serving_base_image"], "serving_base_image")
    if "launcher" in values:
        if values["launcher"] not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {values['launcher']!r}")
        settings = {name: values[name] for name in JOB_SETTINGS if name in values}
    else:  # the single-node train step: its placement takes the same checks as a PyTorchJob replica's
        settings = {name: values[name] for name in TRAIN_STEP_PLACEMENT if name in values}
    PyTorchJobConfig(image=values.get("image") or "image", command=["python"], **settings).validate()


def check_compiled_arguments(pipeline_name: str, arguments: dict[str, Any]) -> bool:
    """Run :func:`check_arguments` for a compiled pipeline of this library, found by ``pipelineInfo.name``.

    Returns False (and checks nothing beyond the declared types) for a pipeline this library does not define.
    """
    from pipelines.compile import PIPELINES

    for pipeline in PIPELINES.values():
        if pipeline.name == pipeline_name:
            check_arguments(pipeline, arguments)
            return True
    return False

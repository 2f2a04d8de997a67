"""Check pipeline arguments before a run is submitted, naming the bad value and what is valid."""

from __future__ import annotations

from typing import Any

from components.containerize.buildah import validate_image
from components.dvc_pull.pull import validate_inputs
from components.evaluate.evaluation import validate_threshold
from components.pytorchjob_train.manifest import DNS_1123_SUBDOMAIN, LABEL_VALUE, PyTorchJobConfig
from components.pytorchjob_train.step import LAUNCHERS
from components.train.trainer import TrainConfig

JOB_SETTINGS = ("num_workers", "nproc_per_node", "gpus", "cpu", "memory", "node_selector", "tolerations", "shm_size")


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
    TrainConfig(
        epochs=values["epochs"],
        batch_size=values["batch_size"],
        learning_rate=values["learning_rate"],
        seed=values["seed"],
        validation_fraction=values["validation_fraction"],
    ).validate()
    validate_threshold(values["accuracy_threshold"])
    if values.get("build_image"):
        validate_image(values["image_repository"] + ":tag", "image_repository")
        validate_image(values["serving_base_image"], "serving_base_image")
    if "accelerator_type" in values:
        check_accelerator(values["gpus"], values["accelerator_type"], values["node_selector"], values["tolerations"])
    if "launcher" in values:
        if values["launcher"] not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {values['launcher']!r}")
        settings = {name: values[name] for name in JOB_SETTINGS if name in values}
        PyTorchJobConfig(image=values.get("image") or "image", command=["python"], **settings).validate()


def check_accelerator(gpus: Any, accelerator_type: Any, node_selector: Any, tolerations: Any) -> None:
    """The training step's GPU count, accelerator resource name, node selector and tolerations."""
    prefix, _, name = str(accelerator_type).rpartition("/")
    if not (prefix and DNS_1123_SUBDOMAIN.match(prefix) and name and LABEL_VALUE.match(name)):
        raise ValueError(
            f"accelerator_type must be an extended resource name like 'nvidia.com/gpu' or 'amd.com/gpu', "
            f"got {accelerator_type!r}"
        )
    PyTorchJobConfig(
        image="image", command=["python"], gpus=gpus, node_selector=node_selector, tolerations=tolerations
    ).validate()


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

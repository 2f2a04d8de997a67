"""What a distributed training step's component records on its outputs: the metrics, and the Model's lineage and
format, the same for every kind of job."""

from __future__ import annotations

from typing import Any

from components.common.distributed_step import StepResult
from components.common.spec import model_metadata
from components.train.metrics import metric_values


def publish_outputs(
    result: StepResult, model, metrics, dataset_info: dict[str, Any], command: list[str], image: str
) -> None:
    """Log the metrics on the ``Metrics`` artifact and describe the ``Model`` artifact in its metadata."""
    spec = result.spec
    values = metric_values(spec.training.get("history", [])) if spec is not None else {}
    for name, value in {**values, **result.metrics}.items():
        metrics.log_metric(name, value)
    model.metadata.update({"dataset_" + key: value for key, value in dataset_info.items() if key != "md5"})
    if command:
        model.metadata.update({"command": " ".join(command), "image": image})
    if spec is None:
        model.metadata["format"] = "custom: not the library's format (no spec.json); evaluate and serving need it"
        return
    model.metadata.update({**model_metadata(spec), "world_size": spec.training.get("world_size", 1)})

"""What a registered version carries: the model, its data, its scores, its training and the run that made it.

``Registration.collect`` reads it from a promoted ``Model`` directory (its ``spec.json``: architecture,
classes, the dataset's repository, commit and DVC md5 per path, the training parameters) and the
``evaluate`` step's ``Metrics`` (scores, and the gate's ``promote`` and ``reason``), plus the pipeline
run's id and name (KFP placeholders). ``properties()`` flattens it into the names and values a registry
keeps (strings, numbers, booleans), the same for every registry:

- ``model_uri``, ``architecture``, ``classes`` (JSON), ``input_shape`` (JSON), ``library_version``;
- ``dataset_repository``, ``dataset_commit``, ``dataset_md5`` (JSON: DVC md5 per path);
- ``metric.<name>``: each score (numbers), ``promote``, ``promotion_reason``;
- ``param.<name>``: each training parameter (JSON text);
- ``pipeline_run_id``, ``pipeline_run_name``, ``registered_at``.

Plain Python, no torch and no KFP.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.spec import load_spec
from components.evaluate.metrics_file import DECISION_FIELDS

# KFP's placeholders arrive as written when a runner does not substitute them.
UNSUBSTITUTED = "{{$."


@dataclass(frozen=True)
class PipelineRun:
    id: str = ""
    name: str = ""

    @classmethod
    def of(cls, run_id: str, run_name: str) -> PipelineRun:
        def clean(value: str) -> str:
            value = (value or "").strip()
            return "" if value.startswith(UNSUBSTITUTED) else value

        return cls(clean(run_id), clean(run_name))


@dataclass(frozen=True)
class Registration:
    model_uri: str
    model_dir: str
    architecture: str
    classes: list[str]
    input_shape: list[int]
    dataset: dict[str, Any]  # spec.json's: commit, md5 per path, repo_url
    training_parameters: dict[str, Any]
    metrics: dict[str, float]  # evaluate's scores
    evaluation: dict[str, Any]  # evaluate's Metrics metadata as it is: scores, promote, reason
    run: PipelineRun = field(default_factory=PipelineRun)
    library_version: str | None = None  # spec.json's, as written
    registered_at: str = ""

    @classmethod
    def collect(
        cls,
        model_dir: str | Path,
        model_uri: str,
        evaluation: Mapping[str, Any],
        run: PipelineRun | None = None,
        now: dt.datetime | None = None,
    ) -> Registration:
        """A registration from a Model directory, its URI and evaluate's Metrics metadata."""
        spec = load_spec(model_dir)  # a directory that is no model fails here, naming what is missing
        scores = {key: value for key, value in evaluation.items() if key != "display_name"}
        metrics = {
            name: float(value)
            for name, value in scores.items()
            if name not in DECISION_FIELDS
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        return cls(
            model_uri=str(model_uri),
            model_dir=str(model_dir),
            architecture=spec.architecture,
            classes=list(spec.classes),
            input_shape=list(spec.input_shape),
            dataset=dict(spec.dataset),
            training_parameters=dict(spec.training.get("parameters", {})),
            metrics=metrics,
            evaluation=scores,
            run=run or PipelineRun(),
            library_version=spec.versions.get("library"),
            registered_at=(now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
        )

    @property
    def dataset_repository(self) -> str:
        return str(self.dataset.get("repo_url", ""))

    @property
    def dataset_commit(self) -> str:
        return str(self.dataset.get("commit", ""))

    @property
    def dataset_md5(self) -> dict:
        md5 = self.dataset.get("md5", {})
        return dict(md5) if isinstance(md5, Mapping) else {"": str(md5)}

    def description(self) -> str:
        accuracy = self.metrics.get("accuracy")
        scored = f"test accuracy {accuracy:.4f}" if accuracy is not None else "no test accuracy"
        commit = self.dataset_commit[:12] or "an unknown commit"
        run = f" in run {self.run.name or self.run.id}" if (self.run.name or self.run.id) else ""
        return f"{self.architecture} trained on {commit}{run}: {scored}"

    def properties(self) -> dict[str, str | float | bool]:
        """Flat names and values, as every registry keeps them (see the module docstring)."""
        values: dict[str, str | float | bool] = {
            "model_uri": self.model_uri,
            "architecture": self.architecture,
            "classes": json.dumps(self.classes),
            "input_shape": json.dumps(self.input_shape),
            "library_version": self.library_version or "",
            "dataset_repository": self.dataset_repository,
            "dataset_commit": self.dataset_commit,
            "dataset_md5": json.dumps(self.dataset_md5, sort_keys=True),
            "pipeline_run_id": self.run.id,
            "pipeline_run_name": self.run.name,
            "registered_at": self.registered_at,
        }
        if "promote" in self.evaluation:
            values["promote"] = bool(self.evaluation["promote"])
        if "reason" in self.evaluation:
            values["promotion_reason"] = str(self.evaluation["reason"])
        values.update({f"metric.{name}": value for name, value in sorted(self.metrics.items())})
        values.update(
            {f"param.{name}": json.dumps(value, sort_keys=True) for name, value in self.parameters_flat().items()}
        )
        return values

    def parameters_flat(self) -> dict[str, Any]:
        return dict(sorted(self.training_parameters.items()))

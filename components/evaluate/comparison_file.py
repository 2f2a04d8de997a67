"""evaluate's ``comparison`` artifact: the decision and both models' scores on the same test files, as JSON.

What the report reads (the ``metrics`` artifact keeps its flat name -> number form for ML Metadata
and ``pipelines.run_metrics``). One JSON object::

    {"format_version": 1,
     "decision": {"promote": true, "reason": "...", "threshold": 0.95},
     "candidate": {<scores>},                       # on every test file
     "baseline": {"status": "compared",             # or "none", or "no shared class"
                  "label": "the production model: image-classifier version 3 in the mlflow registry",
                  "reason": "",                     # why nothing was compared, for the other statuses
                  "source": {"baseline": "production", "registry": ..., "model_name": ..., "version": ...,
                             "uri": ...},
                  "classes": [...]},                # the baseline's own classes (null without one)
     "shared": {"classes": [...], "candidate_only": [...], "baseline_only": [...],
                "candidate": {<scores>}, "baseline": {<scores>}},   # null unless compared
     "models": {"candidate": {<model>}, "baseline": {<model>}}}    # baseline null without one

``<scores>``: ``accuracy``, ``loss`` (null on shared classes), ``macro_f1``, ``per_class_recall``
(class -> recall), ``confusion_matrix`` (rows: true class, columns: predicted, in ``classes``
order), ``classes``, ``samples``, ``onnx_max_difference`` (null when not checked) and ``outside``
(per true class, the files predicted as a class outside ``classes``; empty when none). With the
same classes on both sides, ``shared.candidate`` equals ``candidate``.

``<model>``: what the models' ``spec.json`` say about how they were made, so the report needs
neither model (a step downloads its input artifacts whole): ``uri``, ``architecture``,
``classes``, ``training`` (the spec's record: ``parameters``, ``history`` per epoch,
``pretrained_weights``, ``train_samples``, ...; empty for a custom script's model), ``dataset``
(repository, commit, md5, file count and bytes where known; the candidate's from the evaluated
``Dataset``) and ``versions``. Torch-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.artifacts import write_json_atomic
from components.common.spec import DATASET_LINEAGE_KEYS, ModelSpec
from components.evaluate.scores import Evaluation, SharedComparison

FORMAT_VERSION = 1
COMPARED, NONE, NO_SHARED_CLASS = "compared", "none", "no shared class"
STATUSES = (COMPARED, NONE, NO_SHARED_CLASS)


class ComparisonFileError(ValueError):
    """A comparison file that is not what evaluate writes; the message names the file and the field."""


@dataclass
class BaselineSummary:
    status: str  # one of STATUSES
    label: str
    reason: str
    source: dict[str, Any]
    classes: list[str] | None


@dataclass
class Comparison:
    promote: bool
    reason: str
    threshold: float
    candidate: Evaluation
    baseline: BaselineSummary
    shared: SharedComparison | None
    models: dict[str, dict[str, Any] | None]  # "candidate", "baseline": see model_summary

    def record(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "decision": {"promote": self.promote, "reason": self.reason, "threshold": self.threshold},
            "candidate": self.candidate.record(),
            "baseline": {
                "status": self.baseline.status,
                "label": self.baseline.label,
                "reason": self.baseline.reason,
                "source": self.baseline.source,
                "classes": self.baseline.classes,
            },
            "shared": self.shared.record() if self.shared is not None else None,
            "models": self.models,
        }


def model_summary(spec: ModelSpec, uri: str, dataset_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """How a model was made, from its spec; ``dataset_metadata`` (the evaluated Dataset's) fills in the lineage."""
    dataset = dict(spec.dataset)
    dataset.update({key: value for key, value in (dataset_metadata or {}).items() if key in DATASET_LINEAGE_KEYS})
    return {
        "uri": uri,
        "architecture": spec.architecture,
        "classes": list(spec.classes),
        "training": spec.training,
        "dataset": dataset,
        "versions": spec.versions,
    }


def write_comparison(path: str | Path, comparison: Comparison) -> None:
    record = comparison.record()
    check_record(record, str(path))
    write_json_atomic(path, record)


def read_comparison(path: str | Path) -> Comparison:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ComparisonFileError(f"{path} is not a comparison file evaluate wrote: {error}") from None
    check_record(record, str(path))
    baseline = record["baseline"]
    return Comparison(
        promote=record["decision"]["promote"],
        reason=record["decision"]["reason"],
        threshold=record["decision"]["threshold"],
        candidate=Evaluation.from_record(record["candidate"]),
        baseline=BaselineSummary(
            baseline["status"], baseline["label"], baseline["reason"], dict(baseline["source"]), baseline["classes"]
        ),
        shared=SharedComparison.from_record(record["shared"]) if record["shared"] is not None else None,
        models={"candidate": record["models"]["candidate"], "baseline": record["models"]["baseline"]},
    )


def check_record(record: Any, source: str) -> None:
    """``ComparisonFileError`` naming ``source`` and the field unless ``record`` has the file's shape."""

    def fail(message: str):
        raise ComparisonFileError(f"{source}: {message}")

    if not isinstance(record, dict):
        fail(f"a comparison file holds a JSON object, not {type(record).__name__}")
    if record.get("format_version") != FORMAT_VERSION:
        fail(f"format_version is {record.get('format_version')!r}; this library reads {FORMAT_VERSION}")
    decision = record.get("decision")
    if not isinstance(decision, dict) or not isinstance(decision.get("promote"), bool):
        fail("decision.promote is not true or false")
    if not isinstance(decision.get("reason"), str) or not _unit(decision.get("threshold")):
        fail("decision needs a reason (text) and a threshold in [0, 1]")
    _check_scores(record.get("candidate"), "candidate", fail)
    baseline = record.get("baseline")
    if not isinstance(baseline, dict) or baseline.get("status") not in STATUSES:
        fail(f"baseline.status must be one of {STATUSES}")
    if not isinstance(baseline.get("label"), str) or not isinstance(baseline.get("reason"), str):
        fail("baseline.label and baseline.reason must be text")
    if not isinstance(baseline.get("source"), dict):
        fail("baseline.source must be an object")
    classes = baseline.get("classes")
    if classes is not None and not _names(classes):
        fail("baseline.classes must be a list of class names or null")
    shared = record.get("shared")
    if (shared is None) != (baseline["status"] != COMPARED):
        fail(f"shared must be given exactly when baseline.status is {COMPARED!r}")
    if shared is not None:
        lists = ("classes", "candidate_only", "baseline_only")
        if not isinstance(shared, dict) or not all(_names(shared.get(name)) for name in lists):
            fail("shared.classes, shared.candidate_only and shared.baseline_only must be lists of class names")
        for side in ("candidate", "baseline"):
            _check_scores(shared.get(side), f"shared.{side}", fail)
            if shared[side]["classes"] != shared["classes"]:
                fail(f"shared.{side}.classes differ from shared.classes")
    models = record.get("models")
    if not isinstance(models, dict) or models.get("candidate") is None:
        fail("models.candidate must describe the candidate")
    for side in ("candidate", "baseline"):
        model = models.get(side)
        if model is None:
            continue
        if not isinstance(model, dict) or not _names(model.get("classes")) or not isinstance(model.get("uri"), str):
            fail(f"models.{side} needs a uri and classes")
        for part in ("training", "dataset", "versions"):
            if not isinstance(model.get(part), dict):
                fail(f"models.{side}.{part} must be an object")
        history = model["training"].get("history", [])
        if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
            fail(f"models.{side}.training.history must be a list of epochs")


def _check_scores(scores: Any, where: str, fail) -> None:
    if not isinstance(scores, dict):
        fail(f"{where} is not an object of scores")
    classes = scores.get("classes")
    if not _names(classes) or not classes:
        fail(f"{where}.classes must be a non-empty list of class names")
    for name in ("accuracy", "macro_f1"):
        if not _unit(scores.get(name)):
            fail(f"{where}.{name} is {scores.get(name)!r}, not a number in [0, 1]")
    for name in ("loss", "onnx_max_difference"):
        value = scores.get(name)
        if value is not None and not _finite(value):
            fail(f"{where}.{name} is {value!r}, not a finite number or null")
    samples = scores.get("samples")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        fail(f"{where}.samples is {samples!r}, not a count")
    recall = scores.get("per_class_recall")
    if not isinstance(recall, dict) or list(recall) != classes or not all(_unit(v) for v in recall.values()):
        fail(f"{where}.per_class_recall must give a recall in [0, 1] for each class, in order")
    matrix = scores.get("confusion_matrix")
    k = len(classes)
    if not isinstance(matrix, list) or len(matrix) != k or not all(_counts(row, k) for row in matrix):
        fail(f"{where}.confusion_matrix must be {k} rows of {k} counts")
    outside = scores.get("outside", [])
    if outside and not _counts(outside, k):
        fail(f"{where}.outside must be empty or {k} counts")


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _counts(value: Any, length: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unit(value: Any) -> bool:
    return _finite(value) and 0.0 <= value <= 1.0

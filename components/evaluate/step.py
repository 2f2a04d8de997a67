"""The evaluate step without KFP: score the candidate, compare it with the baseline, decide, write the files.

``run_step`` is what ``component.py`` calls with the artifacts' paths; it returns the metrics
record (which the wrapper also logs to ML Metadata) and the comparison, and writes the
predictions, comparison and worst-images files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.spec import load_spec
from components.evaluate.baseline import Baseline
from components.evaluate.comparison_file import (
    COMPARED,
    NO_SHARED_CLASS,
    NONE,
    BaselineSummary,
    Comparison,
    model_summary,
    write_comparison,
)
from components.evaluate.evaluation import (
    check_classes,
    compare,
    prediction_rows,
    run_model,
    score_outputs,
    split_for_model,
)
from components.evaluate.gate import promotion_decision, validate_threshold
from components.evaluate.metrics_file import metrics_record, write_metrics
from components.evaluate.predictions import write_predictions
from components.evaluate.worst_images import write_worst_images

log = logging.getLogger("evaluate")


@dataclass
class StepOutputs:
    """Where the step writes its files (the artifacts' paths)."""

    metrics: str | Path
    predictions: str | Path
    comparison: str | Path
    worst_images: str | Path


@dataclass
class StepResult:
    record: dict[str, Any]  # the metrics file's record: scores, promote, reason, baseline
    comparison: Comparison
    predictions: int  # rows written
    worst_images: int  # pictures listed


def run_step(
    model_dir: str | Path,
    dataset_dir: str | Path,
    threshold: float,
    baseline: Baseline,
    outputs: StepOutputs,
    model_uri: str = "",
    dataset_metadata: Mapping[str, Any] | None = None,
) -> StepResult:
    validate_threshold(threshold)  # before minutes of scoring, not after
    index = split_for_model(dataset_dir, model_dir)
    check_classes(model_dir, index)
    spec = load_spec(model_dir)
    answers = run_model(model_dir, index)
    candidate = score_outputs(answers, index)
    models = {"candidate": model_summary(spec, model_uri or str(model_dir), dict(dataset_metadata or {}))}

    shared, status, why_not, baseline_classes = None, NONE, baseline.reason, None
    models["baseline"] = None
    if baseline.present:
        baseline_answers = run_model(baseline.model_dir, index, require_onnx=False)
        baseline_classes = baseline_answers.classes
        models["baseline"] = model_summary(load_spec(baseline.model_dir), baseline.source["uri"])
        shared = compare(answers, baseline_answers, index)
        status = COMPARED if shared is not None else NO_SHARED_CLASS
        if shared is None:
            why_not = f"{baseline.label()} has no class with test images in common with the candidate"
    decision = promotion_decision(
        candidate,
        threshold,
        shared,
        baseline_label=baseline.label() if shared is not None else "",
        no_baseline=why_not,
        training=spec.training,
    )
    log.info("promote=%s: %s", decision.promote, decision.reason)

    record = metrics_record(
        candidate, decision, shared, baseline=baseline.label() if shared is not None else f"none: {why_not}"
    )
    write_metrics(outputs.metrics, record)
    rows = prediction_rows(answers, index)
    written = write_predictions(outputs.predictions, rows)
    pictures = write_worst_images(outputs.worst_images, rows, index.root)
    summary = BaselineSummary(status, baseline.label(), why_not, baseline.source, baseline_classes)
    comparison = Comparison(decision.promote, decision.reason, threshold, candidate, summary, shared, models)
    write_comparison(outputs.comparison, comparison)
    return StepResult(record, comparison, written, pictures)

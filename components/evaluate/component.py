"""KFP component: score a ``Model`` on the test split, check its ONNX export, compare it with the
baseline and gate its promotion."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    predictions: Output[Artifact],
    comparison: Output[Artifact],
    accuracy_threshold: float = 0.95,
    baseline_model: Optional[Input[Model]] = None,
) -> bool:
    """Evaluates a model on the test split its training never saw, against the baseline.

    Args:
        model: the candidate, as written by ``train`` (weights, ``spec.json``, ``model.onnx``).
        dataset: the dataset the candidate was trained on; the test files are chosen by the
            split rule in the candidate's ``spec.json``, and fed through its preprocessing.
        metrics: ``accuracy``, ``loss``, ``macro_f1``, ``recall_<class>``, ``test_samples``,
            ``onnx_max_difference`` and, with a baseline, ``baseline_accuracy``,
            ``baseline_macro_f1``, ``compared_samples``, ``compared_classes`` (and
            ``shared_accuracy`` where the classes differ), logged to ML Metadata with ``promote``,
            ``reason`` and ``baseline`` (what was compared with, or why nothing) as metadata. The
            same record is written as JSON to the artifact's file, which KFP uploads to the
            artifact store: that is where ``pipelines.run_metrics.read_run_metrics`` reads a
            cluster run's scores, since the Pipelines REST API does not serve ML Metadata.
        confusion: the confusion matrix with class names (drawn by the Kubeflow UI).
        predictions: one row per test file: its path relative to the dataset directory, the
            true class, the predicted class, its probability and the true class's probability,
            as gzip-compressed CSV (``components.evaluate.predictions`` reads it, without torch).
        comparison: the decision and both models' scores on the same test files (accuracy,
            macro F1, per-class recall, confusion matrix; over the classes both know when they
            differ), as JSON (``components.evaluate.comparison_file``); what the report reads.
        accuracy_threshold: the least test accuracy that may be promoted, in [0, 1].
        baseline_model: the model to beat, as the baseline-resolution step hands it over: a
            model of this library with metadata ``baseline`` = ``production`` or ``uri`` (and
            ``registry``, ``model_name``, ``version``, ``uri``), or an empty directory with
            ``baseline`` = ``none`` and a ``reason``; then nothing is compared, and the reason
            says why. Unconnected: no baseline.

    Returns:
        promote: the promotion decision, true only when accuracy >= threshold and not worse than
        the baseline on the same test files; the task's single output, so it is named
        ``Output`` (``dsl.If(evaluated.outputs["Output"] == True)``): ``kfp.local`` 2.17 resolves
        a task output in a ``dsl.If`` condition only under that name, and silently skips the
        branch for a named one. The step fails when the ONNX export's logits differ from
        torch's by more than 1e-4 on any test image: serving runs that export.
    """
    import logging

    from components.common.spec import load_spec
    from components.evaluate.baseline import resolve_baseline
    from components.evaluate.comparison_file import BaselineSummary, Comparison, write_comparison
    from components.evaluate.evaluation import (
        check_classes,
        compare,
        prediction_rows,
        run_model,
        score_outputs,
        split_for_model,
    )
    from components.evaluate.gate import promotion_decision, validate_threshold
    from components.evaluate.metrics_file import TEXT_FIELDS, metrics_record, write_metrics
    from components.evaluate.predictions import COLUMNS, write_predictions

    validate_threshold(accuracy_threshold)  # before minutes of scoring, not after
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("evaluate")
    baseline = resolve_baseline(
        baseline_model.path if baseline_model is not None else None,
        baseline_model.metadata if baseline_model is not None else None,
        baseline_model.uri if baseline_model is not None else "",
    )
    index = split_for_model(dataset.path, model.path)
    check_classes(model.path, index)
    outputs = run_model(model.path, index)
    candidate = score_outputs(outputs, index)

    shared, status, why_not = None, "none", baseline.reason
    baseline_classes = None
    if baseline.present:
        baseline_outputs = run_model(baseline.model_dir, index, require_onnx=False)
        baseline_classes = baseline_outputs.classes
        shared = compare(outputs, baseline_outputs, index)
        status = "compared" if shared is not None else "no shared class"
        if shared is None:
            why_not = f"{baseline.label()} has no class with test images in common with the candidate"
    decision = promotion_decision(
        candidate,
        accuracy_threshold,
        shared,
        baseline_label=baseline.label() if shared is not None else "",
        no_baseline=why_not,
        training=load_spec(model.path).training,
    )
    log.info("promote=%s: %s", decision.promote, decision.reason)

    described = baseline.label() if shared is not None else f"none: {why_not}"
    record = metrics_record(candidate, decision, shared, baseline=described)
    for name, value in record.items():
        if name in TEXT_FIELDS:
            metrics.metadata[name] = value
        else:
            metrics.log_metric(name, value)
    write_metrics(metrics.path, record)
    confusion.log_confusion_matrix(candidate.classes, candidate.confusion_matrix)
    rows = write_predictions(predictions.path, prediction_rows(outputs, index))
    predictions.metadata.update({"format": "csv.gz", "columns": list(COLUMNS), "rows": rows})
    summary = BaselineSummary(status, baseline.label(), why_not, baseline.source, baseline_classes)
    write_comparison(
        comparison.path, Comparison(decision.promote, decision.reason, accuracy_threshold, candidate, summary, shared)
    )
    comparison.metadata.update({"baseline": status, "baseline_label": baseline.label()})

    return decision.promote

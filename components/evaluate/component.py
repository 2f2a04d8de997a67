"""KFP component: score a ``Model`` on the test split, check its ONNX export, and gate its promotion."""

from typing import Optional

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    accuracy_threshold: float = 0.95,
    baseline_model: Optional[Input[Model]] = None,
) -> bool:
    """Evaluates a model on the test split its training never saw.

    Args:
        model: the candidate, as written by ``train`` (weights, ``spec.json``, ``model.onnx``).
        dataset: the dataset the candidate was trained on; the test files are chosen by the
            split rule in the candidate's ``spec.json``, and fed through its preprocessing.
        metrics: ``accuracy``, ``loss``, ``macro_f1``, ``recall_<class>``, ``test_samples``,
            ``onnx_max_difference`` and, with a baseline, ``baseline_accuracy``, logged to ML
            Metadata with ``promote`` and ``reason`` as metadata. The same record is written as
            JSON to the artifact's file, which KFP uploads to the artifact store: that is where
            ``pipelines.run_metrics.read_run_metrics`` reads a cluster run's scores, since the
            Pipelines REST API does not serve ML Metadata.
        confusion: the confusion matrix with class names (drawn by the Kubeflow UI).
        accuracy_threshold: the least test accuracy that may be promoted, in [0, 1].
        baseline_model: optional model in production; the candidate must not be worse than it
            on the same test files.

    Returns:
        promote: true only when accuracy >= threshold and not worse than the baseline (the
        task's single output, ``Output``; a single output is what ``kfp.local`` can resolve
        inside ``dsl.If``). The step fails when the ONNX export's logits differ from torch's
        by more than 1e-4 on any test image: serving runs that export.
    """
    import gc
    import logging

    from components.evaluate.evaluation import evaluate as score_model
    from components.evaluate.evaluation import metrics_record, promotion_decision, split_for_model, validate_threshold
    from components.evaluate.metrics_file import DECISION_FIELDS, write_metrics

    validate_threshold(accuracy_threshold)  # before minutes of scoring, not after
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    index = split_for_model(dataset.path, model.path)
    candidate = score_model(model.path, index=index)
    baseline = score_model(baseline_model.path, index=index, require_onnx=False) if baseline_model is not None else None
    decision = promotion_decision(candidate, accuracy_threshold, baseline)
    logging.getLogger("evaluate").info("promote=%s: %s", decision.promote, decision.reason)

    record = metrics_record(candidate, decision, baseline)
    for name, value in record.items():
        if name in DECISION_FIELDS:
            metrics.metadata[name] = value
        else:
            metrics.log_metric(name, value)
    write_metrics(metrics.path, record)
    confusion.log_confusion_matrix(candidate.classes, candidate.confusion_matrix)
    # The step's process ends here: its heap (torch, torchvision) goes back to the OS at exit, without the
    # interpreter's last garbage collection walking it first (about a second).
    gc.freeze()
    return decision.promote

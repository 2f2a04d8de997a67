"""KFP component: score a ``Model`` on the test split and gate its promotion."""

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
    """Evaluates a model on the fixed ``test`` split of the dataset.

    Args:
        model: the candidate, as written by ``train``.
        dataset: the labelled image folder the candidate was trained on.
        metrics: ``accuracy``, ``loss``, ``macro_f1``, ``recall_<class>``,
            ``test_samples`` and, with a baseline, ``baseline_accuracy``.
        confusion: the confusion matrix with class names (drawn by the Kubeflow UI).
        accuracy_threshold: the least test accuracy that may be promoted, in [0, 1].
        baseline_model: optional model in production; the candidate must not be
            worse than it on the same test split.

    Returns:
        promote: true only when accuracy >= threshold and not worse than the
        baseline (the task's single output, ``Output``; a single output is what
        ``kfp.local`` can resolve inside ``dsl.If``).
    """
    import logging

    from components.common.dataset import load_split
    from components.evaluate.evaluation import evaluate as score_model
    from components.evaluate.evaluation import promotion_decision, validate_threshold

    validate_threshold(accuracy_threshold)  # before minutes of scoring, not after
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    test_split = load_split(dataset.path, "test")
    candidate = score_model(model.path, dataset.path, test_split)
    baseline = score_model(baseline_model.path, dataset.path, test_split) if baseline_model is not None else None
    decision = promotion_decision(candidate, accuracy_threshold, baseline)
    logging.getLogger("evaluate").info("promote=%s: %s", decision.promote, decision.reason)

    metrics.log_metric("accuracy", round(candidate.accuracy, 6))
    metrics.log_metric("loss", round(candidate.loss, 6))
    metrics.log_metric("macro_f1", round(candidate.macro_f1, 6))
    metrics.log_metric("test_samples", candidate.samples)
    for name, recall in candidate.per_class_recall.items():
        metrics.log_metric(f"recall_{name}", round(recall, 6))
    if baseline is not None:
        metrics.log_metric("baseline_accuracy", round(baseline.accuracy, 6))
    metrics.metadata["promote"] = decision.promote
    metrics.metadata["reason"] = decision.reason
    confusion.log_confusion_matrix(candidate.classes, candidate.confusion_matrix)

    return decision.promote

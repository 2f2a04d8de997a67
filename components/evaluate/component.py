"""KFP component: score a ``Model`` on the test split, check its ONNX export, compare it with the
baseline and gate its promotion."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.common.descriptions import described
from components.container_images import COMPONENTS_IMAGE


@dsl.component(base_image=COMPONENTS_IMAGE, install_kfp_package=False)
@described()
def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    predictions: Output[Artifact],
    comparison: Output[Artifact],
    worst_images: Output[Artifact],
    accuracy_threshold: float = 0.95,
    baseline_model: Optional[Input[Model]] = None,
) -> bool:
    """Evaluates a model on the test split its training never saw, against the baseline.

    The step fails when the ONNX export's logits differ from torch's by more than 1e-4 on any test image:
    serving runs that export.

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
            differ) and how each model was made (training parameters and curves, dataset
            lineage), as JSON (``components.evaluate.comparison_file``); what the report reads.
        worst_images: the 16 misclassified test images that gave their true class the least
            probability, as small pictures with what was predicted (a directory:
            ``index.json`` and the pictures; ``components.evaluate.worst_images``).
        accuracy_threshold: The promotion gate's threshold: the least test accuracy that may be promoted, in [0, 1].
        baseline_model: the model to beat, as the baseline-resolution step hands it over: a
            model of this library with metadata ``baseline`` = ``production`` or ``uri`` (and
            ``registry``, ``model_name``, ``version``, ``uri``), or an empty directory with
            ``baseline`` = ``none`` and a ``reason``; then nothing is compared, and the reason
            says why. Unconnected: no baseline.

    Returns:
        Output: The promotion decision: true only when accuracy >= accuracy_threshold and, with a baseline,
            not worse than the baseline on the same test files. The task's single parameter output, so it is
            named Output (dsl.If(evaluated.outputs["Output"] == True)): kfp.local 2.17 resolves a task output in
            a dsl.If condition only under that name, and silently skips the branch for a named one.
    """
    import gc
    import logging

    from components.evaluate.baseline import resolve_baseline
    from components.evaluate.gate import validate_threshold
    from components.evaluate.metrics_file import TEXT_FIELDS
    from components.evaluate.predictions import COLUMNS
    from components.evaluate.step import StepOutputs, run_step

    validate_threshold(accuracy_threshold)  # before anything is read
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    given = baseline_model is not None
    baseline = resolve_baseline(
        baseline_model.path if given else None,
        baseline_model.metadata if given else None,
        baseline_model.uri if given else "",
    )
    result = run_step(
        model.path,
        dataset.path,
        accuracy_threshold,
        baseline,
        StepOutputs(metrics.path, predictions.path, comparison.path, worst_images.path),
        model_uri=model.uri,
        dataset_metadata=dataset.metadata,
    )
    for name, value in result.record.items():
        if name in TEXT_FIELDS:
            metrics.metadata[name] = value
        else:
            metrics.log_metric(name, value)
    scores = result.comparison.candidate
    confusion.log_confusion_matrix(scores.classes, scores.confusion_matrix)
    predictions.metadata.update({"format": "csv.gz", "columns": list(COLUMNS), "rows": result.predictions})
    comparison.metadata.update(
        {"baseline": result.comparison.baseline.status, "label": result.comparison.baseline.label}
    )
    worst_images.metadata["images"] = result.worst_images
    # The step's process ends here: its heap (torch, torchvision) goes back to the OS at exit, without the
    # interpreter's last garbage collection walking it first (about a second).
    gc.freeze()
    return result.comparison.promote

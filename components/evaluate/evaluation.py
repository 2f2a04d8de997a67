"""Score a model on its test split, check its ONNX export, and decide whether it may be promoted.

Plain PyTorch, no KFP. ``split_for_model`` picks the test files with the split rule
the candidate's ``spec.json`` recorded, so evaluate sees exactly the files
training never saw. ``evaluate`` feeds them through the model's own
preprocessing to the torch network *and* to its ONNX export (what serving
runs), fails loudly when the two disagree by more than 1e-4, and returns
accuracy, mean loss, macro F1, per-class recall and the confusion matrix.
``promotion_decision`` applies the gate: accuracy at or above a threshold and,
when a baseline model is given, not worse than the baseline on the same files.
``metrics_record`` puts the scores and the decision in the form the evaluate step reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from components.common.dataset import DatasetFormatError, DatasetIndex, SplitRule, index_dataset
from components.common.loader import normalization_tensors, preprocessed_batches, to_device_batch
from components.common.model import load_model
from components.common.onnx_model import OnnxClassifier, check_parity
from components.common.resources import usable_cpus
from components.common.spec import ModelFormatError, load_spec
from components.evaluate.threshold import validate_threshold

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    macro_f1: float
    per_class_recall: dict[str, float]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    classes: list[str]
    samples: int
    onnx_max_difference: float | None = None  # largest |torch - ONNX| logit; None when not checked


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    accuracy: float
    threshold: float
    baseline_accuracy: float | None = None


def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Evaluation:
    """Metrics from logits and true labels (pure function, easy to test)."""
    k = len(classes)
    predicted = logits.argmax(1)
    confusion = torch.zeros((k, k), dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    true_positive = confusion.diag().double()
    support = confusion.sum(1).double()  # per true class
    predicted_count = confusion.sum(0).double()
    recall = torch.where(support > 0, true_positive / support.clamp_min(1), torch.zeros_like(support))
    precision = torch.where(
        predicted_count > 0, true_positive / predicted_count.clamp_min(1), torch.zeros_like(predicted_count)
    )
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp_min(1e-12), torch.zeros_like(recall))
    return Evaluation(
        accuracy=float(true_positive.sum() / len(labels)),
        loss=float(nn.functional.cross_entropy(logits, labels)),
        macro_f1=float(f1.mean()),
        per_class_recall={name: float(r) for name, r in zip(classes, recall, strict=True)},
        confusion_matrix=confusion.tolist(),
        classes=list(classes),
        samples=len(labels),
    )


def split_for_model(dataset_dir: str | Path, model_dir: str | Path) -> DatasetIndex:
    """The dataset indexed with the split rule the model at ``model_dir`` was trained with."""
    spec = load_spec(model_dir)
    index = index_dataset(dataset_dir, SplitRule.from_record(spec.split))
    if not index.samples("test"):
        raise DatasetFormatError(
            f"dataset {index.root} has no test images under the model's split rule "
            f"(test_fraction {index.rule.test_fraction}, given splits: {', '.join(index.given) or 'none'})"
        )
    return index


def evaluate(
    model_dir: str | Path,
    dataset_dir: str | Path | None = None,
    index: DatasetIndex | None = None,
    require_onnx: bool = True,
    workers: int | None = None,
    batch_size: int = 256,
) -> Evaluation:
    """Score the model in ``model_dir`` on the test split (``index``, or ``dataset_dir`` with the model's rule).

    With ``require_onnx`` the model must carry its ONNX export, which must reproduce torch's logits
    within ``PARITY_TOLERANCE`` on every test image (``OnnxParityError`` otherwise). Without it, an
    export that is present is still checked (a baseline trained before exports existed has none).
    """
    if index is None:
        if dataset_dir is None:
            raise ValueError("give dataset_dir or index")
        index = split_for_model(dataset_dir, model_dir)
    model, spec = load_model(model_dir)
    if list(index.classes) != list(spec.classes):
        raise ValueError(
            f"model {model_dir} was trained on classes {spec.classes} but the dataset has {list(index.classes)}"
        )
    workers = usable_cpus() if workers is None else workers
    onnx_file = Path(model_dir) / spec.files.get("onnx", "model.onnx")
    if require_onnx and not onnx_file.is_file():
        raise ModelFormatError(
            f"model {model_dir} has no ONNX export ({onnx_file.name}); every Model this library writes carries one, "
            "and serving runs it"
        )
    onnx = OnnxClassifier(onnx_file, threads=usable_cpus()) if onnx_file.is_file() else None
    mean, std = normalization_tensors(spec.normalization, torch.device("cpu"))
    samples = index.samples("test")
    logits = torch.empty((len(samples), len(spec.classes)), dtype=torch.float32)
    largest = 0.0
    with torch.inference_mode():
        for indices, _, images in preprocessed_batches(
            index.root, samples, spec.channels, spec.image_size, workers, "test split", batch_size
        ):
            batch = to_device_batch(images, mean, std, torch.device("cpu"), channels_last=False)
            torch_logits = model(batch).float()
            logits[indices] = torch_logits
            if onnx is not None:
                where = f"test images {samples[indices[0]].path} .. {samples[indices[-1]].path}"
                difference = check_parity(torch_logits.numpy(), onnx.logits(batch.numpy()), where)
                largest = max(largest, difference)
    labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
    result = score(logits, labels, list(spec.classes))
    if onnx is not None:
        result.onnx_max_difference = largest
        log.info("ONNX export matches torch on %d test images (largest logit difference %.3g)", len(samples), largest)
    return result


def promotion_decision(
    candidate: Evaluation, threshold: float, baseline: Evaluation | None = None
) -> PromotionDecision:
    validate_threshold(threshold)
    baseline_accuracy = baseline.accuracy if baseline is not None else None
    if candidate.accuracy < threshold:
        promote, reason = False, f"accuracy {candidate.accuracy:.4f} is below the threshold {threshold:.4f}"
    elif baseline is not None and candidate.accuracy < baseline.accuracy:
        promote, reason = (
            False,
            (f"accuracy {candidate.accuracy:.4f} is worse than the baseline's {baseline.accuracy:.4f}"),
        )
    else:
        promote = True
        reason = f"accuracy {candidate.accuracy:.4f} meets the threshold {threshold:.4f}"
        if baseline is not None:
            reason += f" and is not worse than the baseline's {baseline.accuracy:.4f}"
    return PromotionDecision(promote, reason, candidate.accuracy, threshold, baseline_accuracy)


def metrics_record(candidate: Evaluation, decision: PromotionDecision, baseline: Evaluation | None = None) -> dict:
    """What evaluate reports: metric name -> number, then ``promote`` and ``reason``.

    The same record goes to ML Metadata (``Metrics.log_metric``, and metadata for promote and
    reason) and, as JSON, to the metrics artifact's file (``components.evaluate.metrics_file``).
    ``onnx_max_difference`` is left out when the export was not checked.
    """
    record: dict = {
        "accuracy": round(candidate.accuracy, 6),
        "loss": round(candidate.loss, 6),
        "macro_f1": round(candidate.macro_f1, 6),
        "test_samples": candidate.samples,
    }
    if candidate.onnx_max_difference is not None:
        record["onnx_max_difference"] = float(f"{candidate.onnx_max_difference:.3g}")
    for name, recall in candidate.per_class_recall.items():
        record[f"recall_{name}"] = round(recall, 6)
    if baseline is not None:
        record["baseline_accuracy"] = round(baseline.accuracy, 6)
    record["promote"] = decision.promote
    record["reason"] = decision.reason
    return record

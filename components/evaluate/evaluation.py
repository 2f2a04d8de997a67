"""Score a model on the fixed test split and decide whether it may be promoted.

Plain PyTorch, no KFP. ``evaluate`` returns accuracy, mean loss, macro F1,
per-class recall and the confusion matrix; ``promotion_decision`` applies the
gate: accuracy at or above a threshold and, when a baseline model is given,
not worse than the baseline on the same test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from components.common.dataset import LabelledImages, load_split
from components.common.model import load_model


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    macro_f1: float
    per_class_recall: dict[str, float]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    classes: list[str]
    samples: int


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    accuracy: float
    threshold: float
    baseline_accuracy: float | None = None


def predict_logits(model: nn.Module, spec, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = next(model.parameters()).device
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = spec.normalize(images[start : start + batch_size].to(device))
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs)


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


def evaluate(model_dir: str | Path, dataset_dir: str | Path, test_split: LabelledImages | None = None) -> Evaluation:
    """Score the model in ``model_dir`` on the ``test`` split of ``dataset_dir``."""
    model, spec = load_model(model_dir)
    data = test_split or load_split(dataset_dir, "test")
    if list(data.classes) != list(spec.classes):
        raise ValueError(
            f"model {model_dir} was trained on classes {spec.classes} but the dataset has {list(data.classes)}"
        )
    if list(data.input_shape) != list(spec.input_shape):
        raise ValueError(
            f"model {model_dir} expects input shape {spec.input_shape} but the dataset's images are "
            f"{list(data.input_shape)}"
        )
    return score(predict_logits(model, spec, data.images), data.labels, list(spec.classes))


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


def validate_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"accuracy_threshold must be a number in [0, 1], got {threshold!r}")

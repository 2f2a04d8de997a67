"""The promotion gate: may this candidate replace what serves? Torch-free (argument checks use it).

A candidate is promoted when its test accuracy is at least the threshold and, when there is a
baseline, not below the baseline's accuracy on the same test files (over the classes both know,
when their classes differ). The reason says which rule decided, against what; when a model
trained from scratch on few images falls below the threshold, it says that pretrained weights are
the way for small data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.evaluate.scores import Evaluation, SharedComparison

# Below this many training images per class, a network trained from scratch rarely generalises
# (90 photos of 3 classes, mobilenet_v3_small from scratch: 0.20 accuracy); the digits demo,
# about 126 per class on 8x8 images, trains well from scratch.
SMALL_DATA_IMAGES_PER_CLASS = 100
# The evaluate task's output that holds the promotion decision (true or false): its single parameter output, which
# KFP names Output. kfp.local 2.17 resolves a task output in a dsl.If condition only under that name (README).
DECISION_OUTPUT = "Output"


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    accuracy: float
    threshold: float
    baseline_accuracy: float | None = None


def validate_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"accuracy_threshold must be a number in [0, 1], got {threshold!r}")


def small_data_advice(training: Mapping[str, Any] | None, classes: int) -> str:
    """Advice when the candidate was trained from scratch on few images per class; '' otherwise
    (or when its spec does not say how it was trained: a custom script's)."""
    if not training or training.get("pretrained_weights") or not training.get("train_samples") or classes < 1:
        return ""
    images = int(training["train_samples"])
    if images / classes >= SMALL_DATA_IMAGES_PER_CLASS:
        return ""
    return (
        f"; it was trained from scratch on {images} images ({images / classes:.0f} per class): with so few "
        "images, start from pretrained weights (the pretrained_weights input or parameter: a torchvision "
        "checkpoint for a torchvision architecture, or a Model of this library), which is the way for small data"
    )


def promotion_decision(
    candidate: Evaluation,
    threshold: float,
    comparison: SharedComparison | None = None,
    baseline_label: str = "",
    no_baseline: str = "",
    training: Mapping[str, Any] | None = None,
) -> PromotionDecision:
    """The gate. ``comparison``: candidate and baseline on the same files (None: nothing to compare
    with, for the reason ``no_baseline`` when given); ``baseline_label`` names the baseline;
    ``training``: the candidate spec's ``training`` record, for the small-data advice."""
    validate_threshold(threshold)
    baseline_accuracy = comparison.baseline.accuracy if comparison is not None else None
    named = f" ({baseline_label})" if baseline_label else ""
    where = ""
    if comparison is not None and not comparison.same_classes:
        where = f" on the {comparison.samples} test images of the {len(comparison.classes)} classes both models know"
    if candidate.accuracy < threshold:
        promote = False
        reason = f"accuracy {candidate.accuracy:.4f} is below the threshold {threshold:.4f}"
        reason += small_data_advice(training, len(candidate.classes))
    elif comparison is not None and comparison.candidate.accuracy < comparison.baseline.accuracy:
        promote = False
        reason = (
            f"accuracy {comparison.candidate.accuracy:.4f}{where} is worse than the baseline's "
            f"{comparison.baseline.accuracy:.4f}{named}"
        )
    else:
        promote = True
        reason = f"accuracy {candidate.accuracy:.4f} meets the threshold {threshold:.4f}"
        if comparison is not None and where:
            reason += (
                f" and,{where}, {comparison.candidate.accuracy:.4f} is not worse than the baseline's "
                f"{comparison.baseline.accuracy:.4f}{named}"
            )
        elif comparison is not None:
            reason += f" and is not worse than the baseline's {comparison.baseline.accuracy:.4f}{named}"
        elif no_baseline:
            reason += f"; compared with no baseline: {no_baseline}"
    return PromotionDecision(promote, reason, candidate.accuracy, threshold, baseline_accuracy)

"""Scores of a classifier on test files, from what it predicted: torch-free, so the report reads them too.

``confusion_scores`` turns true and predicted class indices into accuracy, macro F1, per-class
recall and the confusion matrix. ``compare_on_shared`` scores a candidate and a baseline on the
same test files, restricted to the classes both know when their classes differ: a test file whose
true class only one model knows is left out, and a prediction of a class outside the shared ones
counts as a miss (in ``outside``, per true class), since that model did answer it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

OUTSIDE = -1  # a predicted index for a class outside the scored ones


@dataclass
class Evaluation:
    """A model's scores on a set of test files."""

    accuracy: float
    loss: float | None
    macro_f1: float
    per_class_recall: dict[str, float]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class, both in ``classes`` order
    classes: list[str]
    samples: int
    onnx_max_difference: float | None = None  # largest |torch - ONNX| logit; None when not checked
    # Per true class: files predicted as a class outside ``classes`` (only when scoring on shared classes).
    outside: list[int] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Evaluation:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})


@dataclass
class SharedComparison:
    """A candidate and a baseline scored on the same test files, over the classes both know."""

    classes: list[str]  # shared, in the candidate's order
    candidate_only: list[str]  # classes the baseline does not know
    baseline_only: list[str]  # classes the candidate does not know
    candidate: Evaluation
    baseline: Evaluation

    @property
    def same_classes(self) -> bool:
        return not self.candidate_only and not self.baseline_only

    @property
    def samples(self) -> int:
        return self.candidate.samples

    def record(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "candidate_only": self.candidate_only,
            "baseline_only": self.baseline_only,
            "candidate": self.candidate.record(),
            "baseline": self.baseline.record(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SharedComparison:
        return cls(
            classes=list(record["classes"]),
            candidate_only=list(record["candidate_only"]),
            baseline_only=list(record["baseline_only"]),
            candidate=Evaluation.from_record(record["candidate"]),
            baseline=Evaluation.from_record(record["baseline"]),
        )


def confusion_scores(true: Sequence[int], predicted: Sequence[int], classes: Sequence[str]) -> Evaluation:
    """Scores from true and predicted indices into ``classes`` (``OUTSIDE`` for a class not in them)."""
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predictions")
    k = len(classes)
    confusion = [[0] * k for _ in range(k)]
    outside = [0] * k
    for t, p in zip(true, predicted, strict=True):
        if p == OUTSIDE:
            outside[t] += 1
        else:
            confusion[t][p] += 1
    recall, f1 = {}, []
    for i, name in enumerate(classes):
        true_positive = confusion[i][i]
        support = sum(confusion[i]) + outside[i]
        predicted_count = sum(row[i] for row in confusion)
        r = true_positive / support if support else 0.0
        p = true_positive / predicted_count if predicted_count else 0.0
        recall[name] = r
        f1.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    samples = len(true)
    correct = sum(confusion[i][i] for i in range(k))
    return Evaluation(
        accuracy=correct / samples if samples else 0.0,
        loss=None,
        macro_f1=sum(f1) / k if k else 0.0,
        per_class_recall=recall,
        confusion_matrix=confusion,
        classes=list(classes),
        samples=samples,
        outside=outside if any(outside) else [],
    )


def compare_on_shared(
    true_classes: Sequence[str],
    candidate_predicted: Sequence[str],
    baseline_predicted: Sequence[str],
    candidate_classes: Sequence[str],
    baseline_classes: Sequence[str],
) -> SharedComparison | None:
    """Both models scored on the test files whose true class both know; None when they share no class
    or no test file has a shared class. Predictions are class names (each model's own)."""
    known = set(baseline_classes)
    shared = [name for name in candidate_classes if name in known]
    position = {name: i for i, name in enumerate(shared)}
    kept = [i for i, name in enumerate(true_classes) if name in position]
    if not kept:
        return None
    true = [position[true_classes[i]] for i in kept]

    def scored(predicted: Sequence[str]) -> Evaluation:
        return confusion_scores(true, [position.get(predicted[i], OUTSIDE) for i in kept], shared)

    return SharedComparison(
        classes=shared,
        candidate_only=[name for name in candidate_classes if name not in known],
        baseline_only=[name for name in baseline_classes if name not in set(candidate_classes)],
        candidate=scored(candidate_predicted),
        baseline=scored(baseline_predicted),
    )

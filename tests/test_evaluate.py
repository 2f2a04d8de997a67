"""Evaluation metrics and the promotion gate."""

from __future__ import annotations

import pytest
import torch

from components.evaluate.evaluation import Evaluation, evaluate, promotion_decision, score
from components.train.trainer import TrainConfig, train


def test_score_on_known_predictions():
    classes = ["cat", "dog", "owl"]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    result = score(logits, labels, classes)
    assert result.accuracy == pytest.approx(4 / 6)
    assert result.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result.per_class_recall == pytest.approx({"cat": 0.5, "dog": 1.0, "owl": 0.5})
    # precision: cat 1/2, dog 2/3, owl 1/1 → F1: 0.5, 0.8, 2/3
    assert result.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert result.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))


def evaluation(accuracy: float) -> Evaluation:
    return Evaluation(accuracy, 0.1, accuracy, {}, [], [], 100)


@pytest.mark.parametrize(
    "accuracy, threshold, baseline, promote, reason",
    [
        (0.97, 0.95, None, True, "meets the threshold"),
        (0.95, 0.95, None, True, "meets the threshold"),
        (0.94, 0.95, None, False, "below the threshold"),
        (0.97, 0.95, 0.96, True, "not worse than the baseline"),
        (0.97, 0.95, 0.97, True, "not worse than the baseline"),
        (0.96, 0.95, 0.97, False, "worse than the baseline's 0.9700"),
    ],
)
def test_promotion_gate(accuracy, threshold, baseline, promote, reason):
    decision = promotion_decision(
        evaluation(accuracy), threshold, evaluation(baseline) if baseline is not None else None
    )
    assert decision.promote is promote
    assert reason in decision.reason


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "high"])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match=r"accuracy_threshold must be a number in \[0, 1\]"):
        promotion_decision(evaluation(0.9), threshold)


def test_evaluate_against_baseline_on_the_same_split(digits_dir, tmp_path):
    train(digits_dir, tmp_path / "weak", TrainConfig(epochs=1, learning_rate=1e-4))
    train(digits_dir, tmp_path / "strong", TrainConfig(epochs=4))
    weak, strong = evaluate(tmp_path / "weak", digits_dir), evaluate(tmp_path / "strong", digits_dir)
    assert weak.samples == strong.samples == 359
    assert strong.accuracy > weak.accuracy
    assert promotion_decision(strong, 0.5, weak).promote
    assert not promotion_decision(weak, 0.0, strong).promote

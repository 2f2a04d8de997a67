"""Evaluation metrics, the ONNX parity check, the model's own split, and the promotion gate."""

from __future__ import annotations

import shutil

import pytest
import torch

from components.common.onnx_model import OnnxParityError, check_parity
from components.common.spec import ModelFormatError
from components.evaluate.evaluation import Evaluation, evaluate, promotion_decision, score, split_for_model
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


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    train(digits_dir, root / "weak", TrainConfig(epochs=1, learning_rate=1e-4, augment=False))
    train(digits_dir, root / "strong", TrainConfig(epochs=4, augment=False))
    return root


def test_evaluate_against_baseline_on_the_same_split(digits_dir, trained):
    index = split_for_model(digits_dir, trained / "strong")
    weak, strong = evaluate(trained / "weak", index=index), evaluate(trained / "strong", index=index)
    assert weak.samples == strong.samples == 359  # labels.csv's own test split
    assert strong.accuracy > weak.accuracy
    assert 0 <= strong.onnx_max_difference <= 1e-4
    assert promotion_decision(strong, 0.5, weak).promote
    assert not promotion_decision(weak, 0.0, strong).promote


def test_an_onnx_export_that_disagrees_with_torch_fails_loudly(digits_dir, trained, tmp_path):
    """Weights changed after the export: the ONNX model no longer computes what torch computes."""
    tampered = tmp_path / "tampered"
    shutil.copytree(trained / "strong", tampered)
    state = torch.load(tampered / "weights.pt", weights_only=True)
    state["head.2.bias"] += 0.01
    torch.save(state, tampered / "weights.pt")
    with pytest.raises(OnnxParityError, match=r"differ from torch's by up to .* on test images"):
        evaluate(tampered, digits_dir)


def test_a_model_without_its_onnx_export_is_refused(digits_dir, trained, tmp_path):
    stripped = tmp_path / "stripped"
    shutil.copytree(trained / "strong", stripped)
    (stripped / "model.onnx").unlink()
    with pytest.raises(ModelFormatError, match=r"has no ONNX export \(model.onnx\)"):
        evaluate(stripped, digits_dir)
    assert evaluate(stripped, digits_dir, require_onnx=False).onnx_max_difference is None  # e.g. an old baseline


def test_a_directory_without_spec_is_named(digits_dir, tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"spec.json not found: .* components.train.contract.save_model"):
        evaluate(tmp_path, digits_dir)


@pytest.mark.parametrize(
    "expected, actual, ok",
    [
        ([[0.5, -0.5]], [[0.5 + 9e-5, -0.5]], True),
        ([[0.5, -0.5]], [[0.5 + 2e-4, -0.5]], False),
        ([[300.0, -1.0]], [[300.0 + 0.02, -1.0]], True),  # float32 at 300: relative, not absolute
        ([[300.0, -1.0]], [[300.0 + 0.05, -1.0]], False),
        ([[1.0, float("nan")]], [[1.0, 0.0]], False),
    ],
)
def test_parity_tolerance_is_relative_to_the_logits_magnitude(expected, actual, ok):
    import numpy as np

    if ok:
        check_parity(np.array(expected), np.array(actual), "a batch")
    else:
        with pytest.raises(OnnxParityError):
            check_parity(np.array(expected), np.array(actual), "a batch")

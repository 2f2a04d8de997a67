"""Evaluation metrics, the ONNX parity check, the model's own split, the baseline, and the promotion gate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from components.common.onnx_model import OnnxParityError, check_parity
from components.common.spec import ModelFormatError
from components.evaluate.baseline import BaselineError, resolve_baseline
from components.evaluate.evaluation import (
    compare,
    evaluate,
    prediction_rows,
    run_model,
    score,
    score_outputs,
    split_for_model,
)
from components.evaluate.gate import SMALL_DATA_IMAGES_PER_CLASS, promotion_decision
from components.evaluate.scores import OUTSIDE, Evaluation, SharedComparison, compare_on_shared, confusion_scores


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
    assert result.outside == []


def test_a_prediction_outside_the_scored_classes_is_a_miss_counted_apart():
    result = confusion_scores([0, 0, 1], [0, OUTSIDE, 1], ["cat", "dog"])
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.confusion_matrix == [[1, 0], [0, 1]]
    assert result.outside == [1, 0]
    assert result.per_class_recall == {"cat": 0.5, "dog": 1.0}


def test_shared_classes_only_are_compared_when_the_classes_differ():
    true = ["cat", "dog", "owl", "cat", "dog"]
    candidate = ["cat", "owl", "owl", "cat", "dog"]  # knows cat, dog, owl
    baseline = ["cat", "dog", "fox", "fox", "dog"]  # knows cat, dog, fox
    shared = compare_on_shared(true, candidate, baseline, ["cat", "dog", "owl"], ["fox", "dog", "cat"])
    assert shared.classes == ["cat", "dog"]  # in the candidate's order
    assert (shared.candidate_only, shared.baseline_only, shared.same_classes) == (["owl"], ["fox"], False)
    assert shared.samples == 4  # the owl image is left out: the baseline cannot know it
    assert shared.candidate.accuracy == pytest.approx(3 / 4)  # its dog → owl counts as a miss
    assert shared.candidate.outside == [0, 1]
    assert shared.baseline.accuracy == pytest.approx(3 / 4)  # its cat → fox counts as a miss
    assert shared.baseline.outside == [1, 0]
    assert compare_on_shared(["owl"], ["owl"], ["fox"], ["owl"], ["fox"]) is None


def test_with_the_same_classes_the_shared_scores_are_the_full_ones():
    true, predicted = ["a", "b", "b", "a"], ["a", "b", "a", "a"]
    shared = compare_on_shared(true, predicted, predicted, ["a", "b"], ["b", "a"])
    full = confusion_scores([0, 1, 1, 0], [0, 1, 0, 0], ["a", "b"])
    assert shared.same_classes and shared.candidate == full == shared.baseline


def evaluation(accuracy: float) -> Evaluation:
    return Evaluation(accuracy, 0.1, accuracy, {}, [], ["a", "b"], 100)


def against(candidate: float, baseline: float, same_classes: bool = True) -> SharedComparison:
    return SharedComparison(["a", "b"], [] if same_classes else ["c"], [], evaluation(candidate), evaluation(baseline))


@pytest.mark.parametrize(
    "accuracy, threshold, baseline, promote, reason",
    [
        (0.97, 0.95, None, True, "meets the threshold"),
        (0.95, 0.95, None, True, "meets the threshold"),
        (0.94, 0.95, None, False, "below the threshold"),
        (0.97, 0.95, 0.96, True, "not worse than the baseline"),
        (0.97, 0.95, 0.97, True, "not worse than the baseline"),
        (0.96, 0.95, 0.97, False, "worse than the baseline's 0.9700 (the production model: digits version 3)"),
    ],
)
def test_promotion_gate(accuracy, threshold, baseline, promote, reason):
    comparison = against(accuracy, baseline) if baseline is not None else None
    decision = promotion_decision(
        evaluation(accuracy), threshold, comparison, baseline_label="the production model: digits version 3"
    )
    assert decision.promote is promote
    assert reason in decision.reason


def test_the_gate_says_what_it_compared_with():
    lonely = promotion_decision(evaluation(0.97), 0.9, None, no_baseline="no version of digits is in production yet")
    assert lonely.reason == (
        "accuracy 0.9700 meets the threshold 0.9000; "
        "compared with no baseline: no version of digits is in production yet"
    )
    differing = against(0.9, 0.95, same_classes=False)
    refused = promotion_decision(evaluation(0.97), 0.9, differing, baseline_label="the model at gs://m/v2")
    assert not refused.promote
    assert refused.reason == (
        "accuracy 0.9000 on the 100 test images of the 2 classes both models know is worse than the baseline's "
        "0.9500 (the model at gs://m/v2)"
    )


@pytest.mark.parametrize(
    "training, advised",
    [
        ({"pretrained_weights": "", "train_samples": 63}, True),  # 90 photos of 3 classes, from scratch
        ({"pretrained_weights": "", "train_samples": 3 * SMALL_DATA_IMAGES_PER_CLASS}, False),
        ({"pretrained_weights": "/w/resnet18.pth", "train_samples": 63}, False),
        ({}, False),  # a custom script's spec: how it was trained is unknown
    ],
)
def test_below_the_threshold_from_scratch_on_few_images_the_reason_points_to_pretrained_weights(training, advised):
    candidate = Evaluation(0.2, 1.0, 0.2, {}, [], ["a", "b", "c"], 27)
    reason = promotion_decision(candidate, 0.95, training=training).reason
    assert reason.startswith("accuracy 0.2000 is below the threshold 0.9500")
    assert ("start from pretrained weights" in reason) is advised
    if advised:
        assert "trained from scratch on 63 images (21 per class)" in reason


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "high", True])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match=r"accuracy_threshold must be a number in \[0, 1\]"):
        promotion_decision(evaluation(0.9), threshold)


# --- the baseline_model contract ------------------------------------------------------------------


def test_no_baseline_is_an_empty_model_that_says_why(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (empty, tmp_path / "never-downloaded"):
        baseline = resolve_baseline(path, {"baseline": "none", "reason": "nothing in production yet"})
        assert not baseline.present and baseline.reason == "nothing in production yet"
        assert baseline.label() == "no baseline"
    assert resolve_baseline(None, None).reason == "no baseline_model was given"


def test_a_baseline_model_is_named_by_its_registry_metadata(tmp_path):
    (tmp_path / "spec.json").write_text("{}")
    metadata = {"baseline": "production", "registry": "mlflow", "model_name": "digits", "version": 3, "x": 1}
    baseline = resolve_baseline(tmp_path, metadata, uri="s3://m/3")
    assert baseline.present and baseline.model_dir == tmp_path
    assert baseline.source == {
        "baseline": "production",
        "registry": "mlflow",
        "model_name": "digits",
        "version": 3,
        "uri": "s3://m/3",
    }
    assert baseline.label() == "the production model: digits version 3 in the mlflow registry"
    imported = resolve_baseline(tmp_path, {}, uri="gs://models/v2")  # a dsl.importer without metadata
    assert imported.kind == "uri" and imported.label() == "the model at gs://models/v2"


@pytest.mark.parametrize(
    "files, metadata, message",
    [
        ([], {"baseline": "production"}, r"is empty but its metadata says baseline='production'"),
        ([], {"baseline": "none"}, r"says baseline 'none' but gives no reason"),
        ([], {"baseline": "none", "reason": "  "}, r"gives no reason"),
        (["spec.json"], {"baseline": "none", "reason": "r"}, r"says baseline 'none' \(r\) but its directory is not"),
        ([], {"baseline": "staging"}, r"baseline='staging'; expected one of \('none', 'production', 'uri'\)"),
    ],
)
def test_a_baseline_that_breaks_the_contract_is_refused(tmp_path, files, metadata, message):
    for name in files:
        (tmp_path / name).write_text("{}")
    with pytest.raises(BaselineError, match=message):
        resolve_baseline(tmp_path, metadata, uri="minio://b/baseline")


# --- real models ---------------------------------------------------------------------------------


def test_evaluate_against_baseline_on_the_same_split(digits_dir, trained_models):
    index = split_for_model(digits_dir, trained_models / "strong")
    weak, strong = evaluate(trained_models / "weak", index=index), evaluate(trained_models / "strong", index=index)
    assert weak.samples == strong.samples == 359  # labels.csv's own test split
    assert strong.accuracy > weak.accuracy
    assert 0 <= strong.onnx_max_difference <= 1e-4
    weak_outputs, strong_outputs = (
        run_model(trained_models / "weak", index),
        run_model(trained_models / "strong", index),
    )
    strong_over_weak = compare(strong_outputs, weak_outputs, index)
    full = score_outputs(strong_outputs, index)
    assert strong_over_weak.same_classes and strong_over_weak.samples == 359
    assert strong_over_weak.candidate.confusion_matrix == full.confusion_matrix
    assert strong_over_weak.baseline.accuracy == pytest.approx(weak.accuracy)
    assert promotion_decision(strong, 0.5, strong_over_weak).promote
    # A baseline that is better on purpose: the gate refuses the candidate.
    refused = promotion_decision(weak, 0.0, compare(weak_outputs, strong_outputs, index), "the production model")
    assert not refused.promote and "is worse than the baseline's" in refused.reason


def test_the_predictions_are_what_the_scores_were_computed_from(digits_dir, trained_models):
    index = split_for_model(digits_dir, trained_models / "strong")
    outputs = run_model(trained_models / "strong", index)
    rows = prediction_rows(outputs, index)
    assert [row.path for row in rows] == [sample.path for sample in index.samples("test")]
    assert sum(row.correct for row in rows) / len(rows) == pytest.approx(score_outputs(outputs, index).accuracy)
    assert all(row.probability >= row.true_class_probability for row in rows)
    assert all(row.probability == row.true_class_probability for row in rows if row.correct)
    assert {row.true_class for row in rows} == set(index.classes)


def test_a_baseline_with_other_classes_is_compared_on_the_shared_ones(digits_dir, trained_models, tmp_path):
    """The same network with class '9' renamed: it answers 'nine', which the candidate does not know."""
    renamed = tmp_path / "renamed"
    shutil.copytree(trained_models / "strong", renamed)
    spec = json.loads((renamed / "spec.json").read_text())
    spec["classes"] = [name if name != "9" else "nine" for name in spec["classes"]]
    (renamed / "spec.json").write_text(json.dumps(spec))
    index = split_for_model(digits_dir, trained_models / "strong")
    candidate, baseline = run_model(trained_models / "strong", index), run_model(renamed, index, require_onnx=False)
    shared = compare(candidate, baseline, index)
    nines = sum(1 for s in index.samples("test") if index.classes[s.label] == "9")
    assert shared.classes == [c for c in index.classes if c != "9"]
    assert (shared.candidate_only, shared.baseline_only) == (["9"], ["nine"])
    assert shared.samples == len(index.samples("test")) - nines
    # The same weights answer the same: where the candidate says '9', the baseline says 'nine'; both are
    # misses outside the shared classes.
    assert shared.candidate.confusion_matrix == shared.baseline.confusion_matrix
    assert shared.candidate.outside == shared.baseline.outside
    assert shared.candidate.accuracy == shared.baseline.accuracy


def test_an_onnx_export_that_disagrees_with_torch_fails_loudly(digits_dir, trained_models, tmp_path):
    """Weights changed after the export: the ONNX model no longer computes what torch computes."""
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_models / "strong", tampered)
    state = torch.load(tampered / "weights.pt", weights_only=True)
    state["head.2.bias"] += 0.01
    torch.save(state, tampered / "weights.pt")
    with pytest.raises(OnnxParityError, match=r"differ from torch's by up to .* on test images"):
        evaluate(tampered, digits_dir)


def test_a_model_without_its_onnx_export_is_refused(digits_dir, trained_models, tmp_path):
    stripped = tmp_path / "stripped"
    shutil.copytree(trained_models / "strong", stripped)
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

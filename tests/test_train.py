"""The train module: accuracy, reproducibility, resume after a crash, parameter checks."""

from __future__ import annotations

import pytest
import torch

from components.common.model import load_model, load_spec
from components.evaluate.evaluation import evaluate
from components.train.trainer import CHECKPOINT_FILE, TrainConfig, train

FAST = TrainConfig(epochs=3, batch_size=64, seed=7)


def weights(model_dir) -> dict[str, torch.Tensor]:
    model, _ = load_model(model_dir)
    return model.state_dict()


def assert_same_weights(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_default_training_reaches_095_test_accuracy(digits_dir, tmp_path):
    result = train(digits_dir, tmp_path / "model", TrainConfig(), dataset_info={"commit": "abc", "md5": {"x": "y"}})
    evaluation = evaluate(tmp_path / "model", digits_dir)
    assert evaluation.accuracy >= 0.95
    assert len(result.history) == TrainConfig().epochs
    assert result.device == "cpu"


def test_spec_records_what_serving_and_audits_need(digits_dir, tmp_path):
    train(digits_dir, tmp_path / "model", FAST, dataset_info={"commit": "c0ffee", "md5": {"data/raw": "m.dir"}})
    spec = load_spec(tmp_path / "model")
    assert spec.architecture == "small_cnn"
    assert spec.classes == [str(i) for i in range(10)]
    assert spec.input_shape == [1, 8, 8]
    assert set(spec.normalization) == {"mean", "std"}
    assert spec.dataset == {"commit": "c0ffee", "md5": {"data/raw": "m.dir"}}
    assert spec.versions["torch"] == torch.__version__ and spec.versions["library"]
    assert [row["epoch"] for row in spec.training["history"]] == [1, 2, 3]
    assert spec.training["parameters"]["seed"] == 7


def test_same_seed_same_weights_other_seed_other_weights(digits_dir, tmp_path):
    train(digits_dir, tmp_path / "a", FAST)
    train(digits_dir, tmp_path / "b", FAST)
    train(digits_dir, tmp_path / "c", TrainConfig(epochs=3, seed=8))
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["head.2.weight"], weights(tmp_path / "c")["head.2.weight"])


class Crash(RuntimeError):
    pass


def test_resume_after_crash_gives_the_uninterrupted_result(digits_dir, tmp_path):
    config = TrainConfig(epochs=4, seed=3)
    train(digits_dir, tmp_path / "straight", config)

    def crash_after_epoch_2(result):
        if result.epoch == 2:
            raise Crash("node lost")

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        train(digits_dir, tmp_path / "resumed", config, checkpoint_dir=checkpoints, on_epoch_end=crash_after_epoch_2)
    assert not (tmp_path / "resumed").exists()  # no model that looks complete
    assert (checkpoints / CHECKPOINT_FILE).is_file()

    epochs_run = []
    result = train(
        digits_dir,
        tmp_path / "resumed",
        config,
        checkpoint_dir=checkpoints,
        on_epoch_end=lambda r: epochs_run.append(r.epoch),
    )
    assert result.resumed_from_epoch == 2
    assert epochs_run == [3, 4]
    assert [row.epoch for row in result.history] == [1, 2, 3, 4]
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))


def test_checkpoint_for_other_parameters_is_not_resumed(digits_dir, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    train(digits_dir, tmp_path / "first", TrainConfig(epochs=1, seed=1), checkpoint_dir=checkpoints)
    result = train(digits_dir, tmp_path / "second", TrainConfig(epochs=1, seed=2), checkpoint_dir=checkpoints)
    assert result.resumed_from_epoch == 0


def test_failed_training_leaves_no_model(digits_dir, tmp_path):
    def fail(result):
        raise Crash("out of memory")

    with pytest.raises(Crash):
        train(digits_dir, tmp_path / "model", TrainConfig(epochs=1), on_epoch_end=fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"batch_size": -1}, r"batch_size must be an integer >= 1, got -1"),
        ({"learning_rate": 0}, r"learning_rate must be a number in \(0, 10\), got 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\), got 1.0"),
        ({"architecture": "resnet9000"}, r"architecture must be one of small_cnn, got 'resnet9000'"),
    ],
)
def test_bad_parameters_are_named(digits_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(digits_dir, tmp_path / "model", TrainConfig(**overrides))
    assert not (tmp_path / "model").exists()


def test_metric_values_per_epoch_and_final():
    from components.train.trainer import metric_values

    history = [
        {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": None, "val_accuracy": None},
        {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.75, "val_loss": None, "val_accuracy": None},
    ]
    assert metric_values(history) == {
        "train_loss_epoch_1": 1.0,
        "train_accuracy_epoch_1": 0.5,
        "train_loss_epoch_2": 0.5,
        "train_accuracy_epoch_2": 0.75,
        "train_loss": 0.5,
        "train_accuracy": 0.75,
    }

"""The train module: accuracy, reproducibility, resume, streaming, the optimisation options, parameter checks."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.common.dataset import DatasetFormatError
from components.common.model import load_model
from components.common.spec import load_spec
from components.evaluate.evaluation import evaluate
from components.train.trainer import CHECKPOINT_FILE, TrainConfig, lr_factor, train_model
from tests.support.photos import write_photo_dataset

# The 8x8 digits are neither flip-invariant nor croppable: the demo trains them without augmentation.
FAST = TrainConfig(epochs=3, batch_size=64, seed=7, augment=False)


def weights(model_dir) -> dict[str, torch.Tensor]:
    model, _ = load_model(model_dir)
    return model.state_dict()


def assert_same_weights(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Crops of real photos, 3 classes, mixed sizes, modes and formats, in class folders."""
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "food", per_class=14)


@pytest.mark.slow
def test_default_training_reaches_095_test_accuracy(digits_dir, tmp_path):
    config = TrainConfig(augment=False)
    result = train_model(digits_dir, tmp_path / "model", config, dataset_info={"commit": "abc", "md5": {"x": "y"}})
    evaluation = evaluate(tmp_path / "model", digits_dir)
    assert evaluation.accuracy >= 0.95
    assert len(result.history) == config.epochs
    assert result.device == "cpu"


@pytest.fixture(scope="module")
def fast_model(digits_dir, tmp_path_factory) -> Path:
    """The digits trained with ``FAST``, and a dataset lineage, once for the tests that read such a model."""
    model_dir = tmp_path_factory.mktemp("fast") / "model"
    train_model(digits_dir, model_dir, FAST, dataset_info={"commit": "c0ffee", "md5": {"data/raw": "m.dir"}})
    return model_dir


def test_spec_records_what_serving_and_audits_need(fast_model):
    spec = load_spec(fast_model)
    assert spec.architecture == "small_cnn"
    assert spec.classes == [str(i) for i in range(10)]
    assert spec.input_shape == [1, 8, 8]  # automatic: every digit is an 8x8 grayscale PNG
    assert set(spec.normalization) == {"mean", "std"}
    assert spec.preprocessing["image_size"] == [8, 8] and spec.preprocessing["channels"] == 1
    assert spec.preprocessing["train_augmentation"] is None
    assert spec.preprocessing["normalization_source"] == "the training images"
    assert spec.split["given"] == ["train", "test"] and spec.split["validation_fraction"] == 0.1
    assert spec.split["counts"]["test"] == 359
    assert spec.files == {"weights": "weights.pt", "onnx": "model.onnx"}
    assert spec.dataset == {"commit": "c0ffee", "md5": {"data/raw": "m.dir"}}
    assert spec.versions["torch"] == torch.__version__ and spec.versions["torchvision"]
    assert [row["epoch"] for row in spec.training["history"]] == [1, 2, 3]
    assert spec.training["parameters"]["seed"] == 7 and spec.training["data_path"] == "in memory"
    # The training images' pixels (1302 of them, the val split left out), what serving checks JSON arrays against.
    assert spec.input_range == {
        "scale": [0, 255],
        "min": 0,
        "max": 255,
        "typical_max": 239,
        "typical_max_percentile": 1,
        "images": 1302,
    }
    assert sorted(p.name for p in fast_model.iterdir()) == ["model.onnx", "spec.json", "weights.pt"]


def test_the_export_and_its_check_are_logged_as_they_start_and_end(digits_dir, tmp_path, caplog, monkeypatch):
    """They take seconds to a minute after the last epoch; the log says what is happening, and for how long.
    The start says how many CPU threads train: OMP_NUM_THREADS's, for a process alone."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO):
            train_model(digits_dir, tmp_path / "model", TrainConfig(epochs=1, augment=False))
    finally:
        torch.set_num_threads(threads)
    expected = [
        r"starting training small_cnn: .*, 1 process\(es\), device cpu, 3 CPU thread\(s\) each, ",
        r"epoch 1/1  train_loss",
        r"training done: 1 epoch\(s\) in \d+\.\d s",
        r"exporting small_cnn to ONNX \(torch.export, then torch.onnx\) \.\.\.",
        r"ONNX export written in \d+\.\d s \(model.onnx, \d+\.\d MB\)",
        r"checking the ONNX export against torch on 8 images \.\.\.",
        r"the ONNX export matches torch \(largest logit difference .+\) in \d+\.\d s",
        rf"model written to {re.escape(str(tmp_path / 'model'))} in \d+\.\d s",
    ]
    lines = [record.getMessage() for record in caplog.records]
    positions = [next((i for i, line in enumerate(lines) if re.match(pattern, line)), None) for pattern in expected]
    assert None not in positions and positions == sorted(positions), list(zip(expected, positions, strict=True))


def test_same_seed_same_weights_other_seed_other_weights(digits_dir, fast_model, tmp_path):
    train_model(digits_dir, tmp_path / "b", FAST)
    train_model(digits_dir, tmp_path / "c", TrainConfig(epochs=3, seed=8, augment=False))
    assert_same_weights(weights(fast_model), weights(tmp_path / "b"))
    assert not torch.equal(weights(fast_model)["head.2.weight"], weights(tmp_path / "c")["head.2.weight"])


class Crash(RuntimeError):
    pass


def test_resume_after_crash_gives_the_uninterrupted_result(digits_dir, tmp_path):
    """With every option that keeps state across epochs: augmentation in worker processes, a cosine
    schedule with warmup, label smoothing, gradient accumulation and early stopping's best weights."""
    config = TrainConfig(
        epochs=4,
        seed=3,
        augment=True,
        workers=2,
        lr_schedule="cosine",
        warmup_epochs=1,
        label_smoothing=0.1,
        gradient_accumulation_steps=2,
        early_stopping_patience=10,
    )
    train_model(digits_dir, tmp_path / "straight", config)

    def crash_after_epoch_2(result):
        if result.epoch == 2:
            raise Crash("node lost")

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        train_model(
            digits_dir, tmp_path / "resumed", config, checkpoint_dir=checkpoints, on_epoch_end=crash_after_epoch_2
        )
    assert not (tmp_path / "resumed").exists()  # no model that looks complete
    assert (checkpoints / CHECKPOINT_FILE).is_file()

    epochs_run = []
    result = train_model(
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
    train_model(
        digits_dir, tmp_path / "first", TrainConfig(epochs=1, seed=1, augment=False), checkpoint_dir=checkpoints
    )
    result = train_model(
        digits_dir, tmp_path / "second", TrainConfig(epochs=1, seed=2, augment=False), checkpoint_dir=checkpoints
    )
    assert result.resumed_from_epoch == 0


def test_streaming_path_trains_what_the_in_memory_path_trains(digits_dir, tmp_path, caplog):
    """A budget smaller than the decoded data streams it; without augmentation the batches, and so the
    weights, are the same as when the decoded images are held in memory."""
    config = TrainConfig(epochs=2, seed=5, augment=False, optimizer="sgd", learning_rate=0.05)
    with caplog.at_level(logging.INFO, logger="components.train.trainer"):
        streamed = train_model(
            digits_dir, tmp_path / "streamed", TrainConfig(**{**config.__dict__, "memory_budget": "64Ki"})
        )
    assert "data path: streaming: 1438 decoded images would take 89.9 KiB, more than the memory budget" in caplog.text
    assert streamed.spec.training["data_path"] == "streamed"
    in_memory = train_model(digits_dir, tmp_path / "in-memory", config)
    assert in_memory.spec.training["data_path"] == "in memory"
    assert streamed.spec.input_range == in_memory.spec.input_range and in_memory.spec.input_range["images"] == 1302
    assert_same_weights(weights(tmp_path / "streamed"), weights(tmp_path / "in-memory"))


def test_augmented_batches_do_not_depend_on_the_number_of_workers(photos, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, image_size=24, augment=True, memory_budget="1Ki", seed=2)
    train_model(photos, tmp_path / "none", TrainConfig(**{**config.__dict__, "workers": 0}))
    train_model(photos, tmp_path / "two", TrainConfig(**{**config.__dict__, "workers": 2}))
    assert_same_weights(weights(tmp_path / "none"), weights(tmp_path / "two"))


def test_photos_of_every_size_and_mode_train_at_the_chosen_size(photos, tmp_path):
    result = train_model(photos, tmp_path / "model", TrainConfig(epochs=1, batch_size=8, image_size=20, workers=1))
    spec = result.spec
    assert spec.input_shape == [3, 20, 20] and spec.classes == ["cat", "coffee", "rocket"]
    assert spec.preprocessing["train_augmentation"]["horizontal_flip"] == 0.5
    assert spec.split["layout"] == "class-folders" and spec.split["given"] == []


def test_gradient_accumulation_takes_one_optimizer_step_per_group(digits_dir, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    config = TrainConfig(epochs=2, augment=False, gradient_accumulation_steps=4)  # 21 batches -> 6 steps
    train_model(digits_dir, tmp_path / "model", config, checkpoint_dir=checkpoints)
    state = torch.load(checkpoints / CHECKPOINT_FILE, weights_only=False)["optimizer"]["state"]
    assert {int(entry["step"]) for entry in state.values()} == {2 * 6}


def test_learning_rate_schedule():
    cosine = lr_factor(TrainConfig(epochs=4, lr_schedule="cosine", warmup_epochs=1), steps_per_epoch=10)
    assert [round(cosine(s), 3) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warmup over 10 steps
    assert cosine(10) == pytest.approx(1.0) and cosine(25) == pytest.approx(0.5) and cosine(40) == pytest.approx(0)
    constant = lr_factor(TrainConfig(epochs=4), steps_per_epoch=10)
    assert {constant(s) for s in range(40)} == {1.0}


def test_early_stopping_keeps_the_best_epochs_weights(digits_dir, tmp_path):
    config = TrainConfig(epochs=10, augment=False, learning_rate=0.02, early_stopping_patience=2, seed=1)
    result = train_model(digits_dir, tmp_path / "model", config)
    losses = [row.val_loss for row in result.history]
    best = result.spec.training["best_epoch"]
    assert result.spec.training["stopped_early"] and len(losses) == best + 2 < 10
    assert losses[best - 1] == min(losses)
    # The saved weights are the best epoch's: their validation loss is the one recorded for it.
    from components.common.dataset import index_dataset
    from components.common.loader import decode_pass, normalization_tensors

    spec = result.spec
    index = index_dataset(digits_dir)
    val = decode_pass(index.root, index.samples("val"), 1, (8, 8), 0, keep=True)
    model, _ = load_model(tmp_path / "model")
    mean, std = normalization_tensors(spec.normalization, torch.device("cpu"))
    labels = torch.tensor([s.label for s in index.samples("val")])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model((val.images.float() / 255 - mean) / std), labels)
    assert float(loss) == pytest.approx(losses[best - 1], rel=1e-4)


def test_unreadable_image_fails_before_training_and_names_it(photos, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(photos, data)
    victim = sorted((data / "coffee").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    (data / "cat" / "notes.png").write_text("not an image")
    epochs = []
    with pytest.raises(DatasetFormatError) as raised:
        train_model(data, tmp_path / "model", TrainConfig(image_size=16), on_epoch_end=epochs.append)
    message = str(raised.value)
    assert "2 of" in message and f"coffee/{victim.name}" in message and "cat/notes.png" in message
    assert epochs == [] and not (tmp_path / "model").exists()


def test_failed_training_leaves_no_model(digits_dir, tmp_path):
    def fail(result):
        raise Crash("out of memory")

    with pytest.raises(Crash):
        train_model(digits_dir, tmp_path / "model", TrainConfig(epochs=1, augment=False), on_epoch_end=fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"batch_size": -1}, r"batch_size must be an integer >= 1, got -1"),
        ({"learning_rate": 0}, r"learning_rate must be a number in \(0, 10\), got 0"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be a number in \[0, 1\), got 1.0"),
        ({"architecture": "resnet9000"}, r"architecture must be one of small_cnn, resnet18, .*got 'resnet9000'"),
        ({"model_factory": "not a factory"}, r"model_factory must look like 'package.module:function'"),
        ({"model_factory": "os.path"}, r"model_factory must look like 'package.module:function', got 'os.path'"),
        ({"image_size": 0}, r"image_size must be an integer >= 1 or -1 for automatic, got 0"),
        ({"channels": 2}, r"channels must be 1, 3 or -1 for automatic, got 2"),
        ({"optimizer": "adam"}, r"optimizer must be one of adamw, sgd, got 'adam'"),
        ({"lr_schedule": "step"}, r"lr_schedule must be one of constant, cosine"),
        ({"normalization": "imagenet"}, r"normalization must be one of auto, data, pretrained"),
        ({"fine_tune": "backbone"}, r"fine_tune must be one of full, head"),
        ({"gradient_accumulation_steps": 0}, r"gradient_accumulation_steps must be an integer >= 1"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
        ({"memory_budget": "lots"}, r"memory_budget must be a Kubernetes quantity such as '512Mi'"),
        ({"test_fraction": 0.5, "validation_fraction": 0.5}, r"test_fraction \+ validation_fraction must be below 1"),
    ],
)
def test_bad_parameters_are_named(digits_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_model(digits_dir, tmp_path / "model", TrainConfig(**overrides))
    assert not (tmp_path / "model").exists()


def single_class(photos, tmp_path):
    shutil.copytree(photos / "cat", tmp_path / "data" / "cat")
    return tmp_path / "data", r"single class \('cat'\): at least 2 classes are needed"


def empty_class(photos, tmp_path):
    shutil.copytree(photos, tmp_path / "data")
    (tmp_path / "data" / "dessert").mkdir()
    (tmp_path / "data" / "dessert" / "notes.txt").write_text("photos to come")
    return tmp_path / "data", r"class folder .*dessert has no images"


@pytest.mark.parametrize("make", [single_class, empty_class])
def test_unfit_dataset_fails_before_the_process_group_or_the_network(photos, tmp_path, monkeypatch, make):
    import components.train.trainer as trainer

    data, message = make(photos, tmp_path)
    called = []
    for name in ("device_for", "init_process_group", "build_network"):
        monkeypatch.setattr(trainer, name, lambda *args, name=name, **kwargs: called.append(name))
    with pytest.raises(DatasetFormatError, match=message):
        train_model(data, tmp_path / "model", TrainConfig(architecture="resnet18"))
    assert called == [] and not (tmp_path / "model").exists()


def test_train_step_checks_the_dataset_before_importing_torch(photos, tmp_path):
    """The component's own code, in a fresh process: a single class folder is refused before torch is
    imported (which takes seconds), let alone a network built."""
    data, _ = single_class(photos, tmp_path)
    code = """
import json, sys
from kfp import dsl
from components.train.component import train
data, out = sys.argv[1:]
try:
    train.python_func(dataset=dsl.Dataset(uri=data), model=dsl.Model(uri=out + "/model"), metrics=dsl.Metrics(uri=out))
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error), "torch": "torch" in sys.modules}))
"""
    run = [sys.executable, "-c", code, str(data), str(tmp_path)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True)
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["error"] == "DatasetFormatError" and "at least 2 classes are needed" in outcome["message"]
    assert outcome["torch"] is False
    assert not (tmp_path / "model").exists()


def test_early_stopping_without_validation_images_is_refused(digits_dir, tmp_path):
    config = TrainConfig(validation_fraction=0.0, early_stopping_patience=2)
    with pytest.raises(ValueError, match=r"early_stopping_patience=2 needs validation images"):
        train_model(digits_dir, tmp_path / "model", config)


def test_metric_values_per_epoch_and_final():
    from components.train.metrics import metric_values

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


def test_streamed_batches_in_flight_stay_within_the_memory_budget(digits_dir):
    from components.common.dataset import index_dataset
    from components.common.loader import Preprocessing, StreamedImages, make_loader, prefetch_batches

    index = index_dataset(digits_dir)
    streamed = StreamedImages(index.root, index.samples("train"), Preprocessing(1, (8, 8)))
    batch = 64 * 64  # 64 images of 1x8x8 bytes
    assert prefetch_batches(streamed, 64, workers=2, in_flight_budget=None) == 4
    assert prefetch_batches(streamed, 64, workers=2, in_flight_budget=2 * 3 * batch) == 3
    assert prefetch_batches(streamed, 64, workers=2, in_flight_budget=100) == 1  # never starve the loop
    loader = make_loader(streamed, 64, None, workers=2, pin_memory=False, in_flight_budget=2 * 2 * batch)
    assert loader.prefetch_factor == 2

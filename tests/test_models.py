"""Architectures (torchvision's by name, your own factory), pretrained weights, head-only fine-tuning, ONNX export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from components.common.model import (
    TORCHVISION_ARCHITECTURES,
    ArchitectureError,
    build_network,
    check_forward,
    classification_head,
    load_model,
)
from components.common.onnx_model import OnnxClassifier
from components.common.spec import load_spec
from components.train.pretrained import PretrainedWeightsError, apply_pretrained, read_pretrained
from components.train.trainer import TrainConfig, train_model
from tests.support.photos import write_photo_dataset


@pytest.mark.slow
@pytest.mark.parametrize("architecture", TORCHVISION_ARCHITECTURES)
def test_every_torchvision_architecture_builds_runs_and_has_a_head(architecture):
    network = build_network(architecture, num_classes=5, in_channels=3, image_size=(64, 64))
    check_forward(network, architecture, 5, [3, 64, 64])
    head = network.get_submodule(classification_head(network, 5))
    assert isinstance(head, torch.nn.Linear) and head.out_features == 5


@pytest.mark.parametrize(
    "architecture, channels, size, message",
    [
        ("convnext_tiny", 3, (8, 8), r"convnext_tiny cannot take 3x8x8 images: .*choose another image_size"),
        ("vit_b_16", 3, (40, 40), r"vit_b_16 needs a square image_size divisible by 16, got 40x40"),
        ("resnet18", 1, (32, 32), r"resnet18 takes 3-channel images, got channels=1"),
    ],
)
def test_sizes_and_channels_an_architecture_cannot_take_are_named(architecture, channels, size, message):
    with pytest.raises(ArchitectureError, match=message):
        network = build_network(architecture, 4, channels, size)
        check_forward(network, architecture, 4, [channels, *size])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "data", per_class=10)


FACTORY = textwrap.dedent(
    """
    from torch import nn

    def tiny(num_classes, in_channels):
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, num_classes),
        )

    def not_a_module(num_classes, in_channels):
        return "a string"

    def wrong_shape(num_classes, in_channels):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))
    """
)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    package = tmp_path / "team_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "team_models.nets"
    for name in [m for m in sys.modules if m.startswith("team_models")]:
        del sys.modules[name]


def test_factory_model_trains_and_is_evaluated_without_its_code(photos, factory_module, tmp_path):
    config = TrainConfig(model_factory=f"{factory_module}:tiny", epochs=1, batch_size=8, image_size=16)
    train_model(photos, tmp_path / "model", config)
    spec = load_spec(tmp_path / "model")
    assert spec.architecture == f"factory:{factory_module}:tiny"
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "model.onnx",
        "program.pt2",
        "spec.json",
        "weights.pt",
    ]
    # A fresh process where the factory's package cannot be imported still evaluates it.
    script = (
        "import json, sys; from components.evaluate.evaluation import evaluate; "
        "e = evaluate(sys.argv[1], sys.argv[2]); "
        "print(json.dumps({'acc': e.accuracy, 'onnx': e.onnx_max_difference, "
        "'factory': 'team_models' in sys.modules}))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model"), str(photos)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["factory"] is False and result["onnx"] <= 1e-4


@pytest.mark.parametrize(
    "factory, message",
    [
        ("no_such_package.nets:tiny", r"cannot import no_such_package.nets .*importable in the step's image"),
        ("{module}:missing", r"has no callable 'missing'"),
        ("{module}:not_a_module", r"returned str, not a torch.nn.Module"),
        ("{module}:wrong_shape", r"returns \(2, 4\) for a batch of 2; a classifier must return logits of shape"),
    ],
)
def test_bad_factories_are_named_before_the_data_is_read(photos, factory_module, tmp_path, factory, message):
    config = TrainConfig(model_factory=factory.format(module=factory_module), image_size=8)
    with pytest.raises(ArchitectureError, match=message):
        train_model(photos, tmp_path / "model", config)


# --- pretrained weights -------------------------------------------------------------------------------


def torchvision_checkpoint(path: Path, architecture: str = "resnet18", seed: int = 11) -> Path:
    """A checkpoint in torchvision's published form (1000-class head), as a team would import it."""
    torch.manual_seed(seed)
    torch.save(torchvision.models.get_model(architecture, weights=None).state_dict(), path)
    return path


def test_loaded_weights_equal_the_files_except_the_new_head(tmp_path):
    file = torchvision_checkpoint(tmp_path / "resnet18-imagenet.pth")
    network = build_network("resnet18", 3, 3, (32, 32))
    loaded = apply_pretrained(network, read_pretrained(file), "fc")
    saved = torch.load(file, weights_only=True)
    own = network.state_dict()
    assert loaded == len(saved) - 2
    for key, value in saved.items():
        if key.startswith("fc."):
            assert own[key].shape[0] == 3  # the dataset's classes, freshly initialised
        else:
            assert torch.equal(own[key], value), key


def test_wrapped_and_ddp_prefixed_checkpoints_are_read(tmp_path):
    state = torch.load(torchvision_checkpoint(tmp_path / "plain.pth"), weights_only=True)
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    weights = read_pretrained(tmp_path / "ckpt.pt")
    assert weights.state.keys() == state.keys()
    single = tmp_path / "folder"
    single.mkdir()
    (tmp_path / "plain.pth").rename(single / "weights.pth")
    assert read_pretrained(single).state.keys() == state.keys()  # a directory with exactly one weights file


def test_a_mismatched_checkpoint_fails_naming_the_keys(tmp_path):
    file = torchvision_checkpoint(tmp_path / "resnet34.pth", "resnet34")
    network = build_network("resnet18", 3, 3, (32, 32))
    with pytest.raises(PretrainedWeightsError) as raised:
        apply_pretrained(network, read_pretrained(file), "fc")
    message = str(raised.value)
    assert "every key except the head 'fc' must match" in message
    assert "not in the network: layer1.2.bn1.bias" in message  # resnet34 has three blocks per stage
    state = torch.load(torchvision_checkpoint(tmp_path / "r18.pth"), weights_only=True)
    state["conv1.weight"] = state["conv1.weight"][:, :1]
    del state["layer4.1.bn2.running_var"]
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(PretrainedWeightsError) as raised:
        apply_pretrained(network, read_pretrained(tmp_path / "edited.pth"), "fc")
    assert "missing from the file: layer4.1.bn2.running_var" in str(raised.value)
    assert "shapes differ: conv1.weight (file (64, 1, 7, 7), network (64, 3, 7, 7))" in str(raised.value)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(PretrainedWeightsError, match=r"not a PyTorch state_dict readable with weights_only=True"):
        read_pretrained(tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "no-tensors.pt")
    with pytest.raises(PretrainedWeightsError, match=r"hold no state_dict"):
        read_pretrained(tmp_path / "no-tensors.pt")


def test_head_only_fine_tuning_leaves_the_backbone_bit_identical(photos, tmp_path):
    file = torchvision_checkpoint(tmp_path / "resnet18.pth")
    config = TrainConfig(architecture="resnet18", fine_tune="head", epochs=2, batch_size=8, image_size=32)
    result = train_model(photos, tmp_path / "model", config, pretrained_weights=file)
    assert result.spec.normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert result.spec.preprocessing["normalization_source"] == "torchvision's resnet18 weights"
    trained, _ = load_model(tmp_path / "model")
    saved = torch.load(file, weights_only=True)
    for key, value in trained.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, saved[key]), key  # BatchNorm statistics included
    assert not torch.equal(trained.fc.weight, build_network("resnet18", 3, 3, (32, 32)).fc.weight)


def test_full_fine_tuning_from_a_model_of_this_library(photos, tmp_path):
    """A Model artifact as pretrained weights: its own normalisation travels with it."""
    config = TrainConfig(architecture="mobilenet_v3_small", epochs=1, batch_size=8, image_size=32)
    first = train_model(photos, tmp_path / "first", config)
    second = train_model(photos, tmp_path / "second", config, pretrained_weights=tmp_path / "first")
    assert second.spec.normalization == first.spec.normalization
    assert second.spec.training["pretrained_weights"] == str(tmp_path / "first" / "weights.pt")


def test_onnx_export_has_a_dynamic_batch_and_matches_torch(photos, tmp_path):
    train_model(photos, tmp_path / "model", TrainConfig(architecture="resnet18", epochs=1, batch_size=8, image_size=32))
    network, spec = load_model(tmp_path / "model")
    session = OnnxClassifier(tmp_path / "model" / "model.onnx")
    for batch in (1, 5):
        x = torch.randn(batch, *spec.input_shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = network(x).numpy()
        actual = session.logits(x.numpy())
        assert actual.shape == (batch, 3)
        assert np.max(np.abs(actual - expected)) <= 1e-4 * max(1.0, np.abs(expected).max())

"""Train component's samples/s on the digits against a plain hand-written PyTorch loop on the same data and model."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from components.common.dataset import index_dataset
from components.common.model import SmallCNN
from components.train.trainer import TrainConfig, train_model


def plain_loop(dataset_dir: Path, config: TrainConfig) -> float:
    """The loop a tutorial would write: the same training images decoded into one tensor, the same model,
    batch size and optimiser. Returns samples/s."""
    index = index_dataset(dataset_dir, config.split_rule)
    samples = index.samples("train")
    images = torch.stack([torch.from_numpy(np.array(Image.open(index.root / s.path).convert("L"))) for s in samples])
    scaled = images[:, None].float() / 255.0
    x = ((scaled - scaled.mean()) / scaled.std()).contiguous()
    y = torch.tensor([s.label for s in samples])
    torch.manual_seed(config.seed)
    model = SmallCNN(in_channels=1, num_classes=len(index.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    began = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return config.epochs * len(x) / (time.perf_counter() - began)


def component_loop(dataset_dir: Path, config: TrainConfig) -> tuple[float, float]:
    """The train module as the component runs it. Returns samples/s of the training steps alone,
    and of the whole epoch loop (per-epoch validation and checkpoint writes charged too)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(dataset_dir, Path(tmp) / "model", config, checkpoint_dir=Path(tmp) / "ckpt")
    samples = result.extra["epochs_run"] * result.spec.training["train_samples"]
    return samples / sum(row.seconds for row in result.history), samples / result.extra["loop_seconds"]


def run(dataset_dir: Path, epochs: int = 4, rounds: int = 5) -> dict:
    """Paired rounds, alternating which goes first; the median ratio of pairs resists the shared machine's noise."""
    config = TrainConfig(epochs=epochs, augment=False)
    plain, steps, loops = [], [], []
    for i in range(rounds):
        if i % 2:
            step_rate, loop_rate = component_loop(dataset_dir, config)
            plain.append(plain_loop(dataset_dir, config))
        else:
            plain.append(plain_loop(dataset_dir, config))
            step_rate, loop_rate = component_loop(dataset_dir, config)
        steps.append(step_rate)
        loops.append(loop_rate)
    return {
        "plain_samples_per_s": statistics.median(plain),
        "component_samples_per_s": statistics.median(steps),
        "component_loop_samples_per_s": statistics.median(loops),
        "ratio": statistics.median(s / p for s, p in zip(steps, plain, strict=True)),
        "loop_ratio": statistics.median(s / p for s, p in zip(loops, plain, strict=True)),
        "rounds": rounds,
    }

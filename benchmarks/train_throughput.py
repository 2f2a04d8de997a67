"""Train component's samples/s against a plain hand-written PyTorch loop on the same data and model."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from components.common.dataset import load_split
from components.common.model import SmallCNN
from components.train.trainer import TrainConfig, _channel_stats, _split_validation, train


def plain_loop(dataset_dir: Path, config: TrainConfig) -> float:
    """The loop a tutorial would write: same model, data, batch size and optimiser. Returns samples/s."""
    data = load_split(dataset_dir, "train")
    train_idx, _ = _split_validation(len(data.labels), config.validation_fraction, config.seed)
    stats = _channel_stats(data.images[train_idx])
    mean = torch.tensor(stats["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"]).view(1, -1, 1, 1)
    x = ((data.images[train_idx].float() / 255.0 - mean) / std).contiguous()
    y = data.labels[train_idx]
    torch.manual_seed(config.seed)
    model = SmallCNN(in_channels=x.shape[1], num_classes=len(data.classes))
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
        result = train(dataset_dir, Path(tmp) / "model", config, checkpoint_dir=Path(tmp) / "ckpt")
    samples = result.extra["epochs_run"] * result.spec.training["train_samples"]
    return samples / sum(row.seconds for row in result.history), samples / result.extra["loop_seconds"]


def run(dataset_dir: Path, epochs: int = 4, rounds: int = 5) -> dict:
    """Paired rounds, alternating which goes first; the median ratio of pairs resists the shared machine's noise."""
    config = TrainConfig(epochs=epochs)
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

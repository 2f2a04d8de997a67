"""Train an image classifier on a labelled image folder, resumably.

Plain PyTorch, no KFP: ``train`` reads the ``train`` split of a dataset
directory, holds out a seeded validation fraction, trains, checkpoints after
every epoch and writes a model directory (see ``components.common.model``).

Reproducibility: every random draw is derived from ``seed`` and the epoch
number, so the same seed and data give the same weights on CPU, and a run
resumed from a checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from components import __version__
from components.common.artifacts import atomic_directory
from components.common.dataset import load_split
from components.common.model import ARCHITECTURES, ModelSpec, save_model
from components.train.distributed import DistributedContext, context_from_env, device_for, init_process_group

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    validation_fraction: float = 0.1
    architecture: str = "small_cnn"

    def validate(self) -> None:
        """Raise ValueError naming the bad value and what would be valid."""
        problems = []
        if not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 10):
            problems.append(f"learning_rate must be a number in (0, 10), got {self.learning_rate!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.validation_fraction, (int, float)) and 0 <= self.validation_fraction < 1):
            problems.append(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.architecture not in ARCHITECTURES:
            problems.append(
                f"architecture must be one of {', '.join(sorted(ARCHITECTURES))}, got {self.architecture!r}"
            )
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_second: float


@dataclass
class TrainResult:
    spec: ModelSpec
    history: list[EpochResult]
    device: str
    resumed_from_epoch: int  # 0 when training started from scratch
    extra: dict[str, Any] = field(default_factory=dict)


EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def metric_values(history: list[dict[str, Any]]) -> dict[str, float]:
    """What a ``Metrics`` artifact shows for a training history: each epoch's values
    (``<name>_epoch_<N>``) and the final ones."""
    values = {}
    for row in history:
        for name in EPOCH_METRICS:
            if row.get(name) is not None:
                values[f"{name}_epoch_{row['epoch']}"] = round(row[name], 6)
    for name in EPOCH_METRICS:
        if history and history[-1].get(name) is not None:
            values[name] = round(history[-1][name], 6)
    return values


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _fingerprint(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor) -> str:
    """Identifies what a checkpoint may be resumed for: same data and same parameters.

    ``epochs`` is left out on purpose: a longer run may continue a shorter one,
    since nothing in training depends on the total number of epochs.
    """
    digest = hashlib.sha256()
    settings = {k: v for k, v in asdict(config).items() if k != "epochs"}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(images.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def _split_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * fraction))
    return order[n_val:].sort().values, order[:n_val].sort().values


def _channel_stats(images: torch.Tensor) -> dict[str, list[float]]:
    scaled = images.float() / 255.0
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return {"mean": [round(v, 6) for v in mean.tolist()], "std": [round(v, 6) for v in std.tolist()]}


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            with autocast():
                logits = model(xb)
            loss_sum += nn.functional.cross_entropy(logits.float(), yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


def _save_checkpoint(directory: Path, payload: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)


def _load_checkpoint(directory: Path | None, fingerprint: str, epochs: int) -> dict | None:
    if directory is None or not (directory / CHECKPOINT_FILE).is_file():
        return None
    try:
        payload = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    except Exception as error:  # a torn or foreign file: start over rather than crash
        log.warning("ignoring unreadable checkpoint %s: %s", directory / CHECKPOINT_FILE, error)
        return None
    if payload.get("epoch", 0) > epochs:
        log.warning(
            "ignoring checkpoint %s: it is at epoch %d, beyond epochs=%d",
            directory / CHECKPOINT_FILE,
            payload["epoch"],
            epochs,
        )
        return None
    if payload.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it was written for other data or parameters", directory / CHECKPOINT_FILE)
        return None
    return payload


def train(
    dataset_dir: str | Path,
    model_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | Path | None = None,
    dataset_info: dict[str, Any] | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    context: DistributedContext | None = None,
) -> TrainResult:
    """Train on ``dataset_dir`` and write the model directory ``model_dir``.

    Args:
        dataset_dir: a labelled image folder (or a directory holding exactly one).
        model_dir: where the model directory is written; it appears only when
            training succeeded.
        config: hyperparameters.
        checkpoint_dir: where ``last.pt`` is written after every epoch. When it
            holds a checkpoint for the same data and parameters, training resumes
            after its epoch. ``None`` disables checkpoints.
        dataset_info: provenance recorded in the spec (commit, md5 per path).
        device: defaults to CUDA (``cuda:LOCAL_RANK``) when present, else CPU.
        on_epoch_end: called after each epoch's checkpoint is written.
        context: rank and world size; defaults to what the launcher put in the
            environment (``torchrun``, a PyTorchJob pod, or nothing for one process).

    Distributed: each process trains on its ``DistributedSampler`` shard with
    ``batch_size`` samples per step (the global batch is ``batch_size`` times the
    world size) under ``DistributedDataParallel``. Only rank 0 writes
    checkpoints and the model; every rank reads a checkpoint to resume.
    """
    config.validate()
    context = context or context_from_env()
    device = device or device_for(context)
    owns_group = init_process_group(context, device)
    try:
        return _train(dataset_dir, model_dir, config, checkpoint_dir, dataset_info, device, on_epoch_end, context)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(dataset_dir, model_dir, config, checkpoint_dir, dataset_info, device, on_epoch_end, context):
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None

    data = load_split(dataset_dir, "train")
    train_idx, val_idx = _split_validation(len(data.labels), config.validation_fraction, config.seed)
    if len(train_idx) == 0:
        raise ValueError(
            f"validation_fraction={config.validation_fraction} leaves no training samples out of {len(data.labels)}"
        )
    normalization = _channel_stats(data.images[train_idx])
    spec = ModelSpec(
        architecture=config.architecture,
        classes=list(data.classes),
        input_shape=list(data.input_shape),
        normalization=normalization,
        dataset=dict(dataset_info or {}),
        versions={"library": __version__, "torch": torch.__version__},
    )

    use_cuda = device.type == "cuda"
    memory_format = torch.channels_last if use_cuda else torch.contiguous_format
    inputs = spec.normalize(data.images).to(device=device, memory_format=memory_format)
    targets = data.labels.to(device)
    x_train, y_train = inputs[train_idx.to(device)], targets[train_idx.to(device)]
    x_val, y_val = inputs[val_idx.to(device)], targets[val_idx.to(device)]

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else nullcontext()

    torch.manual_seed(config.seed)
    model = spec.build().to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)

    fingerprint = _fingerprint(config, data.images, data.labels)
    history: list[EpochResult] = []
    start_epoch = 1
    checkpoint = _load_checkpoint(checkpoint_dir, fingerprint, config.epochs)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history = [EpochResult(**row) for row in checkpoint["history"]]
        start_epoch = checkpoint["epoch"] + 1
        log.info("resuming from checkpoint after epoch %d of %d", checkpoint["epoch"], config.epochs)
    resumed_from = start_epoch - 1
    # Wrapped after any checkpoint is loaded: DDP broadcasts rank 0's weights at construction.
    network = model
    if context.distributed:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    n = len(x_train)
    sampler = DistributedSampler(
        range(n), num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed
    )
    if context.is_main:
        log.info(
            "starting training: %d samples per epoch, %d process(es), device %s, epochs %d..%d",
            n,
            context.world_size,
            device,
            start_epoch,
            config.epochs,
        )
    loop_began = time.perf_counter()
    for epoch in range(start_epoch, config.epochs + 1):
        began = time.perf_counter()
        network.train()
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(config.seed, epoch) + context.rank)  # dropout, distinct per rank
        order = torch.tensor(list(sampler), dtype=torch.int64, device=device)
        totals = torch.zeros(3, device=device)  # loss sum, correct, samples
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            xb, yb = x_train[batch], y_train[batch]
            with autocast():
                logits = network(xb)
                loss = nn.functional.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals[0] += loss.detach() * len(batch)
            totals[1] += (logits.argmax(1) == yb).sum()
            totals[2] += len(batch)
        if context.distributed:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - began
        samples = totals[2].item()
        val_loss = val_acc = None
        if len(x_val):
            val_loss, val_acc = _evaluate(model, x_val, y_val, max(config.batch_size, 256), autocast)
        result = EpochResult(
            epoch=epoch,
            train_loss=totals[0].item() / samples,
            train_accuracy=totals[1].item() / samples,
            val_loss=val_loss,
            val_accuracy=val_acc,
            seconds=seconds,
            samples_per_second=samples / seconds if seconds > 0 else float("inf"),
        )
        history.append(result)
        log.info(
            "%sepoch %d/%d  train_loss %.4f  train_acc %.4f%s  %.0f samples/s",
            f"[rank {context.rank}/{context.world_size}] " if context.distributed else "",
            epoch,
            config.epochs,
            result.train_loss,
            result.train_accuracy,
            f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}" if val_loss is not None else "",
            result.samples_per_second,
        )
        if checkpoint_dir is not None and context.is_main:
            _save_checkpoint(
                checkpoint_dir,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": [asdict(h) for h in history],
                    "fingerprint": fingerprint,
                },
            )
        if on_epoch_end is not None:
            on_epoch_end(result)

    loop_seconds = time.perf_counter() - loop_began  # training, validation and checkpoints
    spec.training = {
        "parameters": asdict(config),
        "device": device.type,
        "world_size": context.world_size,
        "train_samples": len(train_idx),
        "validation_samples": len(val_idx),
        "history": [asdict(h) for h in history],
    }
    if context.is_main:
        with atomic_directory(model_dir) as staging:
            save_model(staging, model, spec)
    return TrainResult(
        spec=spec,
        history=history,
        device=device.type,
        resumed_from_epoch=resumed_from,
        extra={"loop_seconds": loop_seconds, "epochs_run": config.epochs - resumed_from},
    )

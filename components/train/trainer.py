"""Train an image classifier on a dataset directory, resumably, alone or under DistributedDataParallel.

Plain PyTorch, no KFP. ``train_model`` checks and indexes the dataset first
(``components.train.dataset_check``), then decides the input (channels, size,
normalisation), builds the network (``small_cnn``, a torchvision architecture, or
``model_factory``), optionally loads pretrained weights and decodes every file once
(``components.common.loader``): ``_Training.prepare``. ``_Training.fit`` then sets up the
loaders, optimiser and schedule, restores a checkpoint when there is one, runs
``train_one_epoch`` and ``evaluate`` (validation) each epoch, checkpoints after every epoch,
and writes a model directory: weights, ``spec.json`` and the ONNX export
(``components.common.model``).

Reproducibility: every random draw is derived from ``seed``, the epoch and the
sample's index, so the same seed and data give the same weights on CPU, and a
run resumed from a checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from components import __version__
from components.common.artifacts import atomic_directory
from components.common.dataset import DatasetIndex
from components.common.loader import (
    DecodedImages,
    EpochSampler,
    Preprocessing,
    StreamedImages,
    decode_pass,
    fits_in_memory,
    labels_tensor,
    make_loader,
    normalization_tensors,
    summarize_headers,
    to_device_batch,
)
from components.common.model import (
    build_network,
    check_forward,
    classification_head,
    default_image_size,
    is_torchvision,
    pretrained_normalization,
    resolve_architecture,
    save_model,
)
from components.common.resources import cpus_each, format_bytes, intra_op_threads, memory_limit, parse_quantity
from components.common.spec import ModelSpec
from components.train.config import AUTO, TrainConfig
from components.train.dataset_check import check_training_data
from components.train.distributed import DistributedContext, context_from_env, device_for, init_process_group
from components.train.pretrained import apply_pretrained, backbone_eval, freeze_backbone, read_pretrained

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"
# Share of the pod's memory the decoded images may take before training streams them instead.
MEMORY_BUDGET_SHARE = 0.25
EXPORT_EXAMPLES = 8


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_second: float
    learning_rate: float = 0.0


@dataclass
class TrainResult:
    spec: ModelSpec
    history: list[EpochResult]
    device: str
    resumed_from_epoch: int  # 0 when training started from scratch
    extra: dict[str, Any] = field(default_factory=dict)


# --- input decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputPlan:
    channels: int
    image_size: tuple[int, int]
    reason: str


def plan_input(config: TrainConfig, architecture: str, index: DatasetIndex, workers: int) -> InputPlan:
    """Channels and size the network sees, from the parameters, the architecture and (when automatic) the data."""
    need_headers = (config.channels == AUTO and not is_torchvision(architecture)) or (
        config.image_size == AUTO and not is_torchvision(architecture)
    )
    headers = (
        summarize_headers(index.root, index.samples("train") + index.samples("val"), workers) if need_headers else None
    )
    reasons = []
    if config.channels != AUTO:
        channels = config.channels
    elif is_torchvision(architecture):
        channels, _ = 3, reasons.append("3 channels: torchvision architectures take RGB")
    else:
        channels = 1 if headers.all_grayscale else 3
        reasons.append(f"{channels} channel(s): {'every image is grayscale' if channels == 1 else 'colour images'}")
    if config.image_size != AUTO:
        size = (config.image_size, config.image_size)
    elif is_torchvision(architecture):
        side = default_image_size(architecture)
        size = (side, side)
        reasons.append(f"{side}x{side}: the resolution torchvision trains {architecture} at")
    elif headers.uniform_size is not None:
        size = headers.uniform_size
        reasons.append(f"{size[0]}x{size[1]}: every image has that size")
    else:
        size = (224, 224)
        shown = ", ".join(f"{h}x{w}" for h, w in headers.sizes)
        reasons.append(f"224x224: the images differ in size ({shown}, ...); set image_size to choose")
    return InputPlan(channels, size, "; ".join(reasons) or "as set by channels and image_size")


def memory_budget(config: TrainConfig, local_processes: int) -> tuple[int, str]:
    if config.memory_budget:
        return parse_quantity(config.memory_budget), f"memory_budget={config.memory_budget}"
    limit, source = memory_limit()
    budget = int(limit * MEMORY_BUDGET_SHARE / max(1, local_processes))
    share = f"{MEMORY_BUDGET_SHARE:g} of {source} ({format_bytes(limit)})"
    return budget, share + (f" shared by {local_processes} processes" if local_processes > 1 else "")


def default_workers(local_processes: int) -> int:
    """Worker processes per training process: the CPUs the pod may use (cgroup quota), shared out."""
    return cpus_each(local_processes)


# --- optimisation -----------------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier after ``step`` optimiser steps: linear warmup, then constant or cosine to 0."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    total = config.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def _fingerprint(config: TrainConfig, index: DatasetIndex, digests: list[str], extra: dict[str, Any]) -> str:
    """What a checkpoint may be resumed for: the same files, labels, splits and parameters.

    ``epochs`` is left out unless the schedule depends on it (cosine), so a longer constant-rate
    run may continue a shorter one. ``workers`` and ``memory_budget`` only change speed; the
    path they pick (in memory or streamed) is in ``extra``.
    """
    settings = {k: v for k, v in asdict(config).items() if k not in ("workers", "memory_budget")}
    if config.lr_schedule != "cosine":
        settings.pop("epochs")
    digest = hashlib.sha256(json.dumps({"settings": settings, **extra}, sort_keys=True).encode())
    for split in ("train", "val"):
        for sample in index.samples(split):
            digest.update(f"{split}\0{sample.path}\0{sample.label}\n".encode())
    digest.update("".join(digests).encode())
    return digest.hexdigest()


def _save_checkpoint(directory: Path, payload: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)


def _load_checkpoint(directory: Path | None, fingerprint: str, epochs: int) -> dict | None:
    if directory is None or not (directory / CHECKPOINT_FILE).is_file():
        return None
    try:
        # Our own file, written by rank 0 of an earlier attempt of this step (optimiser state holds
        # non-tensor values, hence weights_only=False).
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


# --- training ---------------------------------------------------------------------------------------


def train_model(
    dataset_dir: str | Path,
    model_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | Path | None = None,
    dataset_info: dict[str, Any] | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    context: DistributedContext | None = None,
    pretrained_weights: str | Path | None = None,
) -> TrainResult:
    """Train on ``dataset_dir`` and write the model directory ``model_dir``.

    Args:
        dataset_dir: a dataset directory (``labels.csv`` or class folders), or one holding exactly one.
        model_dir: where the model directory is written; it appears only when training succeeded.
        config: hyperparameters and input settings (see ``TrainConfig``).
        checkpoint_dir: where ``last.pt`` is written after every epoch. When it holds a checkpoint
            for the same data and parameters, training resumes after its epoch. ``None``: none.
        dataset_info: provenance recorded in the spec (commit, md5 per path).
        device: defaults to CUDA (``cuda:LOCAL_RANK``) when present, else CPU.
        on_epoch_end: called after each epoch's checkpoint is written.
        context: rank and world size; defaults to what the launcher put in the environment.
        pretrained_weights: a checkpoint file or Model directory to start from (see ``pretrained``).

    Distributed: each process trains on its ``DistributedSampler`` shard with ``batch_size`` samples
    per step under ``DistributedDataParallel``. Only rank 0 writes checkpoints and the model.
    """
    config.validate()
    # The data first: a wrong folder fails here, before a process group is joined or a network built.
    index = check_training_data(dataset_dir, config.split_rule, config.early_stopping_patience)
    context = context or context_from_env()
    device = device or device_for(context)
    owns_group = init_process_group(context, device)
    try:
        return _Training(config, context, device).run(
            index, Path(model_dir), checkpoint_dir, dataset_info, on_epoch_end, pretrained_weights
        )
    finally:
        if owns_group:
            dist.destroy_process_group()


@dataclass
class _Prepared:
    model: nn.Module
    head: str | None
    spec: ModelSpec
    train_data: DecodedImages | StreamedImages
    val_data: DecodedImages | StreamedImages
    fingerprint: str
    workers: int
    in_memory: bool
    memory_budget: int
    pretrained: Path | None


@dataclass
class BestEpoch:
    """Early stopping's state: the best validation loss so far, its epoch and weights, and the worse epochs since."""

    loss: float = math.inf
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, on the CPU
    bad_epochs: int = 0
    stopped: bool = False

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps (a plain dict, so a checkpoint loads without this class)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class _Loaders:
    sampler: EpochSampler  # set to each epoch: it orders the shard and seeds the augmentation
    train: DataLoader
    val: DataLoader | None  # None when the val split is empty


@dataclass
class _Progress:
    """Where training stands: the epochs done and early stopping's state."""

    history: list[EpochResult]
    best: BestEpoch
    resumed_from: int = 0  # the epoch a checkpoint brought; 0 when training started from scratch


@dataclass
class _Loop:
    """What every epoch works with."""

    model: nn.Module  # unwrapped: what is evaluated, checkpointed and saved
    network: nn.Module  # what trains: the model, or DistributedDataParallel around it
    head: str | None
    loaders: _Loaders
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    channels_last: bool


class _Training:
    def __init__(self, config: TrainConfig, context: DistributedContext, device: torch.device):
        self.config, self.context, self.device = config, context, device
        self.local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if context.distributed else 1
        self.use_cuda = device.type == "cuda"

    def info(self, message: str, *args) -> None:
        if self.context.is_main:
            log.info(message, *args)

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_cuda else nullcontext()

    def run(self, index, model_dir, checkpoint_dir, dataset_info, on_epoch_end, pretrained_path) -> TrainResult:
        prepared = self.prepare(index, dataset_info, pretrained_path)
        return self.fit(prepared, Path(checkpoint_dir) if checkpoint_dir else None, model_dir, on_epoch_end)

    def prepare(self, index: DatasetIndex, dataset_info, pretrained_path) -> _Prepared:
        """Everything before the first step: data decoded once, network built and initialised."""
        config = self.config
        architecture = resolve_architecture(config.architecture, config.model_factory)
        workers = config.workers if config.workers != AUTO else default_workers(self.local_processes)
        torch.set_num_threads(intra_op_threads(self.local_processes))

        train_samples, val_samples = index.samples("train"), index.samples("val")
        self.info(
            "dataset %s (%s): %d classes; train %d, val %d, test %d images (given splits: %s)",
            index.root,
            index.layout,
            len(index.classes),
            len(train_samples),
            len(val_samples),
            len(index.samples("test")),
            ", ".join(index.given) or "none",
        )
        plan = plan_input(config, architecture, index, workers)
        input_shape = [plan.channels, *plan.image_size]
        self.info("input %dx%dx%d (%s)", *input_shape, plan.reason)

        # The network first: a wrong architecture, factory or size fails before the data pass.
        torch.manual_seed(config.seed)
        model = build_network(architecture, len(index.classes), plan.channels, plan.image_size)
        check_forward(model, architecture, len(index.classes), input_shape)
        pretrained = read_pretrained(pretrained_path) if pretrained_path else None
        head = classification_head(model, len(index.classes)) if pretrained or config.fine_tune == "head" else None
        if pretrained is not None:
            loaded = apply_pretrained(model, pretrained, head)
            self.info("loaded %d tensors from %s (head %r left new)", loaded, pretrained.source, head)
        elif config.fine_tune == "head":
            log.warning("fine_tune=head without pretrained weights trains the head on a random backbone")

        budget, budget_source = memory_budget(config, self.local_processes)
        everything = train_samples + val_samples
        in_memory, why = fits_in_memory(len(everything), plan.channels, plan.image_size, budget)
        self.info("data path: %s (budget: %s)", why, budget_source)
        normalization, normalization_source = self.normalization(architecture, pretrained)
        began = time.perf_counter()
        decoded = decode_pass(
            index.root,
            everything,
            plan.channels,
            plan.image_size,
            workers,
            keep=in_memory,
            statistics_for=len(train_samples) if normalization is None else 0,
            what="training data (train and val splits)",
            range_for=len(train_samples),
        )
        if normalization is None:
            normalization = decoded.statistics()
        self.info(
            "decode pass: %d images checked in %.1f s; normalisation from %s",
            len(everything),
            time.perf_counter() - began,
            normalization_source,
        )
        input_range = decoded.input_range()
        if input_range:
            self.info(
                "training pixels %d..%d; the brightest pixel of %d %% of the images is at most %d",
                input_range["min"],
                input_range["max"],
                input_range["typical_max_percentile"],
                input_range["typical_max"],
            )
        preprocessing = Preprocessing(
            plan.channels, plan.image_size, tuple(normalization["mean"]), tuple(normalization["std"]), config.augment
        )
        labels = labels_tensor(everything)
        n_train = len(train_samples)
        if in_memory:
            train_data = DecodedImages(decoded.images[:n_train], labels[:n_train], config.augment, config.seed)
            val_data = DecodedImages(decoded.images[n_train:], labels[n_train:])
        else:
            train_data = StreamedImages(index.root, train_samples, preprocessing, config.augment, config.seed)
            val_data = StreamedImages(index.root, val_samples, preprocessing)

        fingerprint = _fingerprint(
            config,
            index,
            decoded.digests,
            {"in_memory": in_memory, "pretrained": pretrained.sha256 if pretrained else "", "input": input_shape},
        )
        spec = ModelSpec(
            architecture=architecture,
            classes=list(index.classes),
            input_shape=input_shape,
            normalization=normalization,
            preprocessing=preprocessing.record(normalization_source),
            split=index.split_record(),
            dataset=dict(dataset_info or {}),
            versions=_versions(),
            input_range=input_range,
        )
        return _Prepared(
            model,
            head,
            spec,
            train_data,
            val_data,
            fingerprint,
            workers,
            in_memory,
            budget,
            pretrained.source if pretrained else None,
        )

    def normalization(self, architecture: str, pretrained) -> tuple[dict[str, list[float]] | None, str]:
        """(mean and std, or None to compute them from the training images; where they come from)."""
        mode = self.config.normalization
        known = None
        if pretrained is not None:
            if pretrained.normalization:
                known = (pretrained.normalization, f"the pretrained Model {pretrained.source}")
            elif pretrained_normalization(architecture):
                known = (pretrained_normalization(architecture), f"torchvision's {architecture} weights")
        if mode == "pretrained":
            if known is None:
                raise ValueError(
                    "normalization=pretrained needs pretrained weights whose normalisation is known: a Model of "
                    "this library, or a torchvision architecture's checkpoint; use normalization=data"
                )
            return known
        if mode == "auto" and known is not None:
            return known
        return None, "the training images"

    def fit(self, prepared: _Prepared, checkpoint_dir: Path | None, model_dir: Path, on_epoch_end) -> TrainResult:
        """The epoch loop (resumed from a checkpoint when there is one), then the model directory."""
        config, context = self.config, self.context
        loop = self.set_up_loop(prepared)
        progress = self.restore(checkpoint_dir, prepared.fingerprint, loop)
        # Wrapped after any checkpoint is loaded: DDP broadcasts rank 0's weights at construction.
        if context.distributed:
            device_ids = [self.device.index] if self.use_cuda else None
            loop.network = DistributedDataParallel(loop.model, device_ids=device_ids)
        self.info(
            "starting training %s: %d images per epoch in %d batches of %d (x%d accumulated), %d process(es), "
            "device %s, %d CPU thread(s) each, %s %s lr %g, epochs %d..%d",
            prepared.spec.architecture,
            len(prepared.train_data),
            len(loop.loaders.train),
            config.batch_size,
            config.gradient_accumulation_steps,
            context.world_size,
            self.device,
            torch.get_num_threads(),
            config.optimizer,
            config.lr_schedule,
            config.learning_rate,
            progress.resumed_from + 1,
            config.epochs,
        )
        loop_began = time.perf_counter()
        for epoch in range(progress.resumed_from + 1, config.epochs + 1):
            if progress.best.stopped:
                break
            result = self.train_one_epoch(loop, epoch)
            if loop.loaders.val is not None:
                result.val_loss, result.val_accuracy = self.evaluate(
                    loop.model, loop.loaders.val, loop.mean, loop.std, loop.channels_last
                )
            progress.history.append(result)
            self.track_best(loop.model, result, progress.best)
            self.log_epoch(result)
            if checkpoint_dir is not None and context.is_main:
                self.save_checkpoint(checkpoint_dir, prepared.fingerprint, loop, progress, epoch)
            if on_epoch_end is not None:
                on_epoch_end(result)
        loop_seconds = time.perf_counter() - loop_began
        epochs_run = len(progress.history) - progress.resumed_from
        self.info("training done: %d epoch(s) in %.1f s", epochs_run, loop_seconds)
        self.write_model(prepared, loop, progress, model_dir)
        return TrainResult(
            spec=prepared.spec,
            history=progress.history,
            device=self.device.type,
            resumed_from_epoch=progress.resumed_from,
            extra={"loop_seconds": loop_seconds, "epochs_run": epochs_run},
        )

    def write_model(self, prepared: _Prepared, loop: _Loop, progress: _Progress, model_dir: Path) -> None:
        """The best epoch's weights when early stopping kept them; the history into the spec; rank 0 writes the
        model directory."""
        config, best, spec = self.config, progress.best, prepared.spec
        if config.early_stopping_patience and best.state is not None:
            loop.model.load_state_dict(best.state)
            self.info("restored the weights of epoch %d (best validation loss %.4f)", best.epoch, best.loss)
        spec.training = {
            "parameters": asdict(config),
            "device": self.device.type,
            "world_size": self.context.world_size,
            "train_samples": len(prepared.train_data),
            "validation_samples": len(prepared.val_data),
            "data_path": "in memory" if prepared.in_memory else "streamed",
            "workers": prepared.workers,
            "pretrained_weights": str(prepared.pretrained or ""),
            "fine_tune": config.fine_tune,
            "history": [asdict(h) for h in progress.history],
            "best_epoch": best.epoch or None,
            "stopped_early": best.stopped,
        }
        if self.context.is_main:
            began = time.perf_counter()
            example = self.export_example(prepared.train_data, prepared.val_data, spec)
            with atomic_directory(model_dir) as staging:
                save_model(staging, loop.model, spec, example)
            self.info("model written to %s in %.1f s", model_dir, time.perf_counter() - began)

    def log_epoch(self, result: EpochResult) -> None:
        context = self.context
        log.info(
            "%sepoch %d/%d  train_loss %.4f  train_acc %.4f%s  lr %.3g  %.0f images/s",
            f"[rank {context.rank}/{context.world_size}] " if context.distributed else "",
            result.epoch,
            self.config.epochs,
            result.train_loss,
            result.train_accuracy,
            f"  val_loss {result.val_loss:.4f}  val_acc {result.val_accuracy:.4f}"
            if result.val_loss is not None
            else "",
            result.learning_rate,
            result.samples_per_second,
        )

    def set_up_loop(self, prepared: _Prepared) -> _Loop:
        """The model on the device, the optimiser and schedule over what trains, the loss and the loaders."""
        config = self.config
        channels_last = self.use_cuda
        model = prepared.model.to(
            device=self.device, memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        trainable = freeze_backbone(model, prepared.head) if config.fine_tune == "head" else list(model.parameters())
        optimizer = make_optimizer(config, trainable)
        mean, std = normalization_tensors(prepared.spec.normalization, self.device)
        loaders = self.build_loaders(prepared)
        optimizer_steps = math.ceil(len(loaders.train) / config.gradient_accumulation_steps)
        return _Loop(
            model=model,
            network=model,
            head=prepared.head,
            loaders=loaders,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, optimizer_steps)),
            criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
            mean=mean,
            std=std,
            channels_last=channels_last,
        )

    def build_loaders(self, prepared: _Prepared) -> _Loaders:
        """This process's shard of the training split in a fresh order each epoch, and the whole val split."""
        config, context, workers = self.config, self.context, prepared.workers
        sampler = EpochSampler(
            DistributedSampler(
                range(len(prepared.train_data)),
                num_replicas=context.world_size,
                rank=context.rank,
                shuffle=True,
                seed=config.seed,
            )
        )
        # Streamed, the decoded batches the workers keep ready are what the budget bounds.
        in_flight = None if prepared.in_memory else prepared.memory_budget
        train_loader = make_loader(prepared.train_data, config.batch_size, sampler, workers, self.use_cuda, in_flight)
        val_loader = (
            make_loader(prepared.val_data, max(config.batch_size, 256), None, workers, self.use_cuda, in_flight)
            if len(prepared.val_data)
            else None
        )
        if not prepared.in_memory and workers:
            self.info(
                "streaming with %d worker(s), %d batch(es) of %d ready in each (persistent%s)",
                workers,
                train_loader.prefetch_factor,
                config.batch_size,
                ", pinned memory" if self.use_cuda else "",
            )
        return _Loaders(sampler, train_loader, val_loader)

    def restore(self, checkpoint_dir: Path | None, fingerprint: str, loop: _Loop) -> _Progress:
        """The progress of an earlier attempt, with its weights, optimiser and schedule, when its checkpoint
        is for the same data and parameters; a fresh start otherwise."""
        checkpoint = _load_checkpoint(checkpoint_dir, fingerprint, self.config.epochs)
        if checkpoint is None:
            return _Progress(history=[], best=BestEpoch())
        loop.model.load_state_dict(checkpoint["model"])
        loop.optimizer.load_state_dict(checkpoint["optimizer"])
        loop.scheduler.load_state_dict(checkpoint["scheduler"])
        self.info("resuming from checkpoint after epoch %d of %d", checkpoint["epoch"], self.config.epochs)
        return _Progress(
            history=[EpochResult(**row) for row in checkpoint["history"]],
            best=BestEpoch(**checkpoint["best"]),
            resumed_from=checkpoint["epoch"],
        )

    def save_checkpoint(
        self, checkpoint_dir: Path, fingerprint: str, loop: _Loop, progress: _Progress, epoch: int
    ) -> None:
        _save_checkpoint(
            checkpoint_dir,
            {
                "epoch": epoch,
                "model": loop.model.state_dict(),
                "optimizer": loop.optimizer.state_dict(),
                "scheduler": loop.scheduler.state_dict(),
                "history": [asdict(h) for h in progress.history],
                "best": progress.best.record(),
                "fingerprint": fingerprint,
            },
        )

    def train_one_epoch(self, loop: _Loop, epoch: int) -> EpochResult:
        """One pass over this process's shard; gradients summed over ``gradient_accumulation_steps`` batches
        per optimiser step (DDP synchronises only the last of each group). Loss and accuracy over every
        process; the validation fields are left for ``evaluate``."""
        config, context, device = self.config, self.context, self.device
        began = time.perf_counter()
        loop.network.train()
        if config.fine_tune == "head":
            backbone_eval(loop.model, loop.head)
        loop.loaders.sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(config.seed, epoch) + context.rank)  # dropout, distinct per rank
        totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
        batches, accumulate = len(loop.loaders.train), config.gradient_accumulation_steps
        loop.optimizer.zero_grad(set_to_none=True)
        for step, (images, labels) in enumerate(loop.loaders.train):
            group_start = step - step % accumulate
            group_size = min(accumulate, batches - group_start)
            last_in_group = step == group_start + group_size - 1
            x = to_device_batch(images, loop.mean, loop.std, device, loop.channels_last)
            y = labels.to(device, non_blocking=True)
            sync = nullcontext() if last_in_group or not context.distributed else loop.network.no_sync()
            with sync:
                with self.autocast():
                    logits = loop.network(x)
                loss = loop.criterion(logits.float(), y)
                (loss / group_size).backward()
            if last_in_group:
                loop.optimizer.step()
                loop.scheduler.step()
                loop.optimizer.zero_grad(set_to_none=True)
            totals[0] += loss.detach().double() * len(y)
            totals[1] += (logits.detach().argmax(1) == y).sum()
            totals[2] += len(y)
        if context.distributed:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - began
        samples = totals[2].item()
        return EpochResult(
            epoch=epoch,
            train_loss=totals[0].item() / samples,
            train_accuracy=totals[1].item() / samples,
            val_loss=None,
            val_accuracy=None,
            seconds=seconds,
            samples_per_second=samples / seconds if seconds > 0 else float("inf"),
            learning_rate=loop.optimizer.param_groups[0]["lr"],
        )

    def track_best(self, model: nn.Module, result: EpochResult, best: BestEpoch) -> None:
        """Early stopping on validation loss: remember the best epoch's weights; stop after ``patience`` worse ones."""
        patience = self.config.early_stopping_patience
        if not patience or result.val_loss is None:
            return
        if result.val_loss < best.loss:
            best.loss, best.epoch, best.bad_epochs = result.val_loss, result.epoch, 0
            best.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            best.bad_epochs += 1
            if best.bad_epochs >= patience:
                best.stopped = True
                self.info(
                    "early stopping after epoch %d: no better validation loss than epoch %d's %.4f for %d epoch(s)",
                    result.epoch,
                    best.epoch,
                    best.loss,
                    patience,
                )

    def evaluate(self, model, loader, mean, std, channels_last) -> tuple[float, float]:
        """Validation loss (plain cross-entropy) and accuracy; rank 0's numbers, so every rank decides alike."""
        model.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for images, labels in loader:
                x = to_device_batch(images, mean, std, self.device, channels_last)
                y = labels.to(self.device)
                with self.autocast():
                    logits = model(x)
                totals[0] += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
                totals[1] += (logits.argmax(1) == y).sum()
                totals[2] += len(y)
        if self.context.distributed:
            dist.broadcast(totals, src=0)
        return totals[0].item() / totals[2].item(), totals[1].item() / totals[2].item()

    def export_example(self, train_data, val_data, spec: ModelSpec) -> torch.Tensor:
        """A few real images, normalised: what the ONNX export traces and is checked on."""
        source = val_data if len(val_data) else train_data
        count = min(EXPORT_EXAMPLES, len(source))
        if isinstance(source, DecodedImages):
            images = source.images[:count]
        else:
            plain = StreamedImages(source.root, source.samples[:count], source.preprocessing)
            images = torch.stack([plain[i][0] for i in range(count)])
        mean, std = normalization_tensors(spec.normalization, torch.device("cpu"))
        return to_device_batch(images, mean, std, torch.device("cpu"), channels_last=False)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def _versions() -> dict[str, str]:
    import torchvision

    return {"library": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}

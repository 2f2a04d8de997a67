"""``TrainConfig``: the training hyperparameters and input settings, checked; torch-free.

Every field is a parameter of the training components and pipelines, and an option of
``components.train.cli``. Checking a config loads no torch, so the pipelines compile, ``check_arguments``
runs and the distributed launcher pod starts without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from components.common.architectures import ARCHITECTURES, FACTORY_PATTERN
from components.common.dataset import SplitRule
from components.common.descriptions import option
from components.common.resources import parse_quantity

AUTO = -1  # image_size, channels, workers: decided from the data, the architecture and the pod
OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
NORMALIZATIONS = ("auto", "data", "pretrained")
FINE_TUNE_MODES = ("full", "head")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and input settings; every field is a parameter of the train components, described here once
    (``field_descriptions(TrainConfig)``: the components' and pipelines' docstrings take them from here)."""

    epochs: int = option(12, "Passes over the training split.")
    batch_size: int = option(64, "Images per batch, per training process in a distributed run.")
    learning_rate: float = option(3e-3, "The optimiser's learning rate, after warmup (see lr_schedule).")
    seed: int = option(
        0,
        "Every random draw derives from it (and the epoch and image): the same seed and data give the same "
        "weights on CPU, whatever the number of workers.",
    )
    validation_fraction: float = option(
        0.1,
        "The share of the files carved out to validate each epoch when the data names no validation split (from "
        "train/ or unsplit files), by a hash of each file's path, so a file never changes split as the data grows; "
        "in [0, 1).",
    )
    test_fraction: float = option(
        0.2,
        "The share of the files carved out for evaluate's test split when the data names none, by path hash as for "
        "validation_fraction; in [0, 1), and below 1 with validation_fraction.",
    )
    architecture: str = option(
        "small_cnn",
        f"The network: {', '.join(ARCHITECTURES)} (small_cnn for small images like the demo's "
        "digits; the others are torchvision's classifiers, built with the dataset's classes as their head). "
        "Ignored when model_factory is given.",
    )
    model_factory: str = option(
        "",
        "Your own network instead of architecture: 'package.module:function', importable in the training "
        "image, called with (num_classes=, in_channels=) and returning an nn.Module. Empty: use architecture.",
    )
    image_size: int = option(
        AUTO,
        "The side of the square the network sees (images are resized to cover it, then centre-cropped). "
        f"{AUTO}: automatic, the resolution torchvision trains its architectures at, else the images' own size "
        "when they all share one, else 224.",
    )
    channels: int = option(
        AUTO,
        f"1 (grayscale) or 3 (RGB). {AUTO}: automatic, 3 for torchvision architectures, else 1 when every "
        "image is grayscale, else 3.",
    )
    augment: bool = option(
        True,
        "Random resized crop and horizontal flip while training (turn off for images that are not "
        "flip-invariant, such as digits).",
    )
    normalization: str = option(
        "auto",
        f"The per-channel mean and std: {', '.join(NORMALIZATIONS)}. auto: the pretrained weights' when "
        "known (a Model of this library, or a torchvision architecture's checkpoint), else the training images'; "
        "data: the training images'; pretrained: the pretrained weights' (an error when unknown).",
    )
    optimizer: str = option("adamw", f"The optimiser: {', '.join(OPTIMIZERS)}.")
    momentum: float = option(0.9, "SGD's momentum, in [0, 1); adamw ignores it.")
    weight_decay: float = option(0.01, "The optimiser's weight decay, in [0, 1).")
    lr_schedule: str = option(
        "constant", f"The learning rate after warmup: {', '.join(LR_SCHEDULES)} (cosine decays to 0 at the last epoch)."
    )
    warmup_epochs: float = option(0.0, "Epochs (fractions allowed) of linear warmup from 0 to learning_rate; 0: none.")
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy loss, in [0, 1); 0: none.")
    early_stopping_patience: int = option(
        0,
        "Stop after this many epochs without a better validation loss, keeping the best epoch's weights; 0: "
        "off (needs validation images).",
    )
    gradient_accumulation_steps: int = option(
        1,
        "Batches whose gradients are summed per optimiser step (an effective batch of batch_size times this); 1: none.",
    )
    fine_tune: str = option(
        "full",
        f"What trains: {', '.join(FINE_TUNE_MODES)}. full: every weight; head: the classification head "
        "only, the backbone (and its BatchNorm statistics) frozen, for pretrained weights.",
    )
    workers: int = option(
        AUTO,
        f"DataLoader worker processes per training process, when the images are streamed. {AUTO}: "
        "automatic, the CPUs the pod's cgroup quota allows (not the node's count), shared among the processes.",
    )
    memory_budget: str = option(
        "",
        "Memory for the decoded images, a Kubernetes quantity such as 4Gi: they are decoded once and kept in "
        "memory when they fit, else streamed (decoded every epoch by the workers). Empty: automatic, a quarter of "
        "the pod's memory limit (the machine's memory without one), shared among the processes.",
    )

    def validate(self) -> None:
        """Raise ValueError naming every bad value and what would be valid."""
        problems = []

        def integer(name: str, least: int, allow_auto: bool = False) -> None:
            value = getattr(self, name)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if not (is_int and (value >= least or (allow_auto and value == AUTO))):
                auto = f" or {AUTO} for automatic" if allow_auto else ""
                problems.append(f"{name} must be an integer >= {least}{auto}, got {value!r}")

        def number(name: str, low: float, high: float, closed_high: bool = False, open_low: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > low if open_low else value >= low) and (value <= high if closed_high else value < high)
            if not ok:
                bounds = f"{'(' if open_low else '['}{low}, {high}{']' if closed_high else ')'}"
                problems.append(f"{name} must be a number in {bounds}, got {value!r}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                problems.append(f"{name} must be one of {', '.join(options)}, got {getattr(self, name)!r}")

        integer("epochs", 1)
        integer("batch_size", 1)
        number("learning_rate", 0, 10, open_low=True)
        integer("seed", 0)
        number("validation_fraction", 0, 1)
        number("test_fraction", 0, 1)
        if self.model_factory:
            if not isinstance(self.model_factory, str) or not FACTORY_PATTERN.match(self.model_factory):
                problems.append(f"model_factory must look like 'package.module:function', got {self.model_factory!r}")
        elif self.architecture not in ARCHITECTURES:
            problems.append(
                f"architecture must be one of {', '.join(ARCHITECTURES)} (or give model_factory), "
                f"got {self.architecture!r}"
            )
        integer("image_size", 1, allow_auto=True)
        if self.channels not in (AUTO, 1, 3) or isinstance(self.channels, bool):
            problems.append(f"channels must be 1, 3 or {AUTO} for automatic, got {self.channels!r}")
        if not isinstance(self.augment, bool):
            problems.append(f"augment must be true or false, got {self.augment!r}")
        choice("normalization", NORMALIZATIONS)
        choice("optimizer", OPTIMIZERS)
        number("momentum", 0, 1)
        number("weight_decay", 0, 1)
        choice("lr_schedule", LR_SCHEDULES)
        number("warmup_epochs", 0, 1e6)
        number("label_smoothing", 0, 1)
        integer("early_stopping_patience", 0)
        integer("gradient_accumulation_steps", 1)
        choice("fine_tune", FINE_TUNE_MODES)
        integer("workers", 0, allow_auto=True)
        if self.memory_budget:
            try:
                parse_quantity(self.memory_budget, "memory_budget")
            except ValueError as error:
                problems.append(str(error))
        if not problems and self.test_fraction + self.validation_fraction >= 1:
            problems.append(
                f"test_fraction + validation_fraction must be below 1, got {self.test_fraction} + "
                f"{self.validation_fraction}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> TrainConfig:
        """The config from a component's parameters (the fields of this class; others are ignored)."""
        return cls(**{name: parameters[name] for name in cls.__dataclass_fields__ if name in parameters})

    @property
    def split_rule(self) -> SplitRule:
        return SplitRule(test_fraction=self.test_fraction, validation_fraction=self.validation_fraction)

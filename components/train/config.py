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
from components.common.resources import parse_quantity

AUTO = -1  # image_size, channels, workers: decided from the data, the architecture and the pod
OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
NORMALIZATIONS = ("auto", "data", "pretrained")
FINE_TUNE_MODES = ("full", "head")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and input settings; every field is a parameter of the train components."""

    epochs: int = 12
    batch_size: int = 64  # per process
    learning_rate: float = 3e-3
    seed: int = 0
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    architecture: str = "small_cnn"
    model_factory: str = ""  # "package.module:function" returning nn.Module for (num_classes, in_channels)
    image_size: int = AUTO
    channels: int = AUTO
    augment: bool = True
    normalization: str = "auto"
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.01
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0  # epochs without a better validation loss; 0: off
    gradient_accumulation_steps: int = 1
    fine_tune: str = "full"  # "head": train the classification head only, the backbone frozen
    workers: int = AUTO  # DataLoader worker processes
    memory_budget: str = ""  # e.g. "4Gi"; empty: a quarter of the pod's memory limit

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

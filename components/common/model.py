"""Model architectures and the on-disk format of a ``Model`` artifact.

A model directory holds ``weights.pt`` (a ``state_dict``) and ``spec.json``:
everything needed to rebuild the network and feed it correctly (architecture,
classes, input shape, normalisation), and where it came from (library and
torch versions, dataset commit and md5, training parameters).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
SPEC_FORMAT_VERSION = 1


class SmallCNN(nn.Module):
    """Three convolution blocks and a linear head; works for any input size >= 4x4."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN}


@dataclass
class ModelSpec:
    """What ``spec.json`` holds."""

    architecture: str
    classes: list[str]
    input_shape: list[int]  # C, H, W
    normalization: dict[str, list[float]]  # per-channel "mean" and "std" on the 0..1 scale
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)  # commit, md5 per path
    training: dict[str, Any] = field(default_factory=dict)  # parameters and final metrics
    versions: dict[str, str] = field(default_factory=dict)  # library, torch
    format_version: int = SPEC_FORMAT_VERSION

    def build(self) -> nn.Module:
        """A freshly initialised network of this spec's architecture."""
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        return ARCHITECTURES[self.architecture](
            in_channels=self.input_shape[0], num_classes=len(self.classes), **self.architecture_kwargs
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W images to the float tensor the network was trained on."""
        mean = torch.tensor(self.normalization["mean"], device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.normalization["std"], device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std


def save_model(directory: str | Path, model: nn.Module, spec: ModelSpec) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    (directory / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")


def load_spec(directory: str | Path) -> ModelSpec:
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a model directory written by train")
    payload = json.loads(path.read_text())
    if payload.get("format_version") != SPEC_FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {payload.get('format_version')!r}; this library reads {SPEC_FORMAT_VERSION}"
        )
    return ModelSpec(**payload)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the network from ``spec.json`` and ``weights.pt``, in eval mode."""
    spec = load_spec(directory)
    model = spec.build()
    state = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), spec

"""Networks: the built-in ``small_cnn``, torchvision's classifiers by name, or the user's own factory.

Every network is built for the dataset's classes and channels. A Model
artifact (see ``components.common.spec``) holds its weights, its spec and its
ONNX export; ``save_model`` writes all of them, ``load_model`` rebuilds the
network: from the weights for ``small_cnn`` and torchvision architectures,
from the ``torch.export`` program for any other (a ``model_factory``'s or a
custom script's), so that nothing of the user's code is needed after training.
"""

from __future__ import annotations

import copy
import importlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.common.architectures import ARCHITECTURES, FACTORY_PATTERN, TORCHVISION_ARCHITECTURES
from components.common.spec import (
    FACTORY_PREFIX,
    ONNX_BATCH,
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_OUTPUT,
    PROGRAM_FILE,
    WEIGHTS_FILE,
    ModelFormatError,
    ModelSpec,
    load_spec,
    write_spec,
)

log = logging.getLogger(__name__)


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


class ArchitectureError(ValueError):
    """An architecture, factory or input size that cannot make a network; the message says why."""


def resolve_architecture(architecture: str, model_factory: str = "") -> str:
    """The spec's architecture string (``small_cnn``, ``resnet18``, ``factory:pkg.mod:fn``), checked."""
    if model_factory:
        if not isinstance(model_factory, str) or not FACTORY_PATTERN.match(model_factory):
            raise ArchitectureError(
                f"model_factory must look like 'package.module:function' (importable in the step's image), "
                f"got {model_factory!r}"
            )
        return FACTORY_PREFIX + model_factory
    if architecture not in ARCHITECTURES:
        raise ArchitectureError(
            f"architecture must be one of {', '.join(ARCHITECTURES)} (or give model_factory), got {architecture!r}"
        )
    return architecture


def is_torchvision(architecture: str) -> bool:
    return architecture in TORCHVISION_ARCHITECTURES


def default_image_size(architecture: str) -> int:
    """The resolution torchvision's weights for ``architecture`` were trained at (224 for most)."""
    if not is_torchvision(architecture):
        return 224
    import torchvision

    transforms = next(iter(torchvision.models.get_model_weights(architecture))).transforms()
    return int(transforms.crop_size[0])


def pretrained_normalization(architecture: str) -> dict[str, list[float]] | None:
    """The mean and std torchvision's weights for ``architecture`` expect; None for other networks."""
    if not is_torchvision(architecture):
        return None
    import torchvision

    transforms = next(iter(torchvision.models.get_model_weights(architecture))).transforms()
    return {"mean": [float(v) for v in transforms.mean], "std": [float(v) for v in transforms.std]}


def import_factory(reference: str):
    """The callable named by ``package.module:function``; fails naming what could not be found."""
    module_name, _, function_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ArchitectureError(
            f"model_factory {reference!r}: cannot import {module_name} ({error}); it must be importable in "
            "the step's image"
        ) from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ArchitectureError(f"model_factory {reference!r}: {module_name} has no callable {function_name!r}")
    return factory


def build_network(
    architecture: str,
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    architecture_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A freshly initialised network for ``num_classes`` outputs and ``in_channels`` x ``image_size`` inputs."""
    kwargs = dict(architecture_kwargs or {})
    if architecture == "small_cnn":
        return SmallCNN(in_channels=in_channels, num_classes=num_classes, **kwargs)
    if architecture.startswith(FACTORY_PREFIX):
        reference = architecture[len(FACTORY_PREFIX) :]
        factory = import_factory(reference)
        try:
            network = factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
        except Exception as error:
            raise ArchitectureError(
                f"model_factory {reference!r} failed for num_classes={num_classes}, in_channels={in_channels}: "
                f"{type(error).__name__}: {error}"
            ) from None
        if not isinstance(network, nn.Module):
            raise ArchitectureError(
                f"model_factory {reference!r} returned {type(network).__name__}, not a torch.nn.Module"
            )
        return network
    if not is_torchvision(architecture):
        raise ArchitectureError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    if in_channels != 3:
        raise ArchitectureError(
            f"{architecture} takes 3-channel images, got channels={in_channels}; use channels=3 "
            "(grayscale images are then replicated to three channels)"
        )
    import torchvision

    if architecture.startswith("vit_"):
        patch = int(architecture.rsplit("_", 1)[1])
        if image_size[0] != image_size[1] or image_size[0] % patch:
            raise ArchitectureError(
                f"{architecture} needs a square image_size divisible by {patch}, got {image_size[0]}x{image_size[1]}"
            )
        kwargs.setdefault("image_size", image_size[0])
    return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes, **kwargs)


def check_forward(network: nn.Module, architecture: str, num_classes: int, input_shape: list[int]) -> None:
    """Run two blank images through the network: a size it cannot take fails now, not after the data pass."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            output = network(torch.zeros(2, *input_shape))
    except Exception as error:
        raise ArchitectureError(
            f"{architecture} cannot take {input_shape[0]}x{input_shape[1]}x{input_shape[2]} images: "
            f"{type(error).__name__}: {error}; choose another image_size"
        ) from None
    finally:
        network.train(was_training)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, num_classes):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ArchitectureError(
            f"{architecture} returns {shape} for a batch of 2; a classifier must return logits of shape "
            f"(batch, {num_classes})"
        )


def classification_head(network: nn.Module, num_classes: int) -> str:
    """The name of the module that makes the class logits: the last ``nn.Linear`` with ``num_classes`` outputs."""
    heads = [
        name
        for name, module in network.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_classes
    ]
    if not heads:
        raise ArchitectureError(
            f"cannot find the classification head of {type(network).__name__}: no nn.Linear with "
            f"out_features={num_classes}"
        )
    return heads[-1]


def save_model(directory: str | Path, network: nn.Module, spec: ModelSpec, example: torch.Tensor) -> None:
    """Write ``weights.pt``, the ONNX export (and, for a network the library cannot rebuild, its
    ``torch.export`` program), then ``spec.json``. ``example`` is a normalised float batch the export
    traces and the ONNX check runs."""
    from components.common.onnx_model import OnnxClassifier, check_parity

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    network = copy.deepcopy(network).cpu().float().eval()
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    example = example.detach().cpu().float().contiguous()
    if len(example) < 2:  # a batch of one would make torch.export specialise the batch dimension
        example = torch.cat([example, example])
    files = {"weights": WEIGHTS_FILE, "onnx": ONNX_FILE}
    # Seconds to a minute for a large network, with nothing else in the log: say when each part starts and ends.
    log.info("exporting %s to ONNX (torch.export, then torch.onnx) ...", spec.architecture)
    began = time.perf_counter()
    program = _export_program(network, example)
    if spec.architecture not in ARCHITECTURES:  # a factory's or a script's network: the library cannot rebuild it
        torch.export.save(program, directory / PROGRAM_FILE)
        files["program"] = PROGRAM_FILE
    _export_onnx(program, example, directory / ONNX_FILE)
    log.info(
        "ONNX export written in %.1f s (%s, %.1f MB)",
        time.perf_counter() - began,
        ONNX_FILE,
        (directory / ONNX_FILE).stat().st_size / 1e6,
    )
    log.info("checking the ONNX export against torch on %d images ...", len(example))
    began = time.perf_counter()
    with torch.no_grad():
        expected = network(example).float().numpy()
    where = "the export's example batch"
    difference = check_parity(expected, OnnxClassifier(directory / ONNX_FILE).logits(example.numpy()), where)
    log.info(
        "the ONNX export matches torch (largest logit difference %.3g) in %.1f s",
        difference,
        time.perf_counter() - began,
    )
    spec.files = files
    write_spec(directory, spec)


def _export_program(network: nn.Module, example: torch.Tensor):
    batch = torch.export.Dim(ONNX_BATCH, min=1)
    try:
        return torch.export.export(network, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as error:
        raise ArchitectureError(
            f"torch.export cannot capture {type(network).__name__} with a dynamic batch dimension: "
            f"{type(error).__name__}: {error}"
        ) from None


def _export_onnx(program, example: torch.Tensor, path: Path) -> None:
    import io
    from contextlib import redirect_stdout

    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # the exporter's optimiser logs every rewrite at INFO
        logger.setLevel(logging.WARNING)
    try:
        with redirect_stdout(io.StringIO()):  # and prints its progress
            onnx_program = torch.onnx.export(
                program,
                (example,),
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    onnx_program.save(str(path))


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """The network of a model directory, in eval mode, and its spec."""
    directory = Path(directory)
    spec = load_spec(directory)
    if spec.architecture not in ARCHITECTURES:
        path = directory / spec.files.get("program", PROGRAM_FILE)
        if not path.is_file():
            raise ModelFormatError(
                f"{path} not found: a {spec.architecture} network is run from its torch.export program, which "
                "training (or components.train.contract.save_model) writes"
            )
        program = torch.export.load(path)
        return _Evaluating(program.module()).to(device), spec
    network = build_network(
        spec.architecture, len(spec.classes), spec.channels, spec.image_size, spec.architecture_kwargs
    )
    state = torch.load(directory / spec.files.get("weights", WEIGHTS_FILE), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.to(device).eval(), spec


class _Evaluating(nn.Module):
    """An exported program's module: already in inference form, so train()/eval() must not reach it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def train(self, mode: bool = True):
        self.training = mode
        return self

"""Pretrained weights as an input: read a checkpoint file or Model, load it into a new network.

Weights are never downloaded: clusters are often air-gapped, so they arrive as
a KFP ``Model`` artifact (e.g. ``dsl.importer`` on a ``gs://`` URI of
torchvision's ``resnet18-f37072fd.pth``), or as a path. Accepted forms:

- a Model directory of this library (``spec.json`` + ``weights.pt``): its
  normalisation travels with it;
- a ``state_dict`` file (``.pt``/``.pth``), also wrapped as ``{"state_dict": ...}``
  or ``{"model": ...}`` (Lightning and training-loop checkpoints), with or
  without DDP's ``module.`` prefix;
- a directory holding exactly one such file.

Files are read with ``torch.load(weights_only=True)``: a checkpoint from a
shared bucket cannot run code. Every key except the classification head's
must match the network's, name and shape, or the step fails naming them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from components.common.spec import SPEC_FILE, WEIGHTS_FILE, load_spec

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin")
WRAPPING_KEYS = ("state_dict", "model_state_dict", "model")
MAX_KEYS_LISTED = 8


class PretrainedWeightsError(ValueError):
    """Weights that cannot initialise the network; the message names the file and the keys."""


@dataclass
class PretrainedWeights:
    source: Path
    state: dict[str, torch.Tensor]
    normalization: dict[str, list[float]] | None  # a Model artifact's own; None for a bare state_dict
    architecture: str | None
    sha256: str


def _weights_file(path: Path) -> tuple[Path, dict | None, str | None]:
    if path.is_file():
        return path, None, None
    if not path.is_dir():
        raise PretrainedWeightsError(f"pretrained weights {path} do not exist")
    if (path / SPEC_FILE).is_file():
        spec = load_spec(path)
        return path / spec.files.get("weights", WEIGHTS_FILE), spec.normalization, spec.architecture
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) != 1:
        raise PretrainedWeightsError(
            f"pretrained weights directory {path} holds {len(candidates)} weight files "
            f"({', '.join(p.name for p in candidates) or 'none'}); expected a Model (spec.json + {WEIGHTS_FILE}) "
            f"or exactly one {'/'.join(WEIGHT_SUFFIXES)} file"
        )
    return candidates[0], None, None


def read_pretrained(path: str | Path) -> PretrainedWeights:
    """The state_dict (and what else is known) behind ``path``."""
    file, normalization, architecture = _weights_file(Path(path))
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PretrainedWeightsError(
            f"pretrained weights {file} are not a PyTorch state_dict readable with weights_only=True: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    state = payload
    if isinstance(payload, dict) and not _is_state(payload):
        for key in WRAPPING_KEYS:
            if isinstance(payload.get(key), dict) and _is_state(payload[key]):
                state = payload[key]
                break
    if not isinstance(state, dict) or not state or not _is_state(state):
        raise PretrainedWeightsError(
            f"pretrained weights {file} hold no state_dict (a mapping of parameter names to tensors, "
            f"possibly under {', '.join(WRAPPING_KEYS)})"
        )
    if all(key.startswith("module.") for key in state):  # saved from a DistributedDataParallel wrapper
        state = {key[len("module.") :]: value for key, value in state.items()}
    return PretrainedWeights(Path(file), dict(state), normalization, architecture, digest.hexdigest())


def _is_state(mapping: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_LISTED])
    return shown + (f" and {len(keys) - MAX_KEYS_LISTED} more" if len(keys) > MAX_KEYS_LISTED else "")


def apply_pretrained(network: nn.Module, weights: PretrainedWeights, head: str) -> int:
    """Load every key but the head's ``head`` module into ``network``; return how many were loaded."""
    own = network.state_dict()
    prefix = head + "."
    theirs = {k: v for k, v in weights.state.items() if not k.startswith(prefix)}
    ours = {k for k in own if not k.startswith(prefix)}
    missing = sorted(ours - theirs.keys())
    unexpected = sorted(theirs.keys() - ours)
    mismatched = sorted(
        f"{k} (file {tuple(theirs[k].shape)}, network {tuple(own[k].shape)})"
        for k in ours & theirs.keys()
        if theirs[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        problems = [
            f"missing from the file: {_listed(missing)}" if missing else "",
            f"not in the network: {_listed(unexpected)}" if unexpected else "",
            f"shapes differ: {_listed(mismatched)}" if mismatched else "",
        ]
        raise PretrainedWeightsError(
            f"pretrained weights {weights.source} do not fit {type(network).__name__} "
            f"(every key except the head {head!r} must match): " + "; ".join(p for p in problems if p)
        )
    merged = {**own, **{k: v.to(own[k].dtype) for k, v in theirs.items()}}
    network.load_state_dict(merged, strict=True)
    return len(theirs)


def freeze_backbone(network: nn.Module, head: str) -> list[nn.Parameter]:
    """Stop gradients everywhere but the head; return the head's parameters (what the optimiser gets)."""
    head_module = network.get_submodule(head)
    head_parameters = {id(p) for p in head_module.parameters()}
    for parameter in network.parameters():
        parameter.requires_grad_(id(parameter) in head_parameters)
    return list(head_module.parameters())


def backbone_eval(network: nn.Module, head: str) -> None:
    """Put every module outside the head in eval mode: frozen BatchNorm statistics stay as loaded."""
    head_names = {head} | {f"{head}.{name}" for name, _ in network.get_submodule(head).named_modules() if name}
    for name, module in network.named_modules():
        if name and name not in head_names and not head.startswith(name + "."):
            module.eval()

"""The bento's Python requirements, pinned from the build environment itself: no package index, no lock step.

``bentoml build`` would otherwise lock the requirements with ``uv pip compile``
against the package index (and first ``pip install uv`` where it is missing),
which a cluster pod without network cannot do, and which took the CUDA torch from
PyPI. Here the pins are what is installed: the packages the service imports and
everything they require (markers and extras evaluated in this environment),
each ``==`` its installed version, read with ``importlib.metadata``.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# What serving/service.py and the modules the bento carries import (transitively): bentoml (with
# aiohttp among its own requirements), numpy, Pillow, ONNX Runtime and orjson (JSON in and out).
SERVING_PACKAGES = ("bentoml", "onnxruntime", "numpy", "pillow", "orjson")
ACCELERATORS = ("cpu", "cuda")
# BentoML adds its own ``bentoml==<version>`` line to the bento's requirements.
ADDED_BY_BENTOML = {"bentoml"}
# What a CPU bento must never install: torch, torchvision and the CUDA runtime wheels.
# (nvidia-ml-py is BentoML's own GPU monitoring, pure Python, and stays.)
TORCH_PACKAGES = {"torch", "torchvision", "triton"}


class RequirementsError(RuntimeError):
    """The build environment cannot give the pins the bento needs; the message says what is missing."""


def validate_accelerator(accelerator: str) -> str:
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}: 'cpu' serves the ONNX export "
            "with ONNX Runtime and installs no torch; 'cuda' adds the CUDA build of torch and serves with it on the GPU"
        )
    return accelerator


def is_cuda_package(name: str) -> bool:
    name = canonicalize_name(name)
    return name in TORCH_PACKAGES or (name.startswith("nvidia-") and name != "nvidia-ml-py")


def installed_closure(roots: list[str]) -> dict[str, str]:
    """``{canonical name: installed version}`` for ``roots`` and, transitively, what they require here."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(Requirement(root), root) for root in roots]
    while queue:
        requirement, wanted_by = queue.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise RequirementsError(
                f"{name} (required by {wanted_by}) is not installed in this environment, so the bento's requirements "
                "cannot be pinned from it; install it (pip install -e .) and build again"
            ) from None
        pins[name] = dist.version
        extras = {""} | set(requirement.extras)
        for line in dist.requires or []:
            try:
                dependency = Requirement(line)
            except InvalidRequirement:
                continue
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                queue.append((dependency, name))
    return pins


def public_version(version: str) -> str:
    """``2.14.1+cpu`` -> ``2.14.1``: a local build's version as the package index knows it."""
    return Version(version).public


def pinned_requirements(accelerator: str = "cpu") -> list[str]:
    """``name==version`` lines for the bento: the serving packages, plus torch's CUDA build and torchvision
    for ``cuda``."""
    validate_accelerator(accelerator)
    roots = list(SERVING_PACKAGES)
    if accelerator == "cuda":
        try:
            metadata.distribution("torch")
        except metadata.PackageNotFoundError:
            raise RequirementsError(
                "accelerator 'cuda' pins the torch installed where the bento is built, and none is installed here"
            ) from None
        roots.append("torch")
        try:
            metadata.distribution("torchvision")
        except metadata.PackageNotFoundError:
            raise RequirementsError(
                "accelerator 'cuda' pins the torchvision installed where the bento is built (the torch backend "
                "rebuilds torchvision's architectures), and none is installed here"
            ) from None
        roots.append("torchvision")
    pins = installed_closure(roots)
    if accelerator == "cpu":
        cuda = sorted(name for name in pins if is_cuda_package(name))
        if cuda:  # a serving package that started to require torch: say so rather than ship 5 GB
            raise RequirementsError(f"the CPU bento would install {', '.join(cuda)}: {SERVING_PACKAGES} require them")
    else:
        # PyPI's Linux x86_64 torch wheels are the CUDA builds; a local label (+cpu, +cu130) names an
        # index other than PyPI, so the pin is the public version, which PyPI serves with CUDA.
        pins["torch"] = public_version(pins["torch"])
        for name in ("torchvision", "triton"):
            if name in pins:
                pins[name] = public_version(pins[name])
    return [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in ADDED_BY_BENTOML]

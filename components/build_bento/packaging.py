"""Package a trained model as a BentoML bento and export it as an archive.

Plain Python over BentoML's API, no KFP: the model's ``spec.json`` and ONNX
export (``model.onnx``) are imported into the BentoML model store with labels
and metadata, a bento is built from ``serving/`` (the service plus the torch-free
modules it imports: spec, image preprocessing, ONNX Runtime), and the bento is
exported to ``<output_dir>/<name>-<version>.tar`` with ``bento.json``
describing it. The bento needs neither torch nor torchvision, nor the code of a
``model_factory``. With ``accelerator="cuda"`` it also carries torch, torchvision,
the model's weights (and ``torch.export`` program) and ``serving/torch_backend.py``
with ``components/common/model.py``, and its service runs the network in torch on
the GPU. The output directory appears only on success.

The build needs no network: the bento's requirements are pinned from this
environment (``requirements.py``) and BentoML's lock step (``uv pip compile``
against the package index) is switched off. The model's lineage (model tag,
dataset commit, architecture, library version, evaluation metrics) goes into
the bento's labels and, as ``KFP_TORCH_LIFECYCLE_*`` variables, into the
environment of the image built from it.

The archive is a plain tar (``<name>-<version>.tar``, one of the formats ``bentoml export``
writes and ``bentoml import`` reads), not BentoML's default ``.bento`` (xz): what makes a
bento large is the model's weights, float32 noise to a compressor. Of a resnet18's 45 MB, xz
saves 8 % in about 30 s of CPU and gzip 7 % in 1.4 s; larger networks cost in proportion.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components import __version__
from components.build_bento.requirements import pinned_requirements, validate_accelerator
from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.spec import ONNX_FILE, SPEC_FILE, ModelFormatError, load_spec

SERVICE = "serving.service:ImageClassifier"
BENTO_NAME = "image-classifier"
MODEL_NAME = "image-classifier"
MODEL_TAG_ENV = "KFP_TORCH_LIFECYCLE_MODEL_TAG"
ENV_PREFIX = "KFP_TORCH_LIFECYCLE_"
DESCRIPTOR = "bento.json"
ARCHIVE_FORMAT = "tar"  # bentoml export's output_format: an uncompressed tar
# The image build keeps no package cache (uv's is as big as the packages it installed: ~200 MB);
# the variables stay in the image's environment, where nothing installs packages.
BUILD_ENV = {"UV_NO_CACHE": "1", "PIP_NO_CACHE_DIR": "1"}
# What the bento carries: the service and the torch-free modules it imports, nothing else of the library.
INCLUDE = [f"serving/{name}.py" for name in ("__init__", "service", "batching", "gate", "forms", "validation")]
INCLUDE += ["components/__init__.py"]
INCLUDE += [f"components/common/{name}.py" for name in ("__init__", "spec", "images", "onnx_model", "resources")]
# A cuda bento also runs the network in torch: the backend and the model loader (which imports, of the
# library, only spec and the architecture names; torchvision's architectures need torchvision, pinned with torch).
INCLUDE_CUDA = [
    *INCLUDE,
    "serving/torch_backend.py",
    "components/common/model.py",
    "components/common/architectures.py",
]


def included_files(accelerator: str = "cpu") -> list[str]:
    """The library files the bento carries for ``accelerator``."""
    return list(INCLUDE_CUDA if accelerator == "cuda" else INCLUDE)


def library_root() -> Path:
    """The directory holding the ``serving`` and ``components`` packages (the repo, or site-packages)."""
    import serving

    return Path(serving.__file__).resolve().parent.parent


@contextlib.contextmanager
def build_context(accelerator: str = "cpu") -> Iterator[Path]:
    """A directory holding only the library files the bento carries, for BentoML to build from: it walks its
    whole build context, and the library's root is a repository (with its venv and run outputs) or
    site-packages, hundreds of thousands of files (3 s of the build step, growing with what lies there)."""
    root = library_root()
    with tempfile.TemporaryDirectory(prefix="bento-context-") as staged:
        for name in included_files(accelerator):
            (Path(staged) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, Path(staged) / name)
        yield Path(staged)


def python_requirements(accelerator: str = "cpu") -> list[str]:
    """What the service imports and all it requires, each pinned to the version installed here."""
    return pinned_requirements(accelerator)


@contextlib.contextmanager
def no_lock_tool() -> Iterator[None]:
    """BentoML asks for uv before it knows it will not lock, and ``pip install``s uv where it is missing
    (the package index again); with locking off it never runs it, so hand it a command that says so."""
    from bentoml._internal import configuration

    original = getattr(configuration, "get_uv_command", None)
    refuse = "raise SystemExit('build_bento resolves no packages: the bento pins what is installed')"
    configuration.get_uv_command = lambda: [sys.executable, "-c", refuse]
    try:
        yield
    finally:
        if original is None:
            del configuration.get_uv_command
        else:
            configuration.get_uv_command = original


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", str(name).upper()).strip("_")


def lineage_env(model_tag: str, labels: dict[str, str], evaluation: dict[str, Any]) -> dict[str, str]:
    """``KFP_TORCH_LIFECYCLE_*`` variables for the image: the model tag, the labels and the numeric metrics."""
    env = {MODEL_TAG_ENV: model_tag}
    env.update({ENV_PREFIX + _env_name(key): str(value) for key, value in labels.items()})
    for key, value in sorted(_metrics(evaluation).items()):
        env[ENV_PREFIX + "METRIC_" + _env_name(key)] = str(value)
    return env


def _metrics(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _label(value: Any) -> str:
    """BentoML labels follow Kubernetes label rules: at most 63 characters."""
    return str(value)[:63]


def build_bento_archive(
    model_dir: str | Path,
    output_dir: str | Path,
    evaluation: dict[str, Any] | None = None,
    model_name: str = MODEL_NAME,
    bento_name: str = BENTO_NAME,
    base_image: str = "",
    accelerator: str = "cpu",
) -> dict[str, Any]:
    """Import the model, build and export the bento; return what ``bento.json`` holds.

    ``accelerator``: ``cpu`` (no torch, no CUDA: the service runs the ONNX export on ONNX Runtime) or
    ``cuda`` (adds torch's CUDA build, its CUDA runtime wheels and torchvision, pinned like the rest, the
    model's weights and ``torch.export`` program, and the torch backend: the service runs the network in
    torch on the GPU).
    """
    validate_accelerator(accelerator)
    requirements = python_requirements(accelerator)
    import bentoml
    from bentoml._internal.bento.build_config import BentoEnvSchema

    spec = load_spec(model_dir)
    onnx_file = Path(model_dir) / spec.files.get("onnx", ONNX_FILE)
    if not onnx_file.is_file():
        raise ModelFormatError(
            f"model {model_dir} has no ONNX export ({onnx_file.name}): the service runs it; models this library "
            "trains carry one, and a custom script writes it with components.train.contract.save_model"
        )
    evaluation = dict(evaluation or {})
    labels = {
        "architecture": _label(spec.architecture),
        "dataset_commit": _label(spec.dataset.get("commit", "unknown")),
        "library_version": _label(__version__),
        "accelerator": accelerator,
    }
    with bentoml.models.create(
        model_name,
        labels=labels,
        metadata={"classes": spec.classes, "input_shape": spec.input_shape, "evaluation": evaluation},
    ) as model_ref:
        shutil.copy2(Path(model_dir) / SPEC_FILE, Path(model_ref.path) / SPEC_FILE)
        shutil.copy2(onnx_file, Path(model_ref.path) / onnx_file.name)
        if accelerator == "cuda":  # torch rebuilds the network from its weights, or loads its program
            for key, name in sorted(spec.files.items()):
                source = Path(model_dir) / name
                if key != "onnx" and source.is_file():
                    shutil.copy2(source, Path(model_ref.path) / name)
    model_tag = str(model_ref.tag)

    bento_labels = {**labels, **{_env_name(k).lower(): _label(v) for k, v in _metrics(evaluation).items()}}
    env = lineage_env(model_tag, labels, evaluation)
    previous = os.environ.get(MODEL_TAG_ENV)
    os.environ[MODEL_TAG_ENV] = model_tag  # the service resolves its model when BentoML imports it
    try:
        docker: dict[str, Any] = {"base_image": base_image} if base_image else {}
        with no_lock_tool(), build_context(accelerator) as context:
            bento = bentoml.bentos.build(
                SERVICE,
                name=bento_name,
                labels=bento_labels,
                description=f"Image classifier {spec.architecture} over {len(spec.classes)} classes ({model_tag}).",
                include=included_files(accelerator),
                # lock_packages off: BentoML's lock resolves against the package index; these are pinned already.
                python={"packages": requirements, "lock_packages": False},
                docker=docker,
                envs=[BentoEnvSchema(name=name, value=value) for name, value in {**env, **BUILD_ENV}.items()],
                models=[model_tag],
                build_ctx=str(context),
            )
    finally:
        if previous is None:
            os.environ.pop(MODEL_TAG_ENV, None)
        else:
            os.environ[MODEL_TAG_ENV] = previous

    with atomic_directory(output_dir) as staging:
        name = f"{bento.tag.name}-{bento.tag.version}.{ARCHIVE_FORMAT}"
        # Absolute: BentoML's export resolves a relative path against the filesystem's root, not the working directory.
        target = (staging / name).resolve()
        archive = Path(bentoml.export_bento(bento.tag, str(target), output_format=ARCHIVE_FORMAT))
        descriptor = {
            "bento_tag": str(bento.tag),
            "model_tag": model_tag,
            "archive": archive.name,
            "size_bytes": archive.stat().st_size,
            "labels": bento_labels,
            "env": env,
            "accelerator": accelerator,
            "evaluation": evaluation,
        }
        write_json_atomic(staging / DESCRIPTOR, descriptor)
    return descriptor


def read_descriptor(bento_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(bento_dir) / DESCRIPTOR).read_text())

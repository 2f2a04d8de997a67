"""Package a trained model as a BentoML bento and export it as an archive.

Plain Python over BentoML's API, no KFP: the model's ``spec.json`` and ONNX
export (``model.onnx``) are imported into the BentoML model store with labels
and metadata, a bento is built from ``serving/`` (the service plus the torch-free
modules it imports: spec, image preprocessing, ONNX Runtime), and the bento is
exported to ``<output_dir>/<name>-<version>.bento`` with ``bento.json``
describing it. The bento needs neither torch nor torchvision, nor the code of a
``model_factory``. The output directory appears only on success.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from components import __version__
from components.common.artifacts import atomic_directory, write_json_atomic
from components.common.spec import ONNX_FILE, SPEC_FILE, ModelFormatError, load_spec

SERVICE = "serving.service:ImageClassifier"
BENTO_NAME = "image-classifier"
MODEL_NAME = "image-classifier"
MODEL_TAG_ENV = "KFP_TORCH_LIFECYCLE_MODEL_TAG"
DESCRIPTOR = "bento.json"
# What the bento carries: the service and the torch-free modules it imports, nothing else of the library.
INCLUDE = ["serving/__init__.py", "serving/service.py", "serving/validation.py", "components/__init__.py"]
INCLUDE += [f"components/common/{name}.py" for name in ("__init__", "spec", "images", "onnx_model", "resources")]


def library_root() -> Path:
    """The directory holding the ``serving`` and ``components`` packages (the repo, or site-packages)."""
    import serving

    return Path(serving.__file__).resolve().parent.parent


def python_requirements() -> list[str]:
    """What the service imports, pinned to the versions evaluate checked the export with."""
    import numpy
    import onnxruntime
    import PIL

    return [f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}", f"pillow=={PIL.__version__}"]


def _label(value: Any) -> str:
    """BentoML labels follow Kubernetes label rules: at most 63 characters."""
    return str(value)[:63]


def build_bento(
    model_dir: str | Path,
    output_dir: str | Path,
    evaluation: dict[str, Any] | None = None,
    model_name: str = MODEL_NAME,
    bento_name: str = BENTO_NAME,
    base_image: str = "",
) -> dict[str, Any]:
    """Import the model, build and export the bento; return what ``bento.json`` holds."""
    import bentoml

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
    }
    with bentoml.models.create(
        model_name,
        labels=labels,
        metadata={"classes": spec.classes, "input_shape": spec.input_shape, "evaluation": evaluation},
    ) as model_ref:
        shutil.copy2(Path(model_dir) / SPEC_FILE, Path(model_ref.path) / SPEC_FILE)
        shutil.copy2(onnx_file, Path(model_ref.path) / onnx_file.name)
    model_tag = str(model_ref.tag)

    previous = os.environ.get(MODEL_TAG_ENV)
    os.environ[MODEL_TAG_ENV] = model_tag  # the service resolves its model when BentoML imports it
    try:
        docker: dict[str, Any] = {"env": {MODEL_TAG_ENV: model_tag}}
        if base_image:
            docker["base_image"] = base_image
        bento = bentoml.bentos.build(
            SERVICE,
            name=bento_name,
            labels=labels,
            description=f"Image classifier {spec.architecture} over {len(spec.classes)} classes ({model_tag}).",
            include=INCLUDE,
            python={"packages": python_requirements()},
            docker=docker,
            models=[model_tag],
            build_ctx=str(library_root()),
        )
    finally:
        if previous is None:
            os.environ.pop(MODEL_TAG_ENV, None)
        else:
            os.environ[MODEL_TAG_ENV] = previous

    with atomic_directory(output_dir) as staging:
        archive = Path(bentoml.export_bento(bento.tag, str(staging / f"{bento.tag.name}-{bento.tag.version}.bento")))
        descriptor = {
            "bento_tag": str(bento.tag),
            "model_tag": model_tag,
            "archive": archive.name,
            "size_bytes": archive.stat().st_size,
            "labels": labels,
            "evaluation": evaluation,
        }
        write_json_atomic(staging / DESCRIPTOR, descriptor)
    return descriptor


def read_descriptor(bento_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(bento_dir) / DESCRIPTOR).read_text())

"""BentoML service for the image classifiers this library trains, on ONNX Runtime.

Two services, as BentoML composes them: ``ImageClassifier`` answers HTTP,
checks every request and turns JSON arrays or PNG/JPEG uploads of any size into
the model's input batch, with the preprocessing recorded in ``spec.json``;
``ClassifierModel`` runs the Model's ONNX export (``model.onnx``) with ONNX
Runtime in a batchable API, so concurrent requests are merged by BentoML's
adaptive batching. Neither imports torch or torchvision: a model from a
``model_factory`` is served without the factory's code.

Which model: the BentoML model tag in ``KFP_TORCH_LIFECYCLE_MODEL_TAG``
(default ``image-classifier:latest``), imported by ``build_bento`` from a
``Model`` artifact. ``KFP_TORCH_LIFECYCLE_BATCHING=off`` turns batching off
(for comparison benchmarks). Health (``/livez``, ``/readyz``) and Prometheus
metrics (``/metrics``) are BentoML's own.
"""

import os
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, InvalidArgument

from serving.validation import InvalidImages, arrays_to_batch, files_to_batch

MODEL_TAG = os.environ.get("KFP_TORCH_LIFECYCLE_MODEL_TAG", "image-classifier:latest")
BATCHING = os.environ.get("KFP_TORCH_LIFECYCLE_BATCHING", "on").lower() not in ("off", "0", "false")
MAX_BATCH_SIZE = 64
# The latency budget the adaptive batcher must keep; requests it expects to miss it are refused
# with 503, so it must leave room for a busy machine, not just the model's own time.
MAX_LATENCY_MS = 1000


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@bentoml.service(name="classifier_model", workers=1, traffic={"timeout": 30})
class ClassifierModel:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from components.common.onnx_model import OnnxClassifier
        from components.common.resources import usable_cpus
        from components.common.spec import load_spec

        self.spec = load_spec(self.model_ref.path)
        self.model = OnnxClassifier(
            Path(self.model_ref.path) / self.spec.files.get("onnx", "model.onnx"), threads=usable_cpus()
        )

    @bentoml.api(batchable=BATCHING, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x C x H x W preprocessed images to N x K class probabilities."""
        from components.common.images import normalize

        batch = normalize(images, self.spec.normalization["mean"], self.spec.normalization["std"])
        return softmax(self.model.logits(batch))


@bentoml.service(name="image_classifier", traffic={"timeout": 30})
class ImageClassifier:
    classifier = bentoml.depends(ClassifierModel)
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from components.common.spec import load_spec

        self.spec = load_spec(self.model_ref.path)
        self.info = {
            "model_tag": str(self.model_ref.tag),
            "architecture": self.spec.architecture,
            "classes": self.spec.classes,
            "input_shape": self.spec.input_shape,
            "preprocessing": self.spec.preprocessing,
            "dataset": self.spec.dataset,
            "evaluation": self.model_ref.info.metadata.get("evaluation", {}),
            "versions": self.spec.versions,
        }

    # BentoML 1.4 cannot take Optional[list[Path]] (an unhashable schema inside Union), hence [].
    @bentoml.api
    async def predict(self, images: Optional[list] = None, files: list[Path] = []) -> dict[str, Any]:  # noqa: B006
        """Classify a batch: ``images`` as JSON arrays, or ``files`` as PNG/JPEG uploads (multipart); any size."""
        try:
            if (images is None) == (not files):
                raise InvalidImages(
                    "send either 'images' (a JSON list of arrays) or 'files' (PNG/JPEG uploads), not both or neither"
                )
            if images is not None:  # JSON arrays
                batch = arrays_to_batch(images, self.spec.input_shape)
            else:
                batch = files_to_batch([(f.name, f.read_bytes()) for f in files], self.spec.input_shape)
        except InvalidImages as error:
            status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if "larger than the limit" in str(error) else None
            if status:
                raise BentoMLException(str(error), error_code=status) from None
            raise InvalidArgument(str(error)) from None
        probabilities = await self._probabilities(batch)
        return {"predictions": [self._describe(row) for row in probabilities], "model_tag": self.info["model_tag"]}

    async def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Call the model service; retry a connection the dependency client reused after the server
        closed it (aiohttp's keep-alive race under concurrency). Inference is idempotent."""
        import aiohttp

        for _ in range(2):
            try:
                return await self.classifier.to_async.probabilities(batch)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                continue
        return await self.classifier.to_async.probabilities(batch)  # a third failure is the caller's

    @bentoml.api
    def model_info(self) -> dict[str, Any]:
        """Classes, input shape, preprocessing, dataset commit and evaluation of the served model."""
        return self.info

    def _describe(self, row: np.ndarray) -> dict[str, Any]:
        best = int(row.argmax())
        return {
            "class": self.spec.classes[best],
            "probability": float(row[best]),
            "probabilities": {name: float(p) for name, p in zip(self.spec.classes, row, strict=True)},
        }

"""BentoML service for the image classifiers this library trains, on ONNX Runtime.

One service, ``ImageClassifier``, with the model in process: requests are checked
and decoded off the event loop (a thread pool, and worker processes for JSON, all
sized from the pod's CPU quota), then a micro-batcher (``serving.batching``) merges
concurrent requests' images into batches of at most ``MAX_BATCH_SIZE`` for ONNX
Runtime. Neither torch nor torchvision is imported: a model from a ``model_factory``
is served without the factory's code.

A bento built with ``accelerator="cuda"`` sets ``KFP_TORCH_LIFECYCLE_ACCELERATOR=cuda``
in its image, and the model then runs in torch on the GPU instead
(``serving.torch_backend``: the network rebuilt from its weights, or its
``torch.export`` program for a ``model_factory``'s network); everything else,
batching and validation included, is the same.

``POST /predict`` and ``/model_info`` are answered by ``serving.gate.RequestGate``, an ASGI
middleware that gives every refused request a 4xx in one error shape and every answer an
``X-Request-ID``. ``/predict`` takes the body forms BentoML's clients send for its
signature: JSON ``{"images": [...]}``, multipart uploads in ``files`` (with an optional
``images`` text field), and a form-encoded ``images`` field. Overload is shed with 503 and
``Retry-After`` when the queued images would take longer than
``KFP_TORCH_LIFECYCLE_MAX_QUEUE_SECONDS``, or when the bodies held in memory would exceed
``KFP_TORCH_LIFECYCLE_MAX_INFLIGHT_BYTES``.

Settings (environment): ``KFP_TORCH_LIFECYCLE_MODEL_TAG`` (default
``image-classifier:latest``), ``KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES`` (64 MiB),
``KFP_TORCH_LIFECYCLE_MAX_IMAGE_PIXELS`` (40,000,000 per upload, from its header),
``KFP_TORCH_LIFECYCLE_MAX_QUEUE_SECONDS`` (10), ``KFP_TORCH_LIFECYCLE_MAX_INFLIGHT_BYTES``
(512 MiB), ``KFP_TORCH_LIFECYCLE_BATCHING=off`` (one request per model call, for
comparison) and ``KFP_TORCH_LIFECYCLE_INPUT_SCALE_CHECK=off`` (accept JSON arrays that look
like another scale than the training images', see ``serving.validation.ScaleCheck``).
Health (``/livez``, ``/readyz``) and Prometheus metrics (``/metrics``) are BentoML's own.
"""

import asyncio
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import bentoml
import numpy as np

from serving import forms, validation
from serving.batching import MicroBatcher
from serving.gate import RequestGate
from serving.validation import InvalidImages

MODEL_TAG = os.environ.get("KFP_TORCH_LIFECYCLE_MODEL_TAG", "image-classifier:latest")
BATCHING = os.environ.get("KFP_TORCH_LIFECYCLE_BATCHING", "on").lower() not in ("off", "0", "false")
MAX_BATCH_SIZE = 64
MAX_IMAGE_PIXELS = int(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_IMAGE_PIXELS", validation.MAX_IMAGE_PIXELS))
MAX_QUEUE_SECONDS = float(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_QUEUE_SECONDS", 10))
# JSON (and form-encoded) bodies up to this size are parsed on the event loop (a 64 KiB body takes about a millisecond);
# larger ones in the worker processes, whose round trip would cost small requests more than the parse.
INLINE_JSON_BYTES = 64 * 2**10
FORM_ENCODED = "application/x-www-form-urlencoded"
PICKLE = "application/vnd.bentoml+pickle"

log = logging.getLogger("bentoml.serving.image_classifier")

ACCELERATOR_ENV = "KFP_TORCH_LIFECYCLE_ACCELERATOR"
# cpu: the ONNX export on ONNX Runtime's CPU provider; cuda: the network in torch, on the GPU.
ACCELERATORS = ("cpu", "cuda")


def serving_accelerator() -> str:
    """``KFP_TORCH_LIFECYCLE_ACCELERATOR`` (``cpu`` when unset or empty), checked."""
    accelerator = os.environ.get(ACCELERATOR_ENV) or "cpu"
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"{ACCELERATOR_ENV}={accelerator!r} is not one of {', '.join(ACCELERATORS)}: 'cpu' serves the ONNX "
            "export with ONNX Runtime, 'cuda' serves the network with torch on the GPU"
        )
    return accelerator


def input_scale_check(input_range: dict) -> Optional[validation.ScaleCheck]:
    """The check refusing JSON arrays far darker than nearly every training image (0..1 or 0..16 sent to a
    0..255 model), from the spec's ``input_range``; None when ``KFP_TORCH_LIFECYCLE_INPUT_SCALE_CHECK`` is
    ``off`` (or ``0``, ``false``) or the model has no measured range (format 1 or 2, or a custom script's model)."""
    if os.environ.get(validation.SCALE_CHECK_ENV, "on").lower() in ("off", "0", "false"):
        return None
    return validation.ScaleCheck.from_input_range(input_range)


def model_threads(cpus: int) -> int:
    """The model's intra-op threads: the pod's CPUs less one, which the event loop and the decoders need.

    Measured on 2 cores under load (make bench): one thread served 16,400 images/s in 32-image requests
    and 1,230 in one-image requests at 64 clients, against 12,600 and 1,030 with two threads that fought
    the HTTP path for the cores.
    """
    return max(1, cpus - 1)


def load_backend(model_dir: str | Path, spec, threads: int, accelerator: Optional[str] = None):
    """The model runner for ``accelerator`` (default: from the environment): an object with
    ``.logits(normalized float32 NCHW) -> logits``."""
    accelerator = serving_accelerator() if accelerator is None else accelerator
    if accelerator == "cpu":
        from components.common.onnx_model import OnnxClassifier

        return OnnxClassifier(Path(model_dir) / spec.files.get("onnx", "model.onnx"), threads=threads)
    if accelerator == "cuda":
        from serving.torch_backend import TorchClassifier  # imports torch: only the cuda bento carries it

        backend = TorchClassifier(model_dir, threads=threads)
        log.info("the model runs in torch on %s (%s=cuda)", backend.device, ACCELERATOR_ENV)
        return backend
    raise ValueError(f"accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}")


def unsupported_media_type(media_type: str) -> str:
    """Why a body of ``media_type`` is refused, and what is accepted."""
    accepted = f"send application/json, multipart/form-data or {FORM_ENCODED} (the forms BentoML's clients send)"
    if media_type == PICKLE:  # what BentoML's clients send with media_type="application/vnd.bentoml+pickle"
        return f"Content-Type {media_type!r} is not accepted: unpickling a body runs code its sender chose; {accepted}"
    return f"Content-Type {media_type!r} is not accepted: {accepted}"


def describe_predictions(classes: list[str], probabilities: np.ndarray) -> list[dict[str, Any]]:
    """Each image's best class, its probability and every class's, as Python floats (one ``tolist``)."""
    rows = probabilities.tolist()
    return [
        {"class": classes[best], "probability": row[best], "probabilities": dict(zip(classes, row, strict=True))}
        for row, best in zip(rows, probabilities.argmax(axis=1).tolist(), strict=True)
    ]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@bentoml.service(name="image_classifier", traffic={"timeout": 30})
class ImageClassifier:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from multiprocessing import get_context

        from components.common.resources import usable_cpus
        from components.common.spec import load_spec

        self.spec = load_spec(self.model_ref.path)
        self.scale = input_scale_check(self.spec.input_range)
        if self.scale is not None:
            log.info(
                "JSON images whose largest value is above 0 and at most %g are refused as another scale (%s=off)",
                self.scale.ceiling,
                validation.SCALE_CHECK_ENV,
            )
        self.model_tag = str(self.model_ref.tag)
        self.info = {
            "model_tag": self.model_tag,
            "architecture": self.spec.architecture,
            "classes": self.spec.classes,
            "input_shape": self.spec.input_shape,
            "preprocessing": self.spec.preprocessing,
            "input_range": self.spec.input_range,
            "dataset": self.spec.dataset,
            "evaluation": self.model_ref.info.metadata.get("evaluation", {}),
            "versions": self.spec.versions,
        }
        self.info_body = json.dumps(self.info).encode()
        cpus = usable_cpus()
        self.model = load_backend(self.model_ref.path, self.spec, model_threads(cpus))
        self.batcher = MicroBatcher(self._run, MAX_BATCH_SIZE, MAX_QUEUE_SECONDS, BATCHING)
        self.batcher.calibrate(np.zeros((MAX_BATCH_SIZE, *self.spec.input_shape), dtype=np.uint8))
        self.decoders = ThreadPoolExecutor(cpus, thread_name_prefix="decode")
        # Parsing JSON (and turning nested lists into arrays) holds the GIL: it runs in other processes.
        self.json_parsers = ProcessPoolExecutor(cpus, mp_context=get_context("spawn"))
        self.inflight_bytes = 0
        RequestGate.service = self

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.json_parsers.shutdown(cancel_futures=True)
        self.decoders.shutdown(cancel_futures=True)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        from components.common.images import normalize

        normalized = normalize(batch, self.spec.normalization["mean"], self.spec.normalization["std"])
        return softmax(self.model.logits(normalized))

    async def classify(self, content_type: str, body: bytes) -> dict[str, Any]:
        """A request body (JSON, multipart or form-encoded) to the answer; ``InvalidImages`` or ``Overloaded``
        otherwise."""
        loop = asyncio.get_running_loop()
        shape = list(self.spec.input_shape)
        media_type = content_type.split(";")[0].strip().lower()
        if media_type in ("application/json", "", FORM_ENCODED):
            parse = validation.json_to_batch if media_type != FORM_ENCODED else forms.urlencoded_to_batch
            if len(body) <= INLINE_JSON_BYTES:  # well under a millisecond: not worth a process hop
                batch = parse(body, shape, validation.MAX_BATCH, self.scale)
            else:
                batch = await loop.run_in_executor(
                    self.json_parsers, parse, body, shape, validation.MAX_BATCH, self.scale
                )
        elif media_type == "multipart/form-data":
            batch = await loop.run_in_executor(
                self.decoders,
                forms.multipart_to_batch,
                body,
                content_type,
                shape,
                validation.MAX_BATCH,
                MAX_IMAGE_PIXELS,
                self.scale,
            )
        else:
            raise InvalidImages(unsupported_media_type(media_type), 415, "unsupported_media_type")
        probabilities = await self.batcher.submit(batch)
        return {"predictions": describe_predictions(self.spec.classes, probabilities), "model_tag": self.model_tag}

    # BentoML 1.4 cannot take Optional[list[Path]] (an unhashable schema inside Union), hence [].
    @bentoml.api
    async def predict(self, images: Optional[list] = None, files: list[Path] = []) -> dict[str, Any]:  # noqa: B006
        """Classify a batch: ``images`` as JSON arrays, or ``files`` as PNG/JPEG uploads (multipart); any size.

        Over HTTP, ``RequestGate`` answers this route itself (its schema is this one); this body
        serves in-process calls.
        """
        if (images is None) == (not files):
            raise bentoml.exceptions.InvalidArgument("send either 'images' or 'files', not both or neither")
        loop = asyncio.get_running_loop()
        shape = list(self.spec.input_shape)
        if images is not None:
            batch = await loop.run_in_executor(
                self.decoders, validation.arrays_to_batch, images, shape, validation.MAX_BATCH, self.scale
            )
        else:
            uploads = [(f.name, f.read_bytes()) for f in files]
            batch = await loop.run_in_executor(self.decoders, validation.files_to_batch, uploads, shape)
        probabilities = await self.batcher.submit(batch)
        return {"predictions": describe_predictions(self.spec.classes, probabilities), "model_tag": self.model_tag}

    @bentoml.api
    def model_info(self) -> dict[str, Any]:
        """Classes, input shape, preprocessing, dataset commit and evaluation of the served model."""
        return self.info


ImageClassifier.add_asgi_middleware(RequestGate)

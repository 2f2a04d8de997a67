"""BentoML service for the image classifiers this library trains, on ONNX Runtime.

One service, ``ImageClassifier``, with the model in process: requests are checked
and decoded off the event loop (a thread pool, and worker processes for JSON, all
sized from the pod's CPU quota), then a small asyncio micro-batcher merges
concurrent requests' images into batches of at most ``MAX_BATCH_SIZE`` for ONNX
Runtime. Measured against the former two-service layout (HTTP hop to a batched
model service) it serves more images per second and cannot fail with the
dependency client's "Connector is closed" (see README, Serving). Neither torch
nor torchvision is imported: a model from a ``model_factory`` is served without
the factory's code.

A bento built with ``accelerator="cuda"`` sets ``KFP_TORCH_LIFECYCLE_ACCELERATOR=cuda``
in its image, and the model then runs in torch on the GPU instead
(``serving.torch_backend``: the network rebuilt from its weights, or its
``torch.export`` program for a ``model_factory``'s network); everything else,
batching and validation included, is the same.

``POST /predict`` and ``/model_info`` are answered by ``RequestGate`` (an ASGI
middleware inside BentoML's metrics, tracing and access log), so that every
malformed request, whatever BentoML's parsers would make of it, gets a 4xx with
one error shape::

    {"error": "<code>", "message": "<what is wrong, naming the client's file>", "request_id": "<id>"}

and every response carries ``X-Request-ID`` (the client's, when it sends a plain
token, else a new one), also in the one INFO log line written per refused request.
Overload is shed with 503 and ``Retry-After`` when the queued images would take
longer than ``KFP_TORCH_LIFECYCLE_MAX_QUEUE_SECONDS``, or when the bodies held in
memory would exceed ``KFP_TORCH_LIFECYCLE_MAX_INFLIGHT_BYTES``.

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
import collections
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import bentoml
import numpy as np
import orjson

from serving import validation
from serving.validation import InvalidImages

MODEL_TAG = os.environ.get("KFP_TORCH_LIFECYCLE_MODEL_TAG", "image-classifier:latest")
BATCHING = os.environ.get("KFP_TORCH_LIFECYCLE_BATCHING", "on").lower() not in ("off", "0", "false")
MAX_BATCH_SIZE = 64
MAX_BODY_BYTES = int(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES", 64 * 2**20))
MAX_IMAGE_PIXELS = int(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_IMAGE_PIXELS", validation.MAX_IMAGE_PIXELS))
MAX_QUEUE_SECONDS = float(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_QUEUE_SECONDS", 10))
MAX_INFLIGHT_BYTES = int(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_INFLIGHT_BYTES", 512 * 2**20))
# JSON bodies up to this size are parsed on the event loop (a 64 KiB body takes about a millisecond);
# larger ones in the worker processes, whose round trip would cost small requests more than the parse.
INLINE_JSON_BYTES = 64 * 2**10
# A refused body is read to its end (so the client sees the answer, not a reset) up to this much.
MAX_DRAIN_BYTES = 1 << 30

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
    ``off`` (or ``0``, ``false``) or the model has no measured range (trained before it was recorded)."""
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


class Overloaded(Exception):
    """Shed this request: the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class MicroBatcher:
    """Merge concurrent requests' images into model calls of at most ``max_batch`` images.

    Greedy: while the model runs, arriving images queue; the next call takes what is queued (up to
    ``max_batch``). A request larger than ``max_batch`` is split into chunks. The budget counts
    images: a request whose images would wait longer than ``max_queue_seconds`` (at the measured
    seconds per image) is refused with ``Overloaded``.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_queue_seconds: float):
        self.run, self.max_batch, self.max_queue_seconds = run, max_batch, max_queue_seconds
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="onnx")  # ONNX Runtime has its own threads
        self.queue: collections.deque = collections.deque()
        self.queued_images = 0
        self.seconds_per_image = 0.0
        self.wakeup: Optional[asyncio.Event] = None
        self.worker: Optional[asyncio.Task] = None

    def calibrate(self, sample: np.ndarray) -> None:
        """Time a full batch (after a warm-up call): what a queued image costs under load."""
        self.run(sample)
        began = time.perf_counter()
        self.run(sample)
        self.seconds_per_image = (time.perf_counter() - began) / len(sample)

    async def submit(self, batch: np.ndarray) -> np.ndarray:
        wait = (self.queued_images + len(batch)) * self.seconds_per_image
        if self.queued_images and wait > self.max_queue_seconds:
            raise Overloaded(
                f"the server is busy: {self.queued_images} images are queued (about {wait:.1f} s of work); retry later",
                math.ceil(self.queued_images * self.seconds_per_image),
            )
        if self.worker is None or self.worker.done():
            self.wakeup = asyncio.Event()
            self.worker = asyncio.get_running_loop().create_task(self._work())
        loop = asyncio.get_running_loop()
        futures = []
        step = self.max_batch if BATCHING else len(batch)
        for start in range(0, len(batch), step):
            future = loop.create_future()
            self.queue.append((batch[start : start + step], future))
            self.queued_images += len(batch[start : start + step])
            futures.append(future)
        self.wakeup.set()
        return np.concatenate(await asyncio.gather(*futures))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                taken, size = [], 0
                while self.queue and (not taken or (BATCHING and size + len(self.queue[0][0]) <= self.max_batch)):
                    chunk, future = self.queue.popleft()
                    taken.append((chunk, future))
                    size += len(chunk)
                began = time.perf_counter()
                try:
                    result = await loop.run_in_executor(
                        self.executor, self.run, np.concatenate([chunk for chunk, _ in taken])
                    )
                except Exception as error:  # a real fault: every waiting request gets it
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(error)
                    continue
                finally:
                    self.queued_images -= size
                if size >= self.max_batch // 2:  # queued images run in full batches: small ones say little
                    per_image = (time.perf_counter() - began) / size
                    self.seconds_per_image = 0.8 * self.seconds_per_image + 0.2 * per_image
                offset = 0
                for chunk, future in taken:
                    if not future.done():
                        future.set_result(result[offset : offset + len(chunk)])
                    offset += len(chunk)


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
        self.batcher = MicroBatcher(self._run, MAX_BATCH_SIZE, MAX_QUEUE_SECONDS)
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
        """A request body (JSON or multipart) to the answer; ``InvalidImages`` or ``Overloaded`` otherwise."""
        loop = asyncio.get_running_loop()
        shape = list(self.spec.input_shape)
        media_type = content_type.split(";")[0].strip().lower()
        if media_type in ("application/json", "") and len(body) <= INLINE_JSON_BYTES:
            # well under a millisecond: not worth a process hop
            batch = validation.json_to_batch(body, shape, validation.MAX_BATCH, self.scale)
        elif media_type in ("application/json", ""):
            batch = await loop.run_in_executor(
                self.json_parsers, validation.json_to_batch, body, shape, validation.MAX_BATCH, self.scale
            )
        elif media_type == "multipart/form-data":
            batch = await loop.run_in_executor(
                self.decoders,
                validation.multipart_to_batch,
                body,
                content_type,
                shape,
                validation.MAX_BATCH,
                MAX_IMAGE_PIXELS,
            )
        else:
            raise InvalidImages(
                f"Content-Type {media_type!r} is not accepted: send application/json or multipart/form-data",
                415,
                "unsupported_media_type",
            )
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


class RequestGate:
    """ASGI middleware answering ``POST /predict`` and ``/model_info`` (all other paths pass through).

    Reads the body within ``MAX_BODY_BYTES`` (413 beyond), hands it to the service off the event
    loop, and turns every refusal into one JSON error shape with a request id.
    """

    service: Optional[ImageClassifier] = None

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "").rstrip("/")
        if scope["type"] != "http" or path not in ("/predict", "/model_info") or self.service is None:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        rid = validation.request_id(headers.get("x-request-id")) or uuid.uuid4().hex
        if path == "/model_info":
            await self._respond(send, 200, self.service.info_body, rid)
            return
        if scope["method"] != "POST":
            await self._refuse(
                send, rid, 405, "method_not_allowed", "POST /predict with JSON or multipart", {"allow": "POST"}
            )
            return
        service, reserved = self.service, 0
        try:
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
                await self._drain(receive)
                raise InvalidImages(
                    f"the body ({declared} bytes) is larger than the limit of {MAX_BODY_BYTES} bytes "
                    "(KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES)",
                    413,
                    "body_too_large",
                )
            reserved = int(declared or 0)
            if service.inflight_bytes + reserved > MAX_INFLIGHT_BYTES:
                reserved = 0
                await self._drain(receive)
                raise Overloaded("the server is busy: too many request bodies are being processed; retry later", 1)
            service.inflight_bytes += reserved
            body = await self._read(receive)
            answer = await service.classify(headers.get("content-type", ""), body)
        except InvalidImages as error:
            await self._refuse(send, rid, error.status, error.code, error.message)
        except Overloaded as error:
            headers_ = {"retry-after": str(error.retry_after)}
            await self._refuse(send, rid, 503, "overloaded", str(error), headers_)
        except Exception:
            log.exception("request %s: server fault", rid)
            await self._refuse(send, rid, 500, "internal_error", "the server failed; see its log for this request id")
        else:
            await self._respond(send, 200, orjson.dumps(answer), rid)
        finally:
            service.inflight_bytes -= reserved

    @staticmethod
    async def _read(receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidImages("the client disconnected before sending the whole body", 400, "incomplete_body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await RequestGate._drain(receive)
                raise InvalidImages(
                    f"the body is larger than the limit of {MAX_BODY_BYTES} bytes (KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES)",
                    413,
                    "body_too_large",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _drain(receive) -> None:
        """Read a refused body to its end (discarding it) so the client gets the answer, not a reset."""
        drained = 0
        while drained < MAX_DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    @staticmethod
    async def _respond(send, status: int, body: bytes, rid: str, extra: Optional[dict] = None) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(b"x-request-id", rid.encode())]
        headers += [(key.encode(), value.encode()) for key, value in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _refuse(self, send, rid: str, status: int, code: str, message: str, extra: Optional[dict] = None) -> None:
        if status < 500:
            log.info("request %s refused with %d %s: %s", rid, status, code, message)
        body = json.dumps({"error": code, "message": message, "request_id": rid}).encode()
        await self._respond(send, status, body, rid, extra)


ImageClassifier.add_asgi_middleware(RequestGate)

"""The ASGI middleware that answers ``POST /predict`` and ``/model_info`` for the service.

It sits inside BentoML's metrics, tracing and access log, so that every malformed request,
whatever BentoML's parsers would make of it, gets a 4xx with one error shape::

    {"error": "<code>", "message": "<what is wrong, naming the client's file>", "request_id": "<id>"}

and every response carries ``X-Request-ID`` (the client's, when it sends a plain token, else
a new one), also in the one INFO log line written per refused request. A body is read within
``KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES`` (413 beyond, whether or not it declares its length);
a request is shed with 503 and ``Retry-After`` when the bodies held in memory would exceed
``KFP_TORCH_LIFECYCLE_MAX_INFLIGHT_BYTES``, or when the service says it is overloaded.
"""

import json
import logging
import os
import uuid
from typing import Protocol

import orjson

from serving.batching import Overloaded
from serving.validation import InvalidImages, request_id

MAX_BODY_BYTES = int(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES", 64 * 2**20))
MAX_INFLIGHT_BYTES = int(os.environ.get("KFP_TORCH_LIFECYCLE_MAX_INFLIGHT_BYTES", 512 * 2**20))
# A refused body is read to its end (so the client sees the answer, not a reset) up to this much.
MAX_DRAIN_BYTES = 1 << 30

log = logging.getLogger("bentoml.serving.image_classifier")


class GatedService(Protocol):
    """What the gate needs of the service."""

    info_body: bytes  # the answer of /model_info
    inflight_bytes: int  # request bodies held in memory now, the gate's to count

    async def classify(self, content_type: str, body: bytes) -> dict:
        """A request body to the answer; ``InvalidImages`` or ``Overloaded`` otherwise."""


class RequestGate:
    """ASGI middleware answering ``POST /predict`` and ``/model_info`` (all other paths pass through).

    Reads the body within ``max_body_bytes`` (413 beyond), hands it to the service off the event
    loop, and turns every refusal into one JSON error shape with a request id. ``service`` is set
    by the service when it starts; until then every request passes through.
    """

    service: GatedService | None = None

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES, max_inflight_bytes: int = MAX_INFLIGHT_BYTES) -> None:
        self.app = app
        self.max_body_bytes, self.max_inflight_bytes = max_body_bytes, max_inflight_bytes

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "").rstrip("/")
        if scope["type"] != "http" or path not in ("/predict", "/model_info") or self.service is None:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        rid = request_id(headers.get("x-request-id")) or uuid.uuid4().hex
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
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
                await self._drain(receive)
                raise InvalidImages(
                    f"the body ({declared} bytes) is larger than the limit of {self.max_body_bytes} bytes "
                    "(KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES)",
                    413,
                    "body_too_large",
                )
            reserved = int(declared or 0)
            if service.inflight_bytes + reserved > self.max_inflight_bytes:
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

    async def _read(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidImages("the client disconnected before sending the whole body", 400, "incomplete_body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                if message.get("more_body", False):  # past the last chunk, receive() would wait for a hang-up
                    await self._drain(receive)
                raise InvalidImages(
                    f"the body is larger than the limit of {self.max_body_bytes} bytes "
                    "(KFP_TORCH_LIFECYCLE_MAX_BODY_BYTES)",
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
    async def _respond(send, status: int, body: bytes, rid: str, extra: dict | None = None) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(b"x-request-id", rid.encode())]
        headers += [(key.encode(), value.encode()) for key, value in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _refuse(self, send, rid: str, status: int, code: str, message: str, extra: dict | None = None) -> None:
        if status < 500:
            log.info("request %s refused with %d %s: %s", rid, status, code, message)
        body = json.dumps({"error": code, "message": message, "request_id": rid}).encode()
        await self._respond(send, status, body, rid, extra)

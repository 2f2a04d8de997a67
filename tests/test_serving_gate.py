"""The request gate and the service's body handling without a server: ASGI messages in, answers out.

``RequestGate`` runs over the service's own ``classify`` (JSON, multipart and form-encoded bodies,
the real checks and micro-batcher) with a stand-in model, so the status of every refusal, the
body-size check while reading, and the 503 with ``Retry-After`` are each decided here, not left to
whatever load a server test happens to produce.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.batching import MicroBatcher, Overloaded
from serving.gate import RequestGate
from serving.service import ImageClassifier
from serving.validation import MAX_BATCH

ERROR_KEYS = {"error", "message", "request_id"}
SHAPE = (1, 8, 8)


class Service:
    """What the gate talks to: the service's own ``classify`` over a model that answers [0.25, 0.75]."""

    classify = ImageClassifier.inner.classify

    def __init__(self, release: threading.Event | None = None):
        self.spec = SimpleNamespace(input_shape=SHAPE, classes=["a", "b"])
        self.scale = None
        self.model_tag = "image-classifier:test"
        self.info_body = json.dumps({"classes": ["a", "b"]}).encode()
        self.inflight_bytes = 0
        self.json_parsers = self.decoders = ThreadPoolExecutor(2)
        self.release = release
        self.batches: list[int] = []
        self.batcher = MicroBatcher(self.run, max_batch=64, max_queue_seconds=10)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.release is not None:
            self.release.wait(timeout=60)
        self.batches.append(len(batch))
        return np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(batch), 1))


class Exchange:
    """One request through the gate: the ASGI messages it read and the answer it sent."""

    def __init__(self, status: int, headers: dict[str, str], body: dict, chunks_read: int):
        self.status, self.headers, self.body, self.chunks_read = status, headers, body, chunks_read


async def exchange(
    gate: RequestGate, body: bytes | list[bytes], headers: dict[str, str], method="POST", path="/predict", hang_up=False
):
    """The gate's answer to a request whose body comes in ``body``'s chunks (then, with ``hang_up``, a disconnect)."""
    chunks = body if isinstance(body, list) else [body]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": hang_up or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    messages += [{"type": "http.disconnect"}] if hang_up else []
    read = 0

    async def receive():
        nonlocal read
        if read == len(messages):  # a server would wait here until the client goes away
            raise AssertionError("receive() called after the whole body was read")
        read += 1
        return messages[read - 1]

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
    }
    await gate(scope, receive, send)
    start, answer = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    response_headers = {key.decode(): value.decode() for key, value in start["headers"]}
    return Exchange(start["status"], response_headers, json.loads(answer), read)


async def passed_through(scope, receive, send):
    raise AssertionError(f"{scope['path']} should have been answered by the gate")


def send(body, headers, service=None, method="POST", path="/predict", hang_up=False, **limits) -> Exchange:
    gate = RequestGate(passed_through, **limits)
    gate.service = service or Service()
    return asyncio.run(exchange(gate, body, headers, method, path, hang_up))


def with_length(body: bytes, content_type: str) -> dict[str, str]:
    return {"content-type": content_type, "content-length": str(len(body))}


# --- the bodies BentoML's clients (httpx underneath) send ------------------------------------------------


def png(value: int = 0, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    data = bytearray(png())
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:33] = ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def client_request(data: dict, files: list) -> tuple[bytes, dict[str, str]]:
    """The body and headers httpx builds from ``data`` and ``files``, as BentoML's HTTP clients call it."""
    request = httpx.Client(base_url="http://service").build_request("POST", "/predict", data=data, files=files)
    return request.read(), {k: v for k, v in request.headers.items() if k in ("content-type", "content-length")}


def json_images(n: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"images": [np.zeros((8, 8), dtype=int).tolist()] * n}).encode()
    return body, with_length(body, "application/json")


def form_images(n: int) -> tuple[bytes, dict[str, str]]:  # what client.predict(images=[...]) sends
    return client_request({"images": json.dumps([np.zeros((8, 8), dtype=int).tolist()] * n)}, [])


def file_uploads(n: int, content: bytes | None = None) -> tuple[bytes, dict[str, str]]:  # client.predict(files=...)
    return client_request({}, [("files", (f"digit-{i}.png", content or png(i % 256), "image/png")) for i in range(n)])


ENCODINGS = {"json": json_images, "form-encoded": form_images, "multipart": file_uploads}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_the_batch_size_limit_is_256_images_in_every_encoding(encoding):
    answer = send(*ENCODINGS[encoding](MAX_BATCH))
    assert answer.status == 200 and len(answer.body["predictions"]) == MAX_BATCH == 256
    refused = send(*ENCODINGS[encoding](MAX_BATCH + 1))
    assert (refused.status, refused.body["error"]) == (413, "batch_too_large")
    assert refused.body["message"] == "batch of 257 images is larger than the limit of 256; split it"


REFUSALS = {
    "too many images": (lambda: json_images(MAX_BATCH + 1), 413, "batch_too_large"),
    "decompression bomb": (lambda: file_uploads(1, png_claiming(20000, 20000)), 413, "image_too_large"),
    "declared body too large": (lambda: (b"{}", {"content-length": str(2**40)}), 413, "body_too_large"),
    "gif upload": (lambda: file_uploads(1, gif()), 415, "unsupported_format"),
    "plain text": (lambda: (b"hello", with_length(b"hello", "text/plain")), 415, "unsupported_media_type"),
    "pickle": (lambda: (b"\x80\x05N.", with_length(b"\x80\x05N.", "application/vnd.bentoml+pickle")), 415, None),
    "bad json": (lambda: (b'{"images": [', with_length(b'{"images": [', "application/json")), 400, "malformed_json"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_each_refusal_keeps_its_own_4xx_status_and_code(kind):
    make, status, code = REFUSALS[kind]
    answer = send(*make())
    assert answer.status == status, answer.body
    assert set(answer.body) == ERROR_KEYS and answer.headers["x-request-id"] == answer.body["request_id"]
    assert answer.body["error"] == (code or "unsupported_media_type")


def test_a_pickled_body_is_refused_saying_why():
    answer = send(*REFUSALS["pickle"][0]())
    assert "unpickling a body runs code its sender chose" in answer.body["message"]
    assert "application/x-www-form-urlencoded" in answer.body["message"]


def test_a_method_other_than_post_is_405_with_allow():
    answer = send(b"", {}, method="GET")
    assert (answer.status, answer.body["error"], answer.headers["allow"]) == (405, "method_not_allowed", "POST")


def test_model_info_is_answered_whatever_the_body():
    answer = send(b"\x80\x05}\x94.", {"content-type": "application/vnd.bentoml+pickle"}, path="/model_info")
    assert (answer.status, answer.body) == (200, {"classes": ["a", "b"]})


# --- the body size, declared or not ------------------------------------------------------------------------


@pytest.mark.parametrize("over_by", [1, 150], ids=["in the last chunk", "before the last chunk"])
def test_a_chunked_body_over_the_limit_is_413_while_it_is_read_and_is_drained(over_by):
    body, _ = json_images(3)
    limit = len(body) - over_by
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
    service = Service()
    answer = send(chunks, {"content-type": "application/json"}, service, max_body_bytes=limit)  # no Content-Length
    assert (answer.status, answer.body["error"]) == (413, "body_too_large")
    assert f"larger than the limit of {limit} bytes" in answer.body["message"]
    assert answer.chunks_read == len(chunks)  # read to its end (and no further): the answer, not a reset or a wait
    assert service.batches == []
    within = send(chunks, {"content-type": "application/json"}, max_body_bytes=len(body))
    assert within.status == 200 and len(within.body["predictions"]) == 3


def test_a_client_that_hangs_up_mid_body_is_told_so():
    body, _ = json_images(3)
    answer = send([body[:100]], {"content-type": "application/json"}, hang_up=True)
    assert (answer.status, answer.body["error"]) == (400, "incomplete_body")


# --- overload: 503 with Retry-After, forced -------------------------------------------------------------


def test_bodies_over_the_inflight_budget_are_shed_with_503_and_retry_after():
    body, headers = json_images(2)
    service = Service()
    service.inflight_bytes = 100  # bodies other requests hold
    answer = send(body, headers, service, max_inflight_bytes=len(body) + 99)
    assert (answer.status, answer.body["error"], answer.headers["retry-after"]) == (503, "overloaded", "1")
    assert "too many request bodies" in answer.body["message"] and service.batches == []
    assert service.inflight_bytes == 100  # nothing of this request stays counted
    assert send(body, headers, service, max_inflight_bytes=len(body) + 100).status == 200


def test_a_queue_over_its_time_budget_is_shed_with_503_and_the_wait_in_retry_after():
    release = threading.Event()
    service = Service(release)
    service.batcher.seconds_per_image = 0.5  # 64 queued images: 32 s of work, over the 10 s budget
    gate = RequestGate(passed_through)
    gate.service = service

    async def main():
        first = asyncio.ensure_future(exchange(gate, *json_images(64)))
        while not service.batcher.queued_images:  # the first request is queued behind the held model
            await asyncio.sleep(0.01)
        shed = await exchange(gate, *json_images(1))
        release.set()
        return await first, shed

    served, shed = asyncio.run(main())
    assert served.status == 200 and len(served.body["predictions"]) == 64
    assert (shed.status, shed.body["error"]) == (503, "overloaded")
    assert shed.headers["retry-after"] == "32"  # ceil(64 queued images x 0.5 s)
    assert "64 images are queued" in shed.body["message"]


def test_an_overloaded_service_becomes_503_with_its_retry_after():
    service = Service()

    async def overloaded(content_type, body):
        raise Overloaded("the server is busy", 7)

    service.classify = overloaded
    answer = send(*json_images(1), service)
    assert (answer.status, answer.body["error"], answer.headers["retry-after"]) == (503, "overloaded", "7")


# --- every form BentoML's clients send for predict(images, files) -----------------------------------------


def test_the_forms_bentomls_clients_send_are_all_answered():
    arrays = [np.full((8, 8), 40, dtype=int).tolist(), np.full((8, 8), 200, dtype=int).tolist()]
    as_json = send(json.dumps({"images": arrays}).encode(), {"content-type": "application/json"})
    forms = {
        "predict(images=...)": client_request({"images": json.dumps(arrays)}, []),
        "predict(files=...)": client_request({}, [("files", ("a.png", png(40), "image/png"))]),
        "predict(files=..., images=None)": client_request(
            {"images": "null"}, [("files", ("a.png", png(40), "image/png"))]
        ),  # what a client built with service= sends: every field, null when not given
    }
    for call, (body, headers) in forms.items():
        answer = send(body, headers)
        assert answer.status == 200, (call, answer.body)
        assert answer.body["predictions"][0] == as_json.body["predictions"][0], call
        assert answer.body["model_tag"] == "image-classifier:test"


@pytest.mark.parametrize(
    "data, files, code, message",
    [
        ({"images": "[]", "other": "1"}, [], "unknown_field", "field 'other' is not accepted"),
        ({"files": "http://169.254.169.254/latest"}, [], "not_a_file", "field 'files' is a text field"),
        ({"images": "[[[1, 2]"}, [], "malformed_json", "field 'images' is not valid JSON"),
        ({"images": "[]"}, [], "empty_batch", "empty batch"),
        ({"images": "null"}, [], "empty_batch", "empty batch"),
        ({"images": "[[[0]]]"}, [("files", ("a.png", png(), "image/png"))], "invalid_input", "not both"),
        ({}, [("images", ("a.json", b"[]", "application/json"))], "unknown_field", "'images' is a text field"),
    ],
)
def test_malformed_forms_are_refused_in_the_one_error_shape(data, files, code, message):
    answer = send(*client_request(data, files))
    assert answer.status == 400 and set(answer.body) == ERROR_KEYS
    assert answer.body["error"] == code and message in answer.body["message"]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"images=%5B%5D&images=%5B%5D", "field 'images' is given twice"),
        (b"images", "bad query field: 'images'"),
        (b"images=%FF", "not percent-encoded UTF-8"),
        ("images=\u00e9".encode(), "not percent-encoded UTF-8"),
        (b"&".join([b"a=1"] * 2000), "Max number of fields exceeded"),
    ],
)
def test_malformed_form_encoded_bodies_are_named(body, message):
    answer = send(body, with_length(body, "application/x-www-form-urlencoded"))
    assert answer.status == 400 and message in answer.body["message"], answer.body

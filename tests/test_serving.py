"""The BentoML service: request validation, and a real `bentoml serve` of a bento built by build_bento."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.common.dataset import load_split
from components.common.model import load_model
from components.train.trainer import TrainConfig, train
from serving.validation import InvalidImages, arrays_to_batch, files_to_batch

SHAPE = (1, 8, 8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- validation rules (no server) -----------------------------------------------------------------


def test_arrays_in_every_accepted_layout():
    images = np.arange(2 * 64).reshape(2, 8, 8) % 256
    assert arrays_to_batch(images.tolist(), SHAPE).shape == (2, 1, 8, 8)
    assert arrays_to_batch(images[:, None].tolist(), SHAPE).dtype == np.uint8
    rgb = np.zeros((1, 4, 4, 3))
    assert arrays_to_batch(rgb.tolist(), (3, 4, 4)).shape == (1, 3, 4, 4)


@pytest.mark.parametrize(
    "images, message",
    [
        ([], r"empty batch"),
        ([[0] * 8] * 8, r"images have shape \(8, 8\); expected each image 8x8 or 1x8x8"),
        ([np.zeros((9, 9)).tolist()], r"shape \(1, 9, 9\)"),
        ([[["x"] * 8] * 8], r"images must hold numbers, got dtype <U1"),
        ([[[float("nan")] * 8] * 8], r"NaN or infinite"),
        ([[[300] * 8] * 8], r"within 0..255, got 300..300"),
        ([[[1, 2], [3]]], r"ragged"),
        ("not a list", r"images must be a list of arrays"),
    ],
)
def test_bad_arrays_are_named(images, message):
    with pytest.raises(InvalidImages, match=message):
        arrays_to_batch(images, SHAPE)


def test_files_and_bad_files():
    assert files_to_batch([("a.png", png(np.full((8, 8), 7)))], SHAPE)[0, 0, 0, 0] == 7
    with pytest.raises(InvalidImages, match=r"file 'notes.txt' is not a PNG or JPEG image"):
        files_to_batch([("notes.txt", b"hello")], SHAPE)
    with pytest.raises(InvalidImages, match=r"file 'big.png' is 16x16; expected each image 8x8"):
        files_to_batch([("big.png", png(np.zeros((16, 16))))], SHAPE)
    with pytest.raises(InvalidImages, match=r"larger than the limit of 256"):
        files_to_batch([("a.png", b"")] * 257, SHAPE)


# --- a real bento served by `bentoml serve` ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def post_json(url: str, payload) -> tuple[int, dict]:
    return post(url, json.dumps(payload).encode(), "application/json")


def post_files(url: str, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
        for name, content in files
    ]
    return post(url, b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


@pytest.fixture(scope="module")
def served_bento(digits_dir, tmp_path_factory):
    """A model trained here, packaged by build_bento, served by `bentoml serve` on 127.0.0.1."""
    root = tmp_path_factory.mktemp("serving")
    train(digits_dir, root / "model", TrainConfig(epochs=3))
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml"), "DO_NOT_TRACK": "true"}
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from components.build_bento.packaging import build_bento; "
            "print(json.dumps(build_bento(sys.argv[1], sys.argv[2], evaluation={'accuracy': 0.97})))",
            str(root / "model"),
            str(root / "bento"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    descriptor = json.loads(built.stdout.strip().splitlines()[-1])
    port = free_port()
    log = open(root / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", descriptor["bento_tag"], "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,  # not the repository: the bento's own copy of the code is served
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None:
            raise RuntimeError((root / "serve.log").read_text()[-3000:])
        time.sleep(0.5)
    else:
        server.kill()
        raise RuntimeError("bentoml serve did not become ready: " + (root / "serve.log").read_text()[-3000:])
    yield {"url": url, "model_dir": root / "model", "descriptor": descriptor}
    os.killpg(server.pid, 15)
    server.wait(timeout=30)
    log.close()


def direct_probabilities(model_dir: Path, images: np.ndarray) -> np.ndarray:
    model, spec = load_model(model_dir)
    with torch.no_grad():
        return torch.softmax(model(spec.normalize(torch.from_numpy(images))), dim=1).numpy()


@pytest.mark.slow
def test_served_predictions_equal_direct_pytorch(served_bento, digits_dir):
    test = load_split(digits_dir, "test")
    images = test.images[:40].numpy()
    expected = direct_probabilities(served_bento["model_dir"], images)

    status, answer = post_json(f"{served_bento['url']}/predict", {"images": images[:, 0].tolist()})
    assert status == 200
    served = np.array([[p["probabilities"][c] for c in test.classes] for p in answer["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert [p["class"] for p in answer["predictions"]] == [test.classes[i] for i in expected.argmax(1)]

    files = [(f"{i}.png", png(images[i, 0])) for i in range(5)]
    status, answer = post_files(f"{served_bento['url']}/predict", files)
    assert status == 200
    assert [p["class"] for p in answer["predictions"]] == [test.classes[i] for i in expected[:5].argmax(1)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "send, status, message",
    [
        (lambda url: post_json(url, {"images": []}), 400, "empty batch"),
        (lambda url: post_json(url, {"images": [np.zeros((9, 9)).tolist()]}), 400, "expected each image 8x8"),
        (lambda url: post_json(url, {"images": [[["a"] * 8] * 8]}), 400, "must hold numbers"),
        (lambda url: post(url, b'{"images": [[[NaN]]]}', "application/json"), 400, "NaN"),
        (lambda url: post_json(url, {"images": np.zeros((300, 8, 8)).tolist()}), 413, "larger than the limit"),
        (lambda url: post_files(url, [("notes.txt", b"hello")]), 400, "not a PNG or JPEG image"),
        (lambda url: post_json(url, {}), 400, "send either 'images'"),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_answering(served_bento, send, status, message):
    got, body = send(f"{served_bento['url']}/predict")
    assert got == status
    assert message in json.dumps(body)
    ok, _ = post_json(f"{served_bento['url']}/predict", {"images": [np.zeros((8, 8)).tolist()]})
    assert ok == 200


@pytest.mark.slow
def test_model_info_health_and_metrics(served_bento):
    status, info = post_json(f"{served_bento['url']}/model_info", {})
    assert status == 200
    assert info["classes"] == [str(i) for i in range(10)] and info["evaluation"] == {"accuracy": 0.97}
    assert info["model_tag"] == served_bento["descriptor"]["model_tag"]
    with urllib.request.urlopen(f"{served_bento['url']}/livez") as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{served_bento['url']}/metrics") as response:
        assert b"bentoml_service_request" in response.read()


@pytest.mark.slow
def test_concurrent_requests_all_succeed(served_bento):
    from concurrent.futures import ThreadPoolExecutor

    image = {"images": [np.zeros((8, 8)).tolist()]}
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: post_json(f"{served_bento['url']}/predict", image)[0], range(200)))
    assert statuses == [200] * 200

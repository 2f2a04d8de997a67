"""The BentoML service: request validation, and real `bentoml serve` of bentos build_bento made.

Served answers are compared with the model's own PyTorch forward pass on the same preprocessed
tensor: for the digits (small_cnn), for photos of any size with resnet18 and mobilenet_v3_small
(train -> evaluate -> build_bento -> serve), and for a model_factory network served without the
factory's code.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.common.dataset import index_dataset
from components.common.images import load_preprocessed, preprocess, to_array
from components.common.model import load_model
from components.evaluate.evaluation import evaluate
from components.train.trainer import TrainConfig, train_model
from serving.validation import InvalidImages, arrays_to_batch, files_to_batch
from tests.support.bento_server import bento_environment, build, post, post_files, post_json, serve
from tests.support.photos import photo, write_photo_dataset

SHAPE = (1, 8, 8)
# The demo's 0007.png as JSON (0..255), and the same digit on scikit-learn's 0..16 scale.
DIGIT_7 = np.array(json.loads((Path(__file__).parents[1] / "serving/examples/digit-7.json").read_text())["images"][0])
DIGIT_7_0_16 = np.rint(DIGIT_7 / 16).astype(int)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# --- validation rules (no server) -----------------------------------------------------------------


def test_arrays_in_every_accepted_layout_and_any_size():
    images = np.arange(2 * 64).reshape(2, 8, 8) % 256
    assert arrays_to_batch(images.tolist(), SHAPE).shape == (2, 1, 8, 8)
    assert np.array_equal(arrays_to_batch(images[:, None].tolist(), SHAPE)[:, 0], images)  # 1xHxW, untouched
    rgb = np.zeros((1, 4, 4, 3))
    assert arrays_to_batch(rgb.tolist(), (3, 4, 4)).shape == (1, 3, 4, 4)
    assert arrays_to_batch(rgb.transpose(0, 3, 1, 2).tolist(), (3, 4, 4)).shape == (1, 3, 4, 4)
    # Each image its own size: resized to cover 8x8, centre cropped, like files and the test split.
    mixed = [np.full((16, 16), 10).tolist(), np.full((5, 9), 20).tolist()]
    batch = arrays_to_batch(mixed, SHAPE)
    assert batch.shape == (2, 1, 8, 8) and batch[0].max() == 10 and batch[1].min() == 20


def test_an_array_is_preprocessed_as_the_same_picture_in_a_file_would_be():
    picture = np.asarray(photo("coffee.png").resize((40, 30)))
    from_array = arrays_to_batch([picture.tolist()], (3, 16, 16))[0]
    from_file = files_to_batch([("coffee.png", png(picture))], (3, 16, 16))[0]
    assert np.array_equal(from_array, from_file)
    assert np.array_equal(from_array, preprocess(to_array(Image.fromarray(picture), 3), (16, 16)).transpose(2, 0, 1))


@pytest.mark.parametrize(
    "images, message",
    [
        ([], r"empty batch"),
        ([np.zeros((2, 2, 2, 2)).tolist()], r"images\[0\] has shape \(2, 2, 2, 2\)"),
        ([[["x"] * 8] * 8], r"images\[0\] must hold numbers, got dtype <U1"),
        ([[[float("nan")] * 8] * 8], r"NaN or infinite"),
        ([np.zeros((8, 8)).tolist(), [[300] * 8] * 8], r"images\[1\]: pixel values must be within 0..255"),
        ([[[1, 2], [3]]], r"ragged"),
        ("not a list", r"images must be a list of arrays"),
    ],
)
def test_bad_arrays_are_named(images, message):
    with pytest.raises(InvalidImages, match=message):
        arrays_to_batch(images, SHAPE)


def test_files_of_any_size_and_bad_files():
    assert files_to_batch([("a.png", png(np.full((8, 8), 7)))], SHAPE)[0, 0, 0, 0] == 7
    assert files_to_batch([("big.png", png(np.full((33, 17), 9)))], SHAPE).shape == (1, 1, 8, 8)
    with pytest.raises(InvalidImages, match=r"file 'notes.txt' is not a PNG or JPEG image"):
        files_to_batch([("notes.txt", b"hello")], SHAPE)
    with pytest.raises(InvalidImages, match=r"larger than the limit of 256"):
        files_to_batch([("a.png", b"")] * 257, SHAPE)


# --- real bentos served by `bentoml serve` ---------------------------------------------------------


def torch_probabilities(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    """The model's own PyTorch forward pass on an already preprocessed uint8 batch."""
    model, spec = load_model(model_dir)
    mean = torch.tensor(spec.normalization["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec.normalization["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model((torch.from_numpy(batch).float() / 255.0 - mean) / std)
    return torch.softmax(logits.double(), dim=1).numpy()


def served_probabilities(answer: dict, classes: list[str]) -> np.ndarray:
    return np.array([[p["probabilities"][c] for c in classes] for p in answer["predictions"]])


@pytest.fixture(scope="module")
def digits_bento(digits_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-digits")
    train_model(digits_dir, root / "model", TrainConfig(epochs=3, augment=False))
    env = bento_environment(root)
    descriptor = build(root / "model", root / "bento", env)
    with serve(descriptor["bento_tag"], env, root) as url:
        yield {"url": url, "model_dir": root / "model", "descriptor": descriptor}


@pytest.mark.slow
def test_served_digits_equal_direct_pytorch(digits_bento, digits_dir):
    index = index_dataset(digits_dir)
    test = index.samples("test")[:40]
    batch = np.stack([load_preprocessed(index.root / s.path, 1, (8, 8)) for s in test])
    expected = torch_probabilities(digits_bento["model_dir"], batch)

    status, answer = post_json(f"{digits_bento['url']}/predict", {"images": batch[:, 0].tolist()})
    assert status == 200
    np.testing.assert_allclose(served_probabilities(answer, list(index.classes)), expected, atol=1e-5)
    assert [p["class"] for p in answer["predictions"]] == [index.classes[i] for i in expected.argmax(1)]

    files = [(s.path, (index.root / s.path).read_bytes()) for s in test[:5]]
    status, answer = post_files(f"{digits_bento['url']}/predict", files)
    assert status == 200
    np.testing.assert_allclose(served_probabilities(answer, list(index.classes)), expected[:5], atol=1e-5)


@pytest.mark.slow
def test_the_bento_needs_neither_torch_nor_torchvision(digits_bento):
    lines = Path(digits_bento["descriptor"]["requirements"]).read_text().lower().splitlines()
    packages = {line.split("==")[0] for line in lines if "==" in line}
    assert {"onnxruntime", "pillow", "numpy"} <= packages
    assert not {"torch", "torchvision", "triton"} & packages
    # BentoML's own nvidia-ml-py (GPU monitoring, pure Python) stays; no CUDA runtime wheels come along.
    assert [p for p in packages if p.startswith("nvidia-")] == ["nvidia-ml-py"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "send, status, message",
    [
        (lambda url: post_json(url, {"images": []}), 400, "empty batch"),
        (lambda url: post_json(url, {"images": [np.zeros((2, 2, 2, 2)).tolist()]}), 400, "has shape (2, 2, 2, 2)"),
        (lambda url: post_json(url, {"images": [[["a"] * 8] * 8]}), 400, "must hold numbers"),
        (lambda url: post(url, b'{"images": [[[NaN]]]}', "application/json"), 400, "NaN"),
        (lambda url: post_json(url, {"images": np.zeros((300, 8, 8)).tolist()}), 413, "larger than the limit"),
        (lambda url: post_files(url, [("notes.txt", b"hello")]), 415, "file 'notes.txt' is not a PNG or JPEG image"),
        (lambda url: post_json(url, {}), 400, "send either 'images'"),
        (
            lambda url: post_json(url, {"images": [DIGIT_7.tolist(), DIGIT_7_0_16.tolist()]}),
            400,
            "images[1] has pixel values 0..16, which looks like the 0..16 scale; this model was trained on 0..255",
        ),
        (lambda url: post_json(url, {"images": [(DIGIT_7 / 255).tolist()]}), 400, "looks like the 0..1 scale"),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_answering(digits_bento, send, status, message):
    got, body = send(f"{digits_bento['url']}/predict")
    assert got == status
    assert set(body) == {"error", "message", "request_id"}  # the one error shape (see serving/service.py)
    assert message in body["message"]
    ok, _ = post_json(f"{digits_bento['url']}/predict", {"images": [np.zeros((8, 8)).tolist()]})
    assert ok == 200


@pytest.mark.slow
def test_model_info_health_and_metrics(digits_bento):
    import urllib.request

    status, info = post_json(f"{digits_bento['url']}/model_info", {})
    assert status == 200
    assert info["classes"] == [str(i) for i in range(10)] and info["evaluation"] == {"accuracy": 0.97}
    assert info["model_tag"] == digits_bento["descriptor"]["model_tag"]
    assert info["preprocessing"]["image_size"] == [8, 8]
    assert info["input_range"]["typical_max"] == 239 and info["input_range"]["scale"] == [0, 255]
    with urllib.request.urlopen(f"{digits_bento['url']}/livez") as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{digits_bento['url']}/metrics") as response:
        assert b"bentoml_service_request" in response.read()


@pytest.mark.slow
def test_concurrent_requests_all_succeed(digits_bento):
    from concurrent.futures import ThreadPoolExecutor

    image = {"images": [np.zeros((8, 8)).tolist()]}
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: post_json(f"{digits_bento['url']}/predict", image)[0], range(200)))
    assert statuses == [200] * 200


# --- BentoML's own clients, through every parameter of every API -----------------------------------


def client_calls(digits_dir: Path, workdir: Path) -> dict:
    """Each way to call the service's APIs with BentoML's clients: (api, args, kwargs), and the file uploads."""
    index = index_dataset(digits_dir)
    samples = index.samples("test")[:3]
    paths = []
    for sample in samples:  # the client uploads files by path, with their names
        target = workdir / Path(sample.path).name
        target.write_bytes((index.root / sample.path).read_bytes())
        paths.append(target)
    arrays = np.stack([load_preprocessed(index.root / s.path, 1, (8, 8))[0] for s in samples]).tolist()
    return {
        "images": ("predict", (), {"images": arrays}),
        "images, positional": ("predict", (arrays,), {}),
        "files": ("predict", (), {"files": paths}),
        "files, as strings": ("predict", (), {"files": [str(p) for p in paths]}),
        "files with images=None": ("predict", (), {"images": None, "files": paths}),
        "model_info": ("model_info", (), {}),
    }, arrays


REFUSED_CALLS = {
    "images and files": ({"images": [[[0]]], "files": "<png>"}, 400, "invalid_input", "not both"),
    "neither": ({}, 400, "empty_body", "the body is empty"),
    "a URL in files": ({"files": ["http://127.0.0.1:9/digit.png"]}, 400, "not_a_file", "text field"),
    "an empty list": ({"images": []}, 400, "empty_batch", "empty batch"),
    "another scale": ({"images": [DIGIT_7_0_16.tolist()]}, 400, "unexpected_scale", "0..16 scale"),
}


def refusal(error: Exception) -> tuple[int, dict]:
    return int(error.error_code), json.loads(error.message)


def same_answer(got, expected) -> bool:
    """The same answer; probabilities to 1e-6 (a batch shared with other requests may round differently)."""
    if "predictions" not in expected:
        return got == expected
    classes = [p["class"] for p in expected["predictions"]]
    probabilities = [list(p["probabilities"].values()) for p in expected["predictions"]]
    return (
        got["model_tag"] == expected["model_tag"]
        and [p["class"] for p in got["predictions"]] == classes
        and np.allclose([list(p["probabilities"].values()) for p in got["predictions"]], probabilities, atol=1e-6)
    )


@pytest.mark.slow
def test_bentomls_sync_and_async_clients_call_every_parameter_of_every_api(digits_bento, digits_dir, tmp_path):
    import asyncio

    import bentoml

    url = digits_bento["url"]
    calls, arrays = client_calls(digits_dir, tmp_path)
    status, by_json = post_json(f"{url}/predict", {"images": arrays})
    assert status == 200
    expected = {"predict": by_json, "model_info": post_json(f"{url}/model_info", {})[1]}
    png_path = calls["files"][2]["files"][0]

    def concrete(kwargs: dict) -> dict:
        return {k: [png_path] if v == "<png>" else v for k, v in kwargs.items()}

    with bentoml.SyncHTTPClient(url) as client:
        for name, (api, args, kwargs) in calls.items():
            assert same_answer(getattr(client, api)(*args, **kwargs), expected[api]), f"SyncHTTPClient: {name}"
        for name, (kwargs, status, code, message) in REFUSED_CALLS.items():
            with pytest.raises(bentoml.exceptions.BentoMLException) as refused:
                client.predict(**concrete(kwargs))
            got, body = refusal(refused.value)
            assert (got, body["error"]) == (status, code) and message in body["message"], f"SyncHTTPClient: {name}"
            assert set(body) == {"error", "message", "request_id"}

    async def with_the_async_client() -> None:
        async with bentoml.AsyncHTTPClient(url) as client:
            for name, (api, args, kwargs) in calls.items():
                answer = await getattr(client, api)(*args, **kwargs)
                assert same_answer(answer, expected[api]), f"AsyncHTTPClient: {name}"
            for name, (kwargs, status, code, message) in REFUSED_CALLS.items():
                with pytest.raises(bentoml.exceptions.BentoMLException) as refused:
                    await client.predict(**concrete(kwargs))
                got, body = refusal(refused.value)
                assert (got, body["error"]) == (status, code) and message in body["message"], f"AsyncHTTPClient: {name}"

    asyncio.run(with_the_async_client())


# --- photos of any size: train -> evaluate -> build_bento -> serve ---------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "dishes", per_class=12)


def uploads() -> list[tuple[str, bytes]]:
    """Pictures of several sizes and modes, none of them the model's input size."""
    cat, rocket = photo("chelsea.png"), photo("rocket.jpg")
    return [
        ("cat-large.jpg", jpeg(cat)),  # 451x300 JPEG
        ("rocket-tall.png", png(np.asarray(rocket.crop((100, 0, 160, 300))))),  # 60x300 PNG
        ("cat-gray.png", png(np.asarray(cat.convert("L").resize((13, 11))))),  # tiny grayscale
        ("rocket-rgba.png", _rgba(rocket.resize((77, 50)))),
    ]


def _rgba(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v3_small"])
def test_photos_train_evaluate_package_and_serve(photos, tmp_path, architecture):
    config = TrainConfig(architecture=architecture, epochs=1, batch_size=8, image_size=32, workers=1)
    train_model(photos, tmp_path / "model", config)
    evaluation = evaluate(tmp_path / "model", photos)  # checks the ONNX export on every test image
    assert evaluation.onnx_max_difference <= 1e-4 and evaluation.samples > 0
    env = bento_environment(tmp_path)
    descriptor = build(tmp_path / "model", tmp_path / "bento", env)
    _, spec = load_model(tmp_path / "model")
    files = uploads()
    batch = np.stack([load_preprocessed(content, 3, (32, 32)) for _, content in files])
    expected = torch_probabilities(tmp_path / "model", batch)
    arrays = [np.asarray(photo("coffee.png").resize(size)).tolist() for size in ((20, 45), (64, 64))]
    array_batch = np.stack([preprocess(np.asarray(a, dtype=np.uint8), (32, 32)).transpose(2, 0, 1) for a in arrays])
    with serve(descriptor["bento_tag"], env, tmp_path) as url:
        status, answer = post_files(f"{url}/predict", files)
        assert status == 200, answer
        np.testing.assert_allclose(served_probabilities(answer, spec.classes), expected, atol=1e-5)
        status, answer = post_json(f"{url}/predict", {"images": arrays})
        assert status == 200, answer
        expected_arrays = torch_probabilities(tmp_path / "model", array_batch)
        np.testing.assert_allclose(served_probabilities(answer, spec.classes), expected_arrays, atol=1e-5)


FACTORY = textwrap.dedent(
    """
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.body(x).flatten(1))
    """
)


@pytest.mark.slow
def test_a_factory_model_is_served_without_the_factorys_code(photos, tmp_path, monkeypatch):
    package = tmp_path / "code" / "team_nets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    try:
        config = TrainConfig(model_factory="team_nets:Tiny", epochs=1, batch_size=8, image_size=16)
        train_model(photos, tmp_path / "model", config)
    finally:
        sys.modules.pop("team_nets", None)
    env = bento_environment(tmp_path)  # no PYTHONPATH: team_nets cannot be imported by the server
    descriptor = build(tmp_path / "model", tmp_path / "bento", env)
    files = uploads()[:2]
    batch = np.stack([load_preprocessed(content, 3, (16, 16)) for _, content in files])
    expected = torch_probabilities(tmp_path / "model", batch)  # through the exported program
    with serve(descriptor["bento_tag"], env, tmp_path) as url:
        status, answer = post_files(f"{url}/predict", files)
    assert status == 200, answer
    np.testing.assert_allclose(served_probabilities(answer, ["cat", "coffee", "rocket"]), expected, atol=1e-5)

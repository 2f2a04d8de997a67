"""The serving pieces without a server: upload checks, the strict multipart parser, the micro-batcher."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading

import numpy as np
import pytest
from PIL import Image

from serving import validation
from serving.batching import MicroBatcher, Overloaded
from serving.forms import multipart_to_batch
from serving.validation import InvalidImages, check_upload, header_size, sniff


def encoded(format_: str, size=(30, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format=format_)
    return buffer.getvalue()


@pytest.mark.parametrize("format_", ["PNG", "JPEG"])
def test_header_size_reads_png_and_jpeg_without_decoding(format_):
    content = encoded(format_)
    assert sniff(content) == format_ and header_size(content, format_) == (30, 20)


@pytest.mark.parametrize("format_", ["GIF", "TIFF", "BMP", "WEBP"])
def test_other_formats_are_refused_with_415_naming_the_file(format_):
    with pytest.raises(InvalidImages, match=rf"file 'pic' is a {format_} image; only PNG and JPEG") as caught:
        check_upload("pic", encoded(format_))
    assert caught.value.status == 415


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(InvalidImages, match=r"file 'big.png' is 30x20 \(600 pixels\); the limit is 599") as caught:
        check_upload("big.png", encoded("PNG"), max_pixels=599)
    assert caught.value.status == 413
    check_upload("big.png", encoded("PNG"), max_pixels=600)


def test_multipart_keeps_the_clients_file_names_and_refuses_other_fields():
    png = encoded("PNG", (8, 8))
    body = b"--b\r\nContent-Disposition: form-data; name=files; filename=a.png\r\n\r\n" + png + b"\r\n--b--\r\n"
    assert multipart_to_batch(body, "multipart/form-data; boundary=b", (1, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(InvalidImages, match=r"file 'a.png' in field 'file' is not accepted"):
        multipart_to_batch(body.replace(b"name=files", b"name=file"), "multipart/form-data; boundary=b", (1, 8, 8))
    with pytest.raises(InvalidImages, match=r"without a boundary"):
        multipart_to_batch(body, "multipart/form-data", (1, 8, 8))
    with pytest.raises(InvalidImages, match=r"closing boundary is missing"):
        multipart_to_batch(body[:-8], "multipart/form-data; boundary=b", (1, 8, 8))


def test_the_batcher_splits_big_requests_into_model_sized_chunks_in_order():
    sizes = []

    def run(batch):
        sizes.append(len(batch))
        return batch[:, :1].astype(np.float32)

    async def main():
        batcher = MicroBatcher(run, max_batch=64, max_queue_seconds=10)
        images = np.arange(150, dtype=np.uint8).reshape(150, 1)
        results = await asyncio.gather(batcher.submit(images), batcher.submit(images[:5]))
        return results

    big, small = asyncio.run(main())
    assert big[:, 0].tolist() == list(range(150)) and small[:, 0].tolist() == list(range(5))
    assert max(sizes) <= 64 and sum(sizes) == 155


def test_the_batcher_sheds_with_a_retry_after_only_when_the_queue_exceeds_its_budget():
    release = threading.Event()

    def run(batch):
        release.wait(timeout=60)
        return batch.astype(np.float32)

    async def main():
        batcher = MicroBatcher(run, max_batch=4, max_queue_seconds=10)
        batcher.seconds_per_image = 1.0  # 10 queued images fill the budget
        first = asyncio.ensure_future(batcher.submit(np.zeros((4, 1))))
        await asyncio.sleep(0)
        queued = [asyncio.ensure_future(batcher.submit(np.zeros((3, 1)))) for _ in range(2)]
        await asyncio.sleep(0)
        refused = asyncio.ensure_future(batcher.submit(np.zeros((8, 1))))
        await asyncio.sleep(0)
        refused_at_once = refused.done()  # refused without waiting for the model
        release.set()
        served = [len(r) for r in await asyncio.gather(first, *queued)]
        return served, refused_at_once, await asyncio.gather(refused, return_exceptions=True)

    served, refused_at_once, (refusal,) = asyncio.run(main())
    assert served == [4, 3, 3]
    assert refused_at_once and isinstance(refusal, Overloaded) and refusal.retry_after >= 1


@pytest.mark.parametrize("input_shape", [[1, 8, 8], [3, 8, 8], [3, 3, 3], [1, 3, 3], [3, 1, 1]])
@pytest.mark.parametrize("layout", ["hw", "hwc", "chw", "hw1", "hw3"])
@pytest.mark.parametrize("dtype", ["int", "float"])
def test_a_whole_batch_at_once_gives_the_pixels_and_errors_of_one_image_at_a_time(input_shape, layout, dtype):
    """The fast path for batches already of the model's size must not change a single pixel or message."""
    rng = np.random.default_rng(sum(input_shape) + len(layout))
    channels, height, width = input_shape
    shape = {"hw": (height, width), "hwc": (height, width, channels), "chw": (channels, height, width)}
    shape |= {"hw1": (height, width, 1), "hw3": (height, width, 3)}
    images = rng.integers(0, 256, (5, *shape[layout])).astype(float if dtype == "float" else int)
    if dtype == "float":
        images = (images + rng.uniform(-0.49, 0.49, images.shape)).clip(0, 255)

    def one_by_one():
        return np.stack([validation._array_to_input(i, image, input_shape) for i, image in enumerate(images.tolist())])

    try:
        expected = one_by_one()
    except validation.InvalidImages as error:
        with pytest.raises(validation.InvalidImages, match=re.escape(str(error))):
            validation.arrays_to_batch(images.tolist(), input_shape)
        return
    got = validation.arrays_to_batch(images.tolist(), input_shape)
    assert got.dtype == np.uint8 and np.array_equal(got, expected)


def test_the_fast_path_leaves_bad_images_to_be_named_one_by_one():
    images = np.zeros((3, 8, 8)).tolist()
    images[2][0][0] = 300
    with pytest.raises(validation.InvalidImages, match=r"images\[2\]: pixel values must be within 0..255"):
        validation.arrays_to_batch(images, [1, 8, 8])


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_the_model_leaves_one_of_the_pods_cpus_to_the_http_path(cpus, threads):
    from serving.service import model_threads

    assert model_threads(cpus) == threads


# --- the input scale check (spec.json's input_range) -------------------------------------------------

DIGITS_RANGE = {"scale": [0, 255], "min": 0, "max": 255, "typical_max": 239, "typical_max_percentile": 1}
DIGIT_7 = np.array(
    [
        [0, 0, 112, 128, 207, 255, 239, 16],
        [0, 0, 112, 112, 64, 175, 191, 0],
        [0, 0, 0, 0, 128, 207, 16, 0],
        [0, 64, 128, 128, 239, 239, 96, 0],
        [0, 32, 175, 239, 239, 64, 0, 0],
        [0, 0, 0, 255, 80, 0, 0, 0],
        [0, 0, 143, 239, 16, 0, 0, 0],
        [0, 0, 207, 80, 0, 0, 0, 0],
    ]
)  # serving/examples/digit-7.json: the demo's PNG, 0..255


def scale_check():
    check = validation.ScaleCheck.from_input_range(DIGITS_RANGE)
    assert check is not None and check.ceiling == 239 / 8
    return check


def test_no_scale_check_without_a_measured_range():
    assert validation.ScaleCheck.from_input_range({}) is None  # a format 2 spec, or a custom script's model
    assert validation.ScaleCheck.from_input_range(None) is None
    assert validation.ScaleCheck.from_input_range(DIGITS_RANGE | {"typical_max": 0}) is None  # no floor to go by


@pytest.mark.parametrize(
    "images",
    [
        [DIGIT_7.tolist()],  # the model's own scale
        [DIGIT_7.astype(float).tolist(), (DIGIT_7 / 2).tolist()],  # a dim but real digit, floats
        [np.zeros((8, 8)).tolist()],  # blank: no evidence of any scale
        [np.zeros((8, 8), dtype=int).tolist(), DIGIT_7.tolist()],
        [np.full((8, 8), 30).tolist()],  # just above the ceiling (239 / 8 = 29.9)
        [np.zeros((12, 12)).tolist(), DIGIT_7.tolist()],  # one by one (sizes differ)
    ],
)
def test_the_scale_check_accepts_images_on_the_models_scale_and_blank_ones(images):
    batch = validation.arrays_to_batch(images, [1, 8, 8], scale=scale_check())
    assert np.array_equal(batch, validation.arrays_to_batch(images, [1, 8, 8]))


@pytest.mark.parametrize("resized", [False, True], ids=["whole batch", "one by one"])
@pytest.mark.parametrize(
    "position, image, seen, scale",
    [
        (0, np.rint(DIGIT_7 / 16), "0..16", "0..16"),  # scikit-learn's load_digits rows
        (1, DIGIT_7 / 255, "0..1", "0..1"),
        (2, np.full((8, 8), 29), "29..29", "0..29"),
    ],
)
def test_the_scale_check_refuses_other_scales_naming_the_image_and_both_ranges(position, image, seen, scale, resized):
    images = [DIGIT_7.tolist()] * 3 + [np.zeros((8, 8)).tolist()]
    images[position] = image.tolist()
    if resized:
        images[3] = np.zeros((10, 10)).tolist()  # a batch of mixed sizes goes image by image
    with pytest.raises(validation.InvalidImages) as caught:
        validation.arrays_to_batch(images, [1, 8, 8], scale=scale_check())
    message = caught.value.message
    assert message.startswith(f"images[{position}] has pixel values {seen}, which looks like the {scale} scale; ")
    assert "this model was trained on 0..255" in message and "KFP_TORCH_LIFECYCLE_INPUT_SCALE_CHECK=off" in message
    assert (caught.value.status, caught.value.code) == (400, "unexpected_scale")


def test_the_scale_check_counts_the_other_off_scale_images():
    images = [DIGIT_7.tolist(), (DIGIT_7 / 255).tolist(), np.rint(DIGIT_7 / 16).tolist(), (DIGIT_7 / 16).tolist()]
    with pytest.raises(validation.InvalidImages, match=r"^images\[1\] has pixel values 0..1, .*\(2 more images of"):
        validation.arrays_to_batch(images, [1, 8, 8], scale=scale_check())


@pytest.mark.parametrize(
    "image, message",
    [
        ((DIGIT_7 / 127.5 - 1), r"images\[0\]: pixel values must be within 0..255, got -1.0..1.0"),  # normalised
        (DIGIT_7 * 16, r"images\[0\]: pixel values must be within 0..255, got 0..4080"),
    ],
)
def test_values_outside_the_scale_are_refused_with_or_without_the_check(image, message):
    for scale in (scale_check(), None):
        with pytest.raises(validation.InvalidImages, match=message):
            validation.arrays_to_batch([image.tolist()], [1, 8, 8], scale=scale)


def test_json_bodies_are_checked_and_the_check_can_be_left_out():
    body = json.dumps({"images": [np.rint(DIGIT_7 / 16).tolist()]}).encode()
    with pytest.raises(validation.InvalidImages, match=r"looks like the 0..16 scale"):
        validation.json_to_batch(body, [1, 8, 8], scale=scale_check())
    assert validation.json_to_batch(body, [1, 8, 8]).max() == 16  # what the service does with the check off


@pytest.mark.parametrize(("setting", "on"), [(None, True), ("on", True), ("off", False), ("OFF", False), ("0", False)])
def test_the_scale_check_is_on_unless_switched_off(monkeypatch, setting, on):
    from serving.service import input_scale_check

    if setting is None:
        monkeypatch.delenv("KFP_TORCH_LIFECYCLE_INPUT_SCALE_CHECK", raising=False)
    else:
        monkeypatch.setenv("KFP_TORCH_LIFECYCLE_INPUT_SCALE_CHECK", setting)
    assert (input_scale_check(DIGITS_RANGE) is not None) is on
    assert input_scale_check({}) is None  # a model trained before the range was recorded


# --- what an empty or malformed body is told -----------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b" \r\n"])
def test_an_empty_json_body_is_named_with_what_to_send(body):
    with pytest.raises(InvalidImages) as caught:
        validation.json_to_batch(body, [1, 8, 8])
    assert (caught.value.status, caught.value.code) == (400, "empty_body")
    message = caught.value.message
    assert message.startswith('the body is empty: send JSON {"images": [...]}') and "not valid JSON" not in message
    assert "multipart/form-data fields named 'files'" in message


def test_a_body_that_is_not_json_still_gets_jsons_own_reason():
    with pytest.raises(InvalidImages, match=r"^the body is not valid JSON: Expecting value: line 1 column 1") as caught:
        validation.json_to_batch(b"images=1", [1, 8, 8])
    assert caught.value.code == "malformed_json"

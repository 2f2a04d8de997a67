"""Decoding PNG and JPEG in every mode, and the evaluation/serving preprocessing (resize to cover, centre crop)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from components.common.images import (
    ImageError,
    decode,
    load_preprocessed,
    normalize,
    preprocess,
    read_header,
    to_array,
)
from tests.support.photos import encode, photo


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 once scaled
    content = encoded(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(content)).mode == "I;16"
    assert decode(content, 1)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert decode(content, 3)[0].tolist() == [[0] * 3, [1] * 3, [128] * 3, [255] * 3]


def test_modes_decode_to_the_requested_channels(tmp_path):
    source = photo("coffee.png").crop((0, 0, 40, 30))
    rgb = np.asarray(source)
    for fmt, mode in [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"), ("PNG", "I;16"), ("JPEG", "CMYK")]:
        path = encode(source, fmt, mode, tmp_path / f"{mode.replace(';', '')}")
        for channels in (1, 3):
            array = decode(path, channels)
            assert array.shape == (30, 40, channels) and array.dtype == np.uint8, (mode, channels)
    # RGBA: alpha dropped, colour kept exactly (as torchvision's ImageFolder loader does).
    assert np.array_equal(decode(tmp_path / "RGBA.png", 3), rgb)
    # Grayscale replicated for a 3-channel network.
    gray = decode(tmp_path / "L.png", 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert read_header(tmp_path / "I16.png").grayscale and not read_header(tmp_path / "RGB.png").grayscale


def test_palette_with_transparency_decodes_like_its_rgba_form():
    paletted = photo("chelsea.png").crop((0, 0, 20, 20)).quantize(colors=16)
    content = encoded(paletted, "PNG", transparency=0)
    expected = np.asarray(paletted.convert("RGBA").convert("RGB"))
    assert np.array_equal(decode(content, 3), expected)


@pytest.mark.parametrize("size", [(31, 17), (17, 31), (64, 64), (5, 200)])
def test_preprocess_equals_torchvision_resize_and_center_crop(size):
    """Resize so the image covers the target, crop the centre: what torchvision's Resize + CenterCrop do
    (through the same Pillow resampling) when the shorter side is resized to a square target's size."""
    source = photo("astronaut.png").resize(size[::-1])
    target = (24, 24)
    ours = preprocess(to_array(source, 3), target)
    theirs = np.asarray(v2.CenterCrop(24)(v2.Resize(24)(source)))
    assert ours.shape == (24, 24, 3)
    assert np.array_equal(ours, theirs)


def test_preprocess_leaves_an_image_of_the_target_size_untouched():
    array = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    assert np.array_equal(preprocess(array, (8, 8)), array)


def test_non_square_targets_cover_and_crop():
    array = np.zeros((100, 100, 3), dtype=np.uint8)
    assert preprocess(array, (20, 40)).shape == (20, 40, 3)


def test_large_jpeg_is_drafted_but_still_covers_the_target():
    big = photo("astronaut.png").resize((2048, 2048))
    content = encoded(big, "JPEG", quality=90)
    array = load_preprocessed(content, 3, (64, 64))
    assert array.shape == (3, 64, 64) and array.flags.writeable and array.flags.c_contiguous
    reference = load_preprocessed(encoded(photo("astronaut.png").resize((64, 64)), "PNG"), 3, (64, 64))
    assert np.abs(array.astype(int) - reference.astype(int)).mean() < 6  # same picture


@pytest.mark.parametrize(
    "content, message",
    [
        (b"plain text", r"not a readable PNG or JPEG image"),
        (encoded(Image.new("RGB", (8, 8)), "GIF"), r"is a GIF image; only PNG and JPEG are read"),
        (encoded(Image.new("RGB", (64, 64), "red"), "JPEG")[:200], r"not a readable PNG or JPEG image"),
        (encoded(Image.new("RGB", (64, 64), "red"), "PNG")[:60], r"not a readable PNG or JPEG image"),
    ],
)
def test_unreadable_images_name_the_file(content, message):
    with pytest.raises(ImageError, match=r"^upload\.png .*" + message):
        decode(content, 3, name="upload.png")
    with pytest.raises(ImageError, match="upload.png"):
        load_preprocessed(content, 3, (8, 8), name="upload.png")


def test_normalize_matches_torch():
    batch = np.random.default_rng(1).integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    expected = (torch.from_numpy(batch).float() / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    np.testing.assert_allclose(normalize(batch, mean, std), expected.numpy(), atol=1e-6)

"""Turn request payloads into a uint8 image batch, or say exactly what was expected.

Plain NumPy and Pillow, no BentoML, so every rule is unit-tested directly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_BATCH = 256


class InvalidImages(ValueError):
    """The request's images cannot be fed to the model; the message says what was expected."""


def expected(input_shape: Sequence[int]) -> str:
    c, h, w = input_shape
    shapes = f"{h}x{w}" + (f" or {c}x{h}x{w}" if c == 1 else f" or {c}x{h}x{w} or {h}x{w}x{c}")
    return f"each image {shapes}, pixel values 0..255"


def check_batch_size(n: int, max_batch: int = MAX_BATCH) -> None:
    if n == 0:
        raise InvalidImages("empty batch: send at least one image")
    if n > max_batch:
        raise InvalidImages(f"batch of {n} images is larger than the limit of {max_batch}; split it")


def arrays_to_batch(images: object, input_shape: Sequence[int], max_batch: int = MAX_BATCH) -> np.ndarray:
    """Nested lists (one per image) to an N x C x H x W uint8 batch."""
    if not isinstance(images, list):
        raise InvalidImages(f"images must be a list of arrays ({expected(input_shape)}), got {type(images).__name__}")
    check_batch_size(len(images), max_batch)
    try:
        array = np.asarray(images)
    except ValueError:
        raise InvalidImages(f"images have ragged shapes; expected {expected(input_shape)}") from None
    if array.dtype == object:
        raise InvalidImages(f"images have ragged shapes or mixed types; expected {expected(input_shape)}")
    if array.dtype.kind not in "iuf":
        raise InvalidImages(f"images must hold numbers, got dtype {array.dtype} ({expected(input_shape)})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidImages("images contain NaN or infinite values; pixel values must be finite, 0..255")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidImages(f"pixel values must be within 0..255, got {array.min()}..{array.max()}")
    return _to_nchw(array, input_shape, lambda shape: f"images have shape {shape}; expected {expected(input_shape)}")


def files_to_batch(
    files: Sequence[tuple[str, bytes]], input_shape: Sequence[int], max_batch: int = MAX_BATCH
) -> np.ndarray:
    """(name, bytes) of PNG/JPEG uploads to an N x C x H x W uint8 batch."""
    check_batch_size(len(files), max_batch)
    channels = input_shape[0]
    decoded = []
    for name, content in files:
        try:
            with Image.open(io.BytesIO(content)) as image:
                if image.format not in ("PNG", "JPEG"):
                    raise InvalidImages(f"file {name!r} is {image.format}, not a PNG or JPEG image")
                array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError):
            raise InvalidImages(f"file {name!r} is not a PNG or JPEG image") from None
        batch = _to_nchw(
            array[None],
            input_shape,
            lambda shape, name=name: f"file {name!r} is {shape[1]}x{shape[2]}; expected {expected(input_shape)}",
        )
        decoded.append(batch[0])
    return np.stack(decoded)


def _to_nchw(array: np.ndarray, input_shape: Sequence[int], complaint) -> np.ndarray:
    c, h, w = input_shape
    shape = array.shape[1:]
    if shape == (h, w) and c == 1:
        array = array[:, None]
    elif shape == (h, w, c) and c != 1:
        array = array.transpose(0, 3, 1, 2)
    elif shape != (c, h, w):
        raise InvalidImages(complaint(tuple(array.shape)))
    return np.ascontiguousarray(np.rint(array).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8))

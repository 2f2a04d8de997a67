"""Turn request payloads into the model's uint8 input batch, or say exactly what was expected.

Plain NumPy and Pillow, no BentoML and no torch, so every rule is unit-tested
directly. Images of any size are accepted: each goes through the model's own
preprocessing (``components.common.images.preprocess``: resize to cover the
model's input size, crop the centre), exactly as evaluate fed the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from components.common.images import ImageError, load_preprocessed, preprocess, to_array

MAX_BATCH = 256
MAX_PIXELS_PER_ARRAY = 4096 * 4096


class InvalidImages(ValueError):
    """The request's images cannot be fed to the model; the message says what was expected."""


def expected(input_shape: Sequence[int]) -> str:
    c = input_shape[0]
    layouts = "HxW" + (" or 1xHxW or HxWx1" if c == 1 else ", 3xHxW or HxWx3 (HxW is taken as grayscale)")
    return f"each image {layouts}, any size, pixel values 0..255"


def check_batch_size(n: int, max_batch: int = MAX_BATCH) -> None:
    if n == 0:
        raise InvalidImages("empty batch: send at least one image")
    if n > max_batch:
        raise InvalidImages(f"batch of {n} images is larger than the limit of {max_batch}; split it")


def arrays_to_batch(images: object, input_shape: Sequence[int], max_batch: int = MAX_BATCH) -> np.ndarray:
    """A list of nested-list images (each of its own size) to the model's N x C x H x W uint8 batch."""
    if not isinstance(images, list):
        raise InvalidImages(f"images must be a list of arrays ({expected(input_shape)}), got {type(images).__name__}")
    check_batch_size(len(images), max_batch)
    return np.stack([_array_to_input(i, image, input_shape) for i, image in enumerate(images)])


def _array_to_input(position: int, image: object, input_shape: Sequence[int]) -> np.ndarray:
    where = f"images[{position}]"
    try:
        array = np.asarray(image)
    except ValueError:
        raise InvalidImages(f"{where} has ragged rows; expected {expected(input_shape)}") from None
    if array.dtype == object:
        raise InvalidImages(f"{where} has ragged rows or mixed types; expected {expected(input_shape)}")
    if array.dtype.kind not in "iuf":
        raise InvalidImages(f"{where} must hold numbers, got dtype {array.dtype} ({expected(input_shape)})")
    if array.ndim == 3 and array.shape[2] in (1, 3):
        hwc = array
    elif array.ndim == 3 and array.shape[0] in (1, 3):
        hwc = array.transpose(1, 2, 0)
    elif array.ndim == 2:
        hwc = array[:, :, None]
    else:
        raise InvalidImages(f"{where} has shape {array.shape}; expected {expected(input_shape)}")
    if hwc.shape[0] < 1 or hwc.shape[1] < 1 or hwc.shape[0] * hwc.shape[1] > MAX_PIXELS_PER_ARRAY:
        raise InvalidImages(f"{where} is {hwc.shape[0]}x{hwc.shape[1]}; between 1x1 and {MAX_PIXELS_PER_ARRAY} pixels")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidImages(f"{where} contains NaN or infinite values; pixel values must be finite, 0..255")
    if array.min() < 0 or array.max() > 255:
        raise InvalidImages(f"{where}: pixel values must be within 0..255, got {array.min()}..{array.max()}")
    pixels = np.rint(hwc).astype(np.uint8) if hwc.dtype.kind == "f" else hwc.astype(np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    channels, size = int(input_shape[0]), (int(input_shape[1]), int(input_shape[2]))
    return preprocess(to_array(image, channels), size).transpose(2, 0, 1)


def files_to_batch(
    files: Sequence[tuple[str, bytes]], input_shape: Sequence[int], max_batch: int = MAX_BATCH
) -> np.ndarray:
    """(name, bytes) of PNG/JPEG uploads of any size to the model's N x C x H x W uint8 batch."""
    check_batch_size(len(files), max_batch)
    channels, size = int(input_shape[0]), (int(input_shape[1]), int(input_shape[2]))
    decoded = []
    for name, content in files:
        try:
            decoded.append(load_preprocessed(content, channels, size, name=f"file {name!r}"))
        except ImageError as error:
            raise InvalidImages(str(error)) from None
    return np.stack(decoded)

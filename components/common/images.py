"""Decode PNG and JPEG images of any size and mode; the evaluation and serving preprocessing.

Pillow and NumPy only, no torch: the serving bento carries this module, so a
served image goes through exactly the code that evaluate and the training
step's validation use.

- ``to_array`` turns any PNG/JPEG mode (1, L, LA, P, RGB, RGBA, CMYK, 16-bit
  I;16 and I) into uint8 H x W x C with C = 1 or 3. 16-bit samples are scaled
  (v / 257), not clipped as Pillow's own ``convert`` does; alpha is dropped as
  torchvision's ``ImageFolder`` loader drops it; grayscale is replicated to
  three channels when the network takes three.
- ``preprocess`` is what the network sees at evaluation and serving time:
  resize (bilinear, antialiased) so the image covers ``image_size``, then crop
  the centre. An image that already has that size is left untouched.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = ("PNG", "JPEG")
EXTENSIONS = (".png", ".jpg", ".jpeg")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class ImageError(ValueError):
    """A file that is not a readable PNG or JPEG image; the message names it."""


@dataclass(frozen=True)
class Header:
    format: str
    mode: str
    width: int
    height: int

    @property
    def grayscale(self) -> bool:
        return self.mode in GRAYSCALE_MODES


def _open(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name} is not a readable PNG or JPEG image: {error}") from None
    if image.format not in FORMATS:
        image.close()
        raise ImageError(f"{name} is a {image.format} image; only PNG and JPEG are read")
    return image


def read_header(path: str | os.PathLike) -> Header:
    """Format, mode and size from the file's header, without decoding the pixels."""
    with _open(path, str(path)) as image:
        return Header(image.format, image.mode, image.width, image.height)


def to_array(image: Image.Image, channels: int) -> np.ndarray:
    """Any PNG/JPEG mode as a uint8 H x W x ``channels`` array (``channels`` is 1 or 3)."""
    if image.mode in SIXTEEN_BIT_MODES:
        gray = np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    elif image.mode == "F":
        gray = np.asarray(image, dtype=np.float64).round().clip(0, 255).astype(np.uint8)
    elif image.mode in GRAYSCALE_MODES:
        gray = np.asarray(image.convert("L"))
    else:
        if image.mode == "P":  # a palette with transparency converts cleanly only through RGBA
            image = image.convert("RGBA")
        rgb = image.convert("RGB")
        if channels == 3:
            return np.asarray(rgb)
        gray = np.asarray(rgb.convert("L"))
    if channels == 1:
        return gray[:, :, None]
    return np.repeat(gray[:, :, None], 3, axis=2)


def decode(
    source: str | os.PathLike | bytes,
    channels: int,
    name: str | None = None,
    draft_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a PNG/JPEG file (a path or its bytes) to uint8 H x W x ``channels``.

    With ``draft_to`` (h, w), a JPEG much larger is decoded at the largest DCT reduction that still
    covers it (Pillow's ``draft``). A truncated or corrupt file raises ``ImageError`` naming
    ``name`` (default: the path).
    """
    name = name or str(source if not isinstance(source, bytes) else "image")
    with _open(source, name) as image:
        try:
            if draft_to is not None and image.format == "JPEG":
                cover_h, cover_w = cover_size(image.height, image.width, draft_to)
                image.draft(image.mode, (cover_w, cover_h))  # the mode as it is: scaling only
            image.load()
            return np.require(to_array(image, channels), requirements=["W"])  # torch takes it as it is
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise ImageError(f"{name} is not a readable PNG or JPEG image: {error}") from None


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(h, w) after scaling so the image covers ``target`` (h, w) with its aspect ratio kept.

    For a square target this is torchvision's ``Resize(side)``: the shorter side becomes ``side``,
    the longer one ``int(side * long / short)``.
    """
    scale = max(target[0] / height, target[1] / width)
    return max(target[0], int(height * scale)), max(target[1], int(width * scale))


def center_crop(array: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """The central ``target`` (h, w) of an H x W x C array (offsets rounded as torchvision's CenterCrop)."""
    top = int(round((array.shape[0] - target[0]) / 2.0))
    left = int(round((array.shape[1] - target[1]) / 2.0))
    return array[top : top + target[0], left : left + target[1]]


def resize_to_cover(array: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 H x W x C so it covers ``target``; unchanged when it fits exactly."""
    height, width = array.shape[:2]
    if (height, width) == tuple(target):
        return array
    new_h, new_w = cover_size(height, width, target)
    if (new_h, new_w) == (height, width):
        return array
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR))
    return resized[:, :, None] if resized.ndim == 2 else resized


def preprocess(array: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Evaluation and serving preprocessing of uint8 H x W x C: resize to cover, centre crop."""
    return np.ascontiguousarray(center_crop(resize_to_cover(array, image_size), image_size))


def load_preprocessed(
    source: str | os.PathLike | bytes, channels: int, image_size: tuple[int, int], name: str | None = None
) -> np.ndarray:
    """Decode and preprocess one file: uint8 C x H x W, what the network is fed after normalisation.

    JPEGs much larger than ``image_size`` are decoded at a reduced DCT scale that still covers
    the target; that is part of the preprocessing, shared by training's validation, evaluate and
    serving alike.
    """
    array = decode(source, channels, name, draft_to=image_size)
    # Contiguous and writable: torch.from_numpy takes it as it is.
    return np.require(preprocess(array, image_size).transpose(2, 0, 1), requirements=["C", "W"])


def normalize(batch: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 N x C x H x W to float32 ``(x / 255 - mean) / std``, as training normalised it."""
    mean_ = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_ = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (batch.astype(np.float32) / np.float32(255.0) - mean_) / std_


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(EXTENSIONS)

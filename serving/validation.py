"""Turn request payloads into the model's uint8 input batch, or say exactly what was expected.

Plain NumPy and Pillow, no BentoML and no torch, so every rule is unit-tested
directly. Images of any size are accepted: each goes through the model's own
preprocessing (``components.common.images.preprocess``: resize to cover the
model's input size, crop the centre), exactly as evaluate fed the test split.

Hostile input is refused before it costs anything: an upload's format comes from
its first bytes (PNG and JPEG only) and its pixel count from its header, checked
against ``MAX_IMAGE_PIXELS`` before a single pixel is decoded. Every refusal is an
``InvalidImages`` carrying the HTTP status, a short error code and a message that
names the client's own file name.

JSON arrays are also checked against the scale the model was trained on (``ScaleCheck``,
from ``spec.json``'s ``input_range``): an image whose largest value is far below what
the training images reached (0..1 or scikit-learn's 0..16 digits, for a model trained
on 0..255 PNGs) is refused instead of being silently misread. PNG and JPEG uploads
are 0..255 by construction and are not checked.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from PIL import Image

from components.common.images import ImageError, load_preprocessed, preprocess, to_array

MAX_BATCH = 256
MAX_PIXELS_PER_ARRAY = 4096 * 4096
# Pixels an upload's header may claim (about 8000 x 5000). Pillow's own bomb check starts at 89M
# (an error at 179M); this refuses earlier, with a message, before anything is decoded.
MAX_IMAGE_PIXELS = 40_000_000

SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
ACCEPTED = ("PNG", "JPEG")
# A JSON image whose largest value is above 0 and at most the training images' typical maximum divided by
# this looks like another scale (typical maximum 239 for the digits: 0..29 is refused, 0..1 and 0..16 with it).
SCALE_RATIO = 8
SCALE_CHECK_ENV = "KFP_TORCH_LIFECYCLE_INPUT_SCALE_CHECK"
# JPEG start-of-frame markers (the ones that carry the image size): C0..CF except DHT, JPG and DAC.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
WHAT_TO_SEND = (
    'send JSON {"images": [...]} (each image an array of pixel values 0..255) with Content-Type '
    "application/json, or PNG/JPEG files as multipart/form-data fields named 'files'"
)


class InvalidImages(ValueError):
    """The request cannot be fed to the model: ``status`` (4xx), ``code`` and a message saying what was expected."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_input"):
        super().__init__(message, status, code)
        self.message, self.status, self.code = message, status, code

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ScaleCheck:
    """Refuse JSON images that look like another scale than the model's training images.

    ``typical_max`` is spec.json's ``input_range.typical_max``: at most ``typical_max_percentile`` %
    of the training images have a largest pixel below it. An image is refused when its largest value
    is above 0 and at most ``typical_max / SCALE_RATIO``; values outside ``scale`` (0..255) are refused
    by the arrays' own rules. A blank image (all 0) says nothing about its scale and is accepted, and so
    is any image that reaches more than that ceiling, whatever its darkest pixel.
    """

    typical_max: float
    percentile: float = 1
    scale: tuple[float, float] = (0, 255)

    @classmethod
    def from_input_range(cls, input_range: dict | None) -> ScaleCheck | None:
        """The check for a spec's ``input_range``; None when it was not measured (older models, custom
        scripts) or its training images gave no floor (typical maximum 0)."""
        if not input_range or not input_range.get("typical_max"):
            return None
        low, high = input_range.get("scale", (0, 255))
        return cls(float(input_range["typical_max"]), float(input_range.get("typical_max_percentile", 1)), (low, high))

    @property
    def ceiling(self) -> float:
        """The largest image maximum that is refused."""
        return self.typical_max / SCALE_RATIO

    def check(self, images: np.ndarray, highs: np.ndarray) -> None:
        """Refuse a batch (N images, ``highs`` their largest values) if any image looks like another scale,
        naming the first one."""
        if highs.min() > self.ceiling:  # the usual batch, in one comparison
            return
        suspicious = (highs > 0) & (highs <= self.ceiling)
        if suspicious.any():
            first, others = int(np.argmax(suspicious)), int(suspicious.sum()) - 1
            raise self.refusal(f"images[{first}]", images[first].min(), highs[first], others)

    def refusal(self, where: str, low: float, high: float, others: int = 0) -> InvalidImages:
        """The refusal of the image ``where`` (values ``low..high``), and of ``others`` more like it."""
        guess = 1 if high <= 1 else math.ceil(high)
        low_scale, high_scale = (f"{v:g}" for v in self.scale)
        also = f" ({others} more image{'s' if others > 1 else ''} of this request too)" if others else ""
        return InvalidImages(
            f"{where} has pixel values {low:g}..{high:g}, which looks like the 0..{guess} scale{also}; this model was "
            f"trained on {low_scale}..{high_scale} (at least {100 - self.percentile:g} % of its training images "
            f"reach {self.typical_max:g}): send pixel values on the {low_scale}..{high_scale} scale. If the image "
            f"really is this dark, the service's {SCALE_CHECK_ENV}=off switches this check off",
            code="unexpected_scale",
        )


def expected(input_shape: Sequence[int]) -> str:
    c = input_shape[0]
    layouts = "HxW" + (" or 1xHxW or HxWx1" if c == 1 else ", 3xHxW or HxWx3 (HxW is taken as grayscale)")
    return f"each image {layouts}, any size, pixel values 0..255"


def check_batch_size(n: int, max_batch: int = MAX_BATCH) -> None:
    if n == 0:
        raise InvalidImages("empty batch: send at least one image", code="empty_batch")
    if n > max_batch:
        raise InvalidImages(
            f"batch of {n} images is larger than the limit of {max_batch}; split it", 413, "batch_too_large"
        )


def arrays_to_batch(
    images: object, input_shape: Sequence[int], max_batch: int = MAX_BATCH, scale: ScaleCheck | None = None
) -> np.ndarray:
    """A list of nested-list images (each of its own size) to the model's N x C x H x W uint8 batch;
    ``scale``, when given, refuses images that look like another scale than the training images'."""
    if not isinstance(images, list):
        raise InvalidImages(f"images must be a list of arrays ({expected(input_shape)}), got {type(images).__name__}")
    check_batch_size(len(images), max_batch)
    uniform = _uniform_batch(images, input_shape, scale)
    if uniform is not None:
        return uniform
    return np.stack([_array_to_input(i, image, input_shape, scale) for i, image in enumerate(images)])


def _uniform_batch(images: list, input_shape: Sequence[int], scale: ScaleCheck | None = None) -> np.ndarray | None:
    """The whole batch in one conversion when every image is valid and already of the model's size and
    channels (what a client that preprocesses sends); the same pixels ``_array_to_input`` gives one by one.
    None otherwise: the images then go one by one, and a bad one is named."""
    try:
        array = np.asarray(images)
    except ValueError:
        return None
    channels, height, width = (int(x) for x in input_shape)
    if not images or array.dtype.kind not in "iuf":
        return None
    # The order _array_to_input reads an image in: H x W x C first, then C x H x W, then H x W.
    if array.ndim == 4 and array.shape[1:] == (height, width, channels) and channels in (1, 3):
        chw = array.transpose(0, 3, 1, 2)
    elif array.ndim == 4 and array.shape[1:] == (channels, height, width) and array.shape[3] not in (1, 3):
        chw = array
    elif array.ndim == 3 and channels == 1 and array.shape[1:] == (height, width):
        chw = array[:, None]
    else:
        return None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return None
    highs = array.reshape(len(array), -1).max(axis=1)  # each image's largest value, for the scale check too
    if array.min() < 0 or highs.max() > 255:
        return None
    if scale is not None:
        scale.check(array, highs)
    pixels = np.rint(chw).astype(np.uint8) if chw.dtype.kind == "f" else chw.astype(np.uint8)
    return np.ascontiguousarray(pixels)


def _array_to_input(
    position: int, image: object, input_shape: Sequence[int], scale: ScaleCheck | None = None
) -> np.ndarray:
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
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise InvalidImages(f"{where}: pixel values must be within 0..255, got {low}..{high}")
    if scale is not None and 0 < high <= scale.ceiling:
        raise scale.refusal(where, low, high)
    pixels = np.rint(hwc).astype(np.uint8) if hwc.dtype.kind == "f" else hwc.astype(np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    channels, size = int(input_shape[0]), (int(input_shape[1]), int(input_shape[2]))
    return preprocess(to_array(image, channels), size).transpose(2, 0, 1)


def parse_json(text: bytes | str, what: str = "the body"):
    """The JSON value of ``text``, or ``InvalidImages`` (``malformed_json``) naming ``what`` and json's reason."""
    try:
        return orjson.loads(text)  # several times json's speed
    except ValueError:
        pass  # what orjson refuses (NaN, huge integers) or json's own message, which names line and column
    except RecursionError as error:
        raise InvalidImages(f"{what} is not valid JSON: {error}", code="malformed_json") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidImages(f"{what} is not valid JSON: {error}", code="malformed_json") from None


def json_to_batch(
    body: bytes, input_shape: Sequence[int], max_batch: int = MAX_BATCH, scale: ScaleCheck | None = None
) -> np.ndarray:
    """A JSON request body ``{"images": [...]}`` to the model's batch (run in a worker process: parsing
    megabytes of JSON holds the GIL); ``scale`` as for ``arrays_to_batch``."""
    if not body.strip():
        raise InvalidImages(f"the body is empty: {WHAT_TO_SEND}", code="empty_body")
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise InvalidImages(f'the JSON body must be an object {{"images": [...]}}, got {type(payload).__name__}')
    unknown = sorted(set(payload) - {"images"})
    if "files" in payload:
        raise InvalidImages("'files' are PNG/JPEG uploads: send them as multipart/form-data, not JSON")
    if unknown:
        raise InvalidImages(f'unknown field(s) {", ".join(map(repr, unknown))}; send {{"images": [...]}}')
    if "images" not in payload:
        raise InvalidImages(
            "send either 'images' (a JSON list of arrays) or 'files' (PNG/JPEG uploads), not both or neither"
        )
    return arrays_to_batch(payload["images"], input_shape, max_batch, scale)


# --- uploads ---------------------------------------------------------------------------------------


def describe(name: str) -> str:
    """A client's file name as messages quote it (long names shortened)."""
    return repr(name if len(name) <= 120 else name[:100] + "...")


def sniff(content: bytes) -> str | None:
    """The format an upload's first bytes announce, or None."""
    for signature, format_ in SIGNATURES:
        if content.startswith(signature):
            return format_
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "WEBP"
    return None


def header_size(content: bytes, format_: str) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame, without decoding; None if unreadable."""
    if format_ == "PNG":
        if len(content) >= 24 and content[12:16] == b"IHDR":
            return struct.unpack(">II", content[16:24])
        return None
    position = 2  # JPEG: walk the marker segments up to the first start-of-frame
    while position + 4 <= len(content):
        if content[position] != 0xFF:
            return None
        marker = content[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", content[position + 2 : position + 4])
        if marker in SOF_MARKERS:
            if position + 9 > len(content):
                return None
            height, width = struct.unpack(">HH", content[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def check_upload(name: str, content: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse an upload from its first bytes: not PNG/JPEG (415), or a header claiming too many pixels (413)."""
    format_ = sniff(content)
    if format_ is None:
        raise InvalidImages(
            f"file {describe(name)} is not a PNG or JPEG image; only PNG and JPEG are accepted",
            415,
            "unsupported_format",
        )
    if format_ not in ACCEPTED:
        raise InvalidImages(
            f"file {describe(name)} is a {format_} image; only PNG and JPEG are accepted", 415, "unsupported_format"
        )
    size = header_size(content, format_)
    if size is None:
        raise InvalidImages(f"file {describe(name)} is not a readable {format_} image: its header is damaged")
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImages(f"file {describe(name)} claims a size of {width}x{height} pixels")
    if width * height > max_pixels:
        raise InvalidImages(
            f"file {describe(name)} is {width}x{height} ({width * height:,} pixels); "
            f"the limit is {max_pixels:,} pixels",
            413,
            "image_too_large",
        )


def files_to_batch(
    files: Sequence[tuple[str, bytes]],
    input_shape: Sequence[int],
    max_batch: int = MAX_BATCH,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """(name, bytes) of PNG/JPEG uploads of any size to the model's N x C x H x W uint8 batch."""
    check_batch_size(len(files), max_batch)
    for name, content in files:  # every header before any decoding
        check_upload(name, content, max_pixels)
    channels, size = int(input_shape[0]), (int(input_shape[1]), int(input_shape[2]))
    decoded = []
    for name, content in files:
        try:
            decoded.append(load_preprocessed(content, channels, size, name=f"file {describe(name)}"))
        except ImageError as error:
            raise InvalidImages(str(error)) from None
        except MemoryError:
            raise
        except Exception as error:  # Pillow raises SyntaxError, struct.error, IndexError... for damaged files
            raise InvalidImages(f"file {describe(name)} is not a readable PNG or JPEG image: {error}") from None
    return np.stack(decoded)


_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(offered: str | None) -> str | None:
    """A client's X-Request-ID when it is a plain token (kept in logs as is), else None."""
    return offered if offered and _TOKEN.match(offered) else None
